package main

// How berth as slirp4netns or pasta gets its device in a namespace it does not live in.
// The caller (rootlesskit, Podman) owns the namespace and often a user namespace around
// it; berth stays outside, in the host's namespaces, where its sockets must be. Entering
// a user namespace takes a single-threaded process (setns(2)), which a Go program never
// is, so a helper does it: nsenter(1) (util-linux, which rootlesskit itself runs)
// enters the user and network namespaces and executes berth's hidden nsDeviceArg
// command, which opens or creates the device, configures it when asked, and passes the
// descriptor back over a socket pair (SCM_RIGHTS), as the rootless berth run's child
// does. The device stays bound to the namespace it was opened in.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// nsDeviceArg is the hidden subcommand of the helper inside the namespace.
const nsDeviceArg = "__berth-nsdevice"

// nsDevice says which device to open in which namespace.
type nsDevice struct {
	netns  string // the network namespace's file
	userns string // its user namespace's file; "" finds the owner of netns
	name   string // the interface name (the kernel's pattern when it holds %d)
	tap    bool   // a TAP device (Ethernet frames) rather than TUN (IP packets)
	// configure, when set, is how to set the device up (addresses, routes, MTU,
	// lo); nil leaves that to the caller, as slirp4netns without --configure.
	configure *nsSetup
	mac       string // the TAP device's MAC address ("" the kernel's), with configure
}

// openNSDevice opens d in its namespace and returns the descriptor (IFF_VNET_HDR set)
// and whether the device is a TAP device: a device of that name that exists keeps its
// kind, so rootlesskit's tap0 opens as TAP even when d asks for TUN.
func openNSDevice(d nsDevice) (*os.File, bool, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, false, fmt.Errorf("socketpair: %w", err)
	}
	sock := fds[0]
	defer unix.Close(sock)
	childSock := os.NewFile(uintptr(fds[1]), "berth-nsdevice-sock")
	defer childSock.Close()
	args := []string{nsDeviceArg, "-name", d.name}
	if d.tap {
		args = append(args, "-tap")
	}
	if d.configure != nil {
		args = append(append(args, "-configure"), d.configure.args()...)
		if d.mac != "" {
			args = append(args, "-mac", d.mac)
		}
	}
	cmd, done, err := nsEnterCmd(d.netns, d.userns, childSock, args...)
	if err != nil {
		return nil, false, err
	}
	defer done()
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &errb, &errb
	if err := cmd.Start(); err != nil {
		return nil, false, fmt.Errorf("nsenter: %w", err)
	}
	childSock.Close()
	f, kind, rerr := recvDevice(sock)
	werr := cmd.Wait()
	if rerr == nil && f == nil {
		rerr = fmt.Errorf("no device")
	}
	if rerr != nil {
		if f != nil {
			f.Close()
		}
		why := strings.TrimSpace(errb.String())
		if werr != nil && why == "" {
			why = werr.Error()
		}
		return nil, false, fmt.Errorf("opening %s in %s: %v: %s", d.name, d.netns, rerr, why)
	}
	return f, kind == "tap", nil
}

// nsEnterCmd is nsenter(1) running berth's hidden helper args in the network namespace
// netns, and in its user namespace too (userns, or "" for the one owning netns) unless
// berth is root: only the user namespace that owns the network namespace gives an
// ordinary user CAP_NET_ADMIN over it (user_namespaces(7)). sock is the helper's fd 3.
// done closes the namespace files once the command has started.
func nsEnterCmd(netns, userns string, sock *os.File, args ...string) (cmd *exec.Cmd, done func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	netnsF, err := os.Open(netns)
	if err != nil {
		return nil, nil, fmt.Errorf("network namespace: %w", err)
	}
	extra := []*os.File{sock, netnsF} // fds 3 and 4 in nsenter and the helper
	done = func() {
		for _, f := range extra[1:] {
			f.Close()
		}
	}
	nsArgs := []string{"--net=/proc/self/fd/4"}
	if os.Geteuid() != 0 {
		var usernsF *os.File
		if userns != "" {
			if usernsF, err = os.Open(userns); err != nil {
				done()
				return nil, nil, fmt.Errorf("user namespace: %w", err)
			}
		} else {
			// NS_GET_USERNS (ioctl_ns(2)): the user namespace owning netns.
			fd, err := unix.IoctlRetInt(int(netnsF.Fd()), unix.NS_GET_USERNS)
			if err != nil {
				done()
				return nil, nil, fmt.Errorf("the owner of network namespace %s: %w", netns, err)
			}
			usernsF = os.NewFile(uintptr(fd), "userns")
		}
		extra = append(extra, usernsF)
		nsArgs = append([]string{"--user=/proc/self/fd/5", "--preserve-credentials"}, nsArgs...)
	}
	cmd = exec.Command(nsenterPath(), append(append(nsArgs, "--", self), args...)...)
	cmd.ExtraFiles = extra
	return cmd, done, nil
}

// recvDevice receives the helper's descriptor and its kind ("tun" or "tap"); nil, "",
// nil when the helper closed its end without one.
func recvDevice(sock int) (*os.File, string, error) {
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		if n == 0 && oobn == 0 {
			return nil, "", nil
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return nil, "", fmt.Errorf("bad control message (%v)", err)
		}
		rights, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(rights) != 1 {
			for _, fd := range rights {
				unix.Close(fd)
			}
			return nil, "", fmt.Errorf("want one descriptor (%v)", err)
		}
		kind := string(buf[:n])
		if kind != "tun" && kind != "tap" {
			unix.Close(rights[0])
			return nil, "", fmt.Errorf("unexpected message %q", kind)
		}
		return os.NewFile(uintptr(rights[0]), "/dev/net/tun"), kind, nil
	}
}

// nsenterPath finds nsenter(1), also where an ordinary user's PATH lacks sbin.
func nsenterPath() string {
	if p, err := exec.LookPath("nsenter"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/nsenter", "/bin/nsenter", "/usr/sbin/nsenter"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return "nsenter"
}

// nsDeviceChild is the helper inside the namespace: fd 3 is the socket back.
func nsDeviceChild(args []string) int {
	fs := flag.NewFlagSet(nsDeviceArg, flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "tap0", "")
	tap := fs.Bool("tap", false, "")
	configure := fs.Bool("configure", false, "")
	mac := fs.String("mac", "", "")
	var s nsSetup
	fs.IntVar(&s.mtu, "mtu", 1500, "")
	fs.BoolVar(&s.noIPv6, "no-ipv6", false, "")
	fs.Func("addr4", "", func(v string) (err error) { s.addr4, err = netip.ParsePrefix(v); return })
	fs.Func("addr6", "", func(v string) (err error) { s.addr6, err = netip.ParsePrefix(v); return })
	fs.Func("gw4", "", func(v string) (err error) { s.gw4, err = netip.ParseAddr(v); return })
	fs.Func("gw6", "", func(v string) (err error) { s.gw6, err = netip.ParseAddr(v); return })
	fs.Func("dns", "", func(string) error { return nil }) // nsSetup.args passes them
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	fd, kind, err := openDevice(*name, *tap)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return exitFailure
	}
	if *configure {
		if err := s.configureDevice(*name, kind == "tap", *mac); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return exitFailure
		}
	}
	if err := unix.Sendmsg(3, []byte(kind), unix.UnixRights(fd), nil, unix.MSG_NOSIGNAL); err != nil {
		fmt.Fprintf(stderr, "passing the device on: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// openDevice opens (or creates) the TUN or TAP device name with IFF_VNET_HDR. A device
// that exists as the other kind is opened as what it is: TUNSETIFF refuses the wrong
// kind with EINVAL.
func openDevice(name string, tap bool) (int, string, error) {
	try := func(tap bool) (int, error) {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
		flags := uint16(unix.IFF_TUN)
		if tap {
			flags = unix.IFF_TAP
		}
		ifr.SetUint16(flags | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("TUNSETIFF %q: %w", name, err)
		}
		return fd, nil
	}
	kind := map[bool]string{false: "tun", true: "tap"}
	fd, err := try(tap)
	if errors.Is(err, unix.EINVAL) {
		if fd2, err2 := try(!tap); err2 == nil {
			return fd2, kind[!tap], nil
		}
	}
	if err != nil {
		return -1, "", err
	}
	return fd, kind[tap], nil
}

// configureDevice sets up the device name as slirp4netns --configure and pasta
// --config-net do: lo up, the MTU, the addresses, up, the default routes.
func (s *nsSetup) configureDevice(name string, tap bool, mac string) error {
	cmds := [][]string{{"link", "set", "lo", "up"}}
	if tap && mac != "" {
		cmds = append(cmds, []string{"link", "set", name, "address", mac})
	}
	cmds = append(cmds,
		[]string{"link", "set", name, "mtu", strconv.Itoa(s.mtu)},
		[]string{"addr", "add", s.addr4.String(), "dev", name},
		[]string{"link", "set", name, "up"},
		[]string{"route", "add", "default", "via", s.gw4.String(), "dev", name})
	if !s.noIPv6 {
		cmds = append(cmds,
			[]string{"-6", "addr", "add", s.addr6.String(), "dev", name, "nodad"},
			[]string{"-6", "route", "add", "default", "via", s.gw6.String(), "dev", name})
	}
	ip := ipPath()
	for _, c := range cmds {
		cmd := exec.Command(ip, c...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, strings.TrimSpace(errb.String()))
		}
	}
	return nil
}

// nsGone returns a channel closed once the namespace the helper serves is gone: the
// process pid has exited (pid > 0), or the file path no longer is the namespace it was
// (removed, or unmounted as ip netns delete does), checked every interval as pasta
// does for a directory it cannot watch. Closing stop ends the watch.
func nsGone(pid int, path string, interval time.Duration, stop <-chan struct{}) <-chan struct{} {
	gone := make(chan struct{})
	var st0 unix.Stat_t
	statErr := unix.Stat(path, &st0)
	pidfd := -1
	if pid > 0 {
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			pidfd = fd
		}
	}
	go func() {
		defer close(gone)
		if pidfd >= 0 {
			defer unix.Close(pidfd)
		}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if pidfd >= 0 {
				// A pidfd polls readable once the process has exited (pidfd_open(2)).
				pfd := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
				if n, _ := unix.Poll(pfd, 0); n > 0 {
					return
				}
			} else if pid > 0 && unix.Kill(pid, 0) == unix.ESRCH {
				return
			}
			if statErr == nil && path != "" {
				var st unix.Stat_t
				if err := unix.Stat(path, &st); err != nil || st.Dev != st0.Dev || st.Ino != st0.Ino {
					return
				}
			}
		}
	}()
	return gone
}
