package main

// The listening sockets of pasta's auto forwards, from the kernel's socket diagnostics
// (sock_diag(7)): a NETLINK_SOCK_DIAG dump of the TCP sockets in state LISTEN, or of
// the unconnected UDP ones, per address family. Reading /proc/net/tcp instead walks the
// namespace's whole established-connection hash table on every read (the kernel's
// established_get_first: about 1.4 % of a core during a bulk transfer, once a second,
// and more on a host with many connections); asked for TCP_LISTEN only, the kernel
// walks the listening hash alone. A netlink socket answers for the network namespace
// it was made in, so the namespace side's socket is made there (openSockDiagIn) and
// kept. Where a dump fails, the /proc table is read instead, never "no ports".

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/nsthread"
)

// The kernel's socket states (include/net/tcp_states.h): LISTEN for TCP, and CLOSE,
// which an unconnected UDP socket has (as /proc/net/udp's 07).
const (
	tcpStateClose  = 7
	tcpStateListen = 10
)

// Sizes of sock_diag's structures (linux/inet_diag.h): struct inet_diag_req_v2 is the
// family, protocol, extensions, padding, the states' mask and a struct inet_diag_sockid
// (48 bytes); struct inet_diag_msg is the family, state, timer, retransmits, the
// sockid and five 32-bit counters.
const (
	sizeofInetDiagSockid = 48
	sizeofInetDiagReqV2  = 8 + sizeofInetDiagSockid
	sizeofInetDiagMsg    = 4 + sizeofInetDiagSockid + 20
	diagRequestLen       = unix.NLMSG_HDRLEN + sizeofInetDiagReqV2
)

// diagTable is the dump that stands for one /proc/net table.
type diagTable struct {
	family, protocol, state uint8
}

// diagTables: /proc/net's tables (procListeners' state 0A or 07) by name.
var diagTables = map[string]diagTable{
	"tcp":  {unix.AF_INET, unix.IPPROTO_TCP, tcpStateListen},
	"tcp6": {unix.AF_INET6, unix.IPPROTO_TCP, tcpStateListen},
	"udp":  {unix.AF_INET, unix.IPPROTO_UDP, tcpStateClose},
	"udp6": {unix.AF_INET6, unix.IPPROTO_UDP, tcpStateClose},
}

// sockDiagRecvBuf holds any datagram of a dump: the kernel sizes a dump's datagrams to
// the reader's largest buffer so far, at most 32 KiB (netlink_dump).
const sockDiagRecvBuf = 32 << 10

// sockDiagTimeout bounds the wait for a reply, so that a scan (and berth's exit, which
// waits for the scan) never hangs on the kernel.
const sockDiagTimeout = 2 * time.Second

// sockDiag is a NETLINK_SOCK_DIAG socket and its buffers; one goroutine uses it.
type sockDiag struct {
	f      *os.File
	fd     int
	seq    uint32
	req    [diagRequestLen]byte
	buf    []byte
	ports  []uint16           // one dump's, merged once the dump is complete
	broken map[diagTable]bool // the kernel refused these (no tcp_diag or udp_diag)
}

// newSockDiag takes over f, a NETLINK_SOCK_DIAG socket. Its descriptor is used in
// blocking mode (os.File's Fd), so that the timeout applies.
func newSockDiag(f *os.File) (*sockDiag, error) {
	fd := int(f.Fd())
	tv := unix.NsecToTimeval(sockDiagTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		f.Close()
		return nil, fmt.Errorf("sock_diag: SO_RCVTIMEO: %w", err)
	}
	return &sockDiag{f: f, fd: fd, buf: make([]byte, sockDiagRecvBuf), broken: map[diagTable]bool{}}, nil
}

// sockDiagSocket makes a NETLINK_SOCK_DIAG socket in the calling thread's network
// namespace.
func sockDiagSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return -1, fmt.Errorf("sock_diag socket: %w", err)
	}
	return fd, nil
}

// openSockDiag opens a socket for berth's own network namespace (the host's: -T/-U
// auto).
func openSockDiag() (*sockDiag, error) {
	fd, err := sockDiagSocket()
	if err != nil {
		return nil, err
	}
	return newSockDiag(os.NewFile(uintptr(fd), "sock_diag"))
}

// openSockDiagIn opens a socket for the network namespace netns (a namespace file):
// made on a thread moved into the namespace (setns(2), which takes CAP_SYS_ADMIN over
// it: root) or else by the namespace helper, as -T's listeners are (nsListen, which
// enters the user namespace userns, or the owner of netns, as nsEnterCmd does).
func openSockDiagIn(netns, userns string) (*sockDiag, error) {
	fd, err := sockDiagSocketIn(netns)
	if err == nil {
		return newSockDiag(os.NewFile(uintptr(fd), "sock_diag"))
	}
	files, errs, herr := nsListen(netns, userns, []nsSock{{proto: nsDiagProto}})
	if herr != nil {
		return nil, fmt.Errorf("sock_diag in %s: %v; %w", netns, err, herr)
	}
	if errs[0] != nil {
		return nil, fmt.Errorf("sock_diag in %s: %w", netns, errs[0])
	}
	return newSockDiag(files[0])
}

// sockDiagSocketIn makes the socket on a thread that setns(2) moves into the namespace
// netns and back (nsthread.Run: no goroutine of berth's ever runs in the namespace).
func sockDiagSocketIn(netns string) (int, error) {
	fd := -1
	err := nsthread.Run(netns, func() (err error) {
		fd, err = sockDiagSocket()
		return err
	})
	if err != nil && fd >= 0 {
		unix.Close(fd) // made, but the thread could not go back: an error all the same
		fd = -1
	}
	return fd, err
}

// Close closes the socket.
func (d *sockDiag) Close() error { return d.f.Close() }

// listeners adds to into the ports of table t's sockets (procListeners' rule: a
// wildcard or non-loopback address, a loopback one with loopback; port 0 never), all
// of them or, on an error, none.
func (d *sockDiag) listeners(t diagTable, loopback bool, into map[uint16]bool) error {
	if d.broken[t] {
		return errors.ErrUnsupported
	}
	d.seq++
	req := d.req[:]
	clear(req)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], diagRequestLen)
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], d.seq)
	// The port id (12:16) 0 is the kernel's. Then struct inet_diag_req_v2: no
	// extensions, and an all-zero sockid (no filter on addresses).
	r := req[unix.NLMSG_HDRLEN:]
	r[0], r[1] = t.family, t.protocol
	ne.PutUint32(r[4:], 1<<t.state)
	if _, err := unix.Write(d.fd, req); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	d.ports = d.ports[:0]
	for {
		n, _, flags, _, err := unix.Recvmsg(d.fd, d.buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		if flags&unix.MSG_TRUNC != 0 {
			return errors.New("sock_diag reply: truncated")
		}
		var done bool
		d.ports, done, err = parseDiagReply(d.buf[:n], d.seq, t.state, loopback, d.ports)
		switch err {
		case unix.ENOENT, unix.EOPNOTSUPP, unix.EPROTONOSUPPORT, unix.EAFNOSUPPORT, unix.EINVAL:
			// The kernel has no such dump (tcp_diag or udp_diag missing): not asked
			// again, for it would try to load the module each time.
			d.broken[t] = true
		}
		if err != nil {
			return err
		}
		if done {
			break
		}
	}
	for _, p := range d.ports {
		into[p] = true
	}
	return nil
}

// parseDiagReply reads one datagram of a sock_diag dump: it appends to ports those of
// the sockets of request seq in state whose address counts (procListeners' rule), and
// reports whether the dump is done (NLMSG_DONE). An NLMSG_ERROR is the errno it
// carries; a message cut short is an error; messages of other requests (a reply to a
// request that timed out) are skipped.
func parseDiagReply(b []byte, seq uint32, state uint8, loopback bool, ports []uint16) ([]uint16, bool, error) {
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(ne.Uint32(b[0:]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return ports, false, fmt.Errorf("sock_diag reply: message of %d bytes in %d", l, len(b))
		}
		typ, mseq := ne.Uint16(b[4:]), ne.Uint32(b[8:])
		p := b[unix.NLMSG_HDRLEN:l]
		b = b[min((l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
		if mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_DONE:
			return ports, true, nil
		case unix.NLMSG_ERROR:
			if len(p) < 4 {
				return ports, false, errors.New("sock_diag reply: short error message")
			}
			if e := int32(ne.Uint32(p)); e != 0 {
				return ports, false, unix.Errno(-e)
			}
			continue // an acknowledgement
		case unix.SOCK_DIAG_BY_FAMILY:
		default:
			continue
		}
		if len(p) < sizeofInetDiagMsg {
			return ports, false, fmt.Errorf("sock_diag reply: inet_diag_msg of %d bytes", len(p))
		}
		if p[1] != state {
			continue
		}
		// struct inet_diag_sockid: the source port and address in network order.
		port := binary.BigEndian.Uint16(p[4:])
		var a netip.Addr
		switch p[0] {
		case unix.AF_INET:
			a = netip.AddrFrom4([4]byte(p[8:12]))
		case unix.AF_INET6:
			a = netip.AddrFrom16([16]byte(p[8:24]))
		default:
			continue
		}
		if port == 0 || (!loopback && a.Unmap().IsLoopback()) {
			continue
		}
		ports = append(ports, port)
	}
	return ports, false, nil
}

// nsDiagProto is the helper's (nsListenChild's) socket kind for a sock_diag socket.
const nsDiagProto = "diag"
