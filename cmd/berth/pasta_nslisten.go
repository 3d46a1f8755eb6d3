package main

// The namespace's side of pasta's -T and -U: listening sockets on the namespace's
// loopback. berth itself stays in the host's namespaces (its connections to the host's
// loopback must start there), so a helper run by nsenter(1) in the namespace, as for
// the device (nsEnterCmd), opens and binds the sockets and passes them back over a
// socket pair (SCM_RIGHTS). A socket stays in the namespace it was made in (socket(7),
// network_namespaces(7)), so berth accepts and receives on them from outside. The
// helper exits once it has passed them on: nothing of berth's is left running in the
// namespace, and closing a descriptor in berth removes the listener there. The same
// helper makes the auto forwards' sock_diag socket when berth may not setns into the
// namespace (openSockDiagIn): a netlink socket, too, answers for the namespace it was
// made in.

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// nsListenArg is the hidden subcommand of the helper that opens the sockets.
const nsListenArg = "__berth-nslisten"

// nsSock is one socket to open on the namespace's loopback, or the namespace's
// NETLINK_SOCK_DIAG socket (proto nsDiagProto: the auto forwards' scan, sockDiag).
type nsSock struct {
	proto string // "tcp", "udp" or nsDiagProto
	v6    bool   // on ::1, else on 127.0.0.1
	port  uint16
}

func (s nsSock) arg() string {
	if s.proto == nsDiagProto {
		return nsDiagProto
	}
	fam := "4"
	if s.v6 {
		fam = "6"
	}
	return s.proto + fam + ":" + strconv.Itoa(int(s.port))
}

func parseNSSock(a string) (nsSock, error) {
	kind, port, ok := strings.Cut(a, ":")
	p, err := strconv.ParseUint(port, 10, 16)
	if !ok || err != nil || p == 0 || len(kind) != 4 {
		return nsSock{}, fmt.Errorf("bad socket %q", a)
	}
	s := nsSock{proto: kind[:3], v6: kind[3] == '6', port: uint16(p)}
	if s.proto != "tcp" && s.proto != "udp" || kind[3] != '4' && kind[3] != '6' {
		return nsSock{}, fmt.Errorf("bad socket %q", a)
	}
	return s, nil
}

// errNoFamily marks a socket the namespace cannot have: no ::1 (IPv6 disabled there).
var errNoFamily = errors.New("address family not available in the namespace")

// nsListen opens socks in the network namespace netns (entering userns as
// nsEnterCmd does) and returns, for each, its descriptor or why there is none.
// err is for the helper as a whole.
func nsListen(netns, userns string, socks []nsSock) (files []*os.File, errs []error, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	sock := fds[0]
	defer unix.Close(sock)
	childSock := os.NewFile(uintptr(fds[1]), "berth-nslisten-sock")
	defer childSock.Close()
	args := []string{nsListenArg}
	for _, s := range socks {
		args = append(args, s.arg())
	}
	cmd, done, err := nsEnterCmd(netns, userns, childSock, args...)
	if err != nil {
		return nil, nil, err
	}
	defer done()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("nsenter: %w", err)
	}
	childSock.Close()
	files = make([]*os.File, len(socks))
	errs = make([]error, len(socks))
	var rerr error
	for i := range socks {
		var r nsReply
		if r, rerr = recvNSSock(sock); rerr != nil {
			break
		}
		files[i], errs[i] = r.f, r.err
	}
	werr := cmd.Wait()
	if rerr == nil && werr != nil {
		rerr = werr
	}
	if rerr != nil {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
		why := strings.TrimSpace(out.String())
		if why == "" {
			why = rerr.Error()
		}
		return nil, nil, fmt.Errorf("listening in %s: %s", netns, why)
	}
	return files, errs, nil
}

// nsReply is the helper's answer for one socket: its descriptor, or why there is none.
type nsReply struct {
	f   *os.File
	err error
}

// recvNSSock receives one of the helper's replies: "ok" with a descriptor, "nofamily",
// or "err MESSAGE".
func recvNSSock(sock int) (nsReply, error) {
	buf := make([]byte, 512)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nsReply{}, err
		}
		if n == 0 && oobn == 0 {
			return nsReply{}, errors.New("the helper ended early")
		}
		msg := string(buf[:n])
		var fd = -1
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err == nil && len(msgs) == 1 {
				if rights, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(rights) == 1 {
					fd = rights[0]
				} else {
					for _, r := range rights {
						unix.Close(r)
					}
				}
			}
		}
		switch {
		case msg == "ok" && fd >= 0:
			return nsReply{f: os.NewFile(uintptr(fd), "berth-ns-socket")}, nil
		case fd >= 0:
			unix.Close(fd)
		}
		switch {
		case msg == "nofamily":
			return nsReply{err: errNoFamily}, nil
		case strings.HasPrefix(msg, "err "):
			return nsReply{err: errors.New(msg[4:])}, nil
		}
		return nsReply{}, fmt.Errorf("unexpected message %q", msg)
	}
}

// nsListenChild is the helper inside the namespace: fd 3 is the socket back; each
// argument (nsSock.arg) gets one reply, in order.
func nsListenChild(args []string) int {
	for _, a := range args {
		var s nsSock
		var err error
		var msg string
		fd := -1
		if a == nsDiagProto {
			fd, err = sockDiagSocket()
		} else if s, err = parseNSSock(a); err == nil {
			fd, err = openNSSock(s)
		}
		switch {
		case err == nil:
			msg = "ok"
		case errors.Is(err, unix.EAFNOSUPPORT) || (s.v6 && errors.Is(err, unix.EADDRNOTAVAIL)):
			msg = "nofamily"
		default:
			msg = "err " + err.Error()
		}
		var oob []byte
		if fd >= 0 {
			oob = unix.UnixRights(fd)
		}
		err = unix.Sendmsg(3, []byte(msg), oob, nil, unix.MSG_NOSIGNAL)
		if fd >= 0 {
			unix.Close(fd)
		}
		if err != nil {
			fmt.Fprintf(stderr, "passing the socket on: %v\n", err)
			return exitFailure
		}
	}
	return exitOK
}

// openNSSock makes s's socket: bound to the loopback address of its family (IPv6 only
// for ::1, so that 127.0.0.1's socket of the same port is another), listening for TCP.
func openNSSock(s nsSock) (int, error) {
	typ := unix.SOCK_STREAM
	if s.proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(s.port), Addr: [4]byte{127, 0, 0, 1}}
	fam := unix.AF_INET
	if s.v6 {
		fam = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(s.port), Addr: [16]byte{15: 1}}
	}
	fd, err := unix.Socket(fam, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", s.arg(), err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s %s: %w", what, s.arg(), err)
	}
	if s.v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
	}
	if typ == unix.SOCK_STREAM {
		// A port the forwarder had a moment ago may hold connections in TIME-WAIT.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fail("SO_REUSEADDR", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
			return fail("listen", err)
		}
	}
	return fd, nil
}
