package main

// Rootless `berth run`, as slirp4netns, pasta and rootlesskit do it: berth re-executes
// itself as a child in a new user, network and mount namespace (the caller's uid and gid
// mapped to 0, so the child has CAP_NET_ADMIN there). The child brings up lo, creates the
// TUN device berth0, configures it as forward.Start does, bind-mounts a resolv.conf naming
// the DNS forwarder over /etc/resolv.conf, and passes the TUN descriptor to the parent
// over a unix socket (SCM_RIGHTS). The parent, still in the host's namespaces, serves the
// device with the forwarder and host sockets and says "ready"; the child then execs
// COMMAND, so the parent's child is COMMAND and its exit status is the child's.
//
// Nothing setns()es into the user namespace: a multithreaded process cannot (setns(2)).

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/link/tun"
)

// rootlessChildArg is the hidden subcommand of the re-executed child: berth never lists
// it, and main dispatches it before any command.
const rootlessChildArg = "__berth-rootless-child"

// childSockFD is the child's end of the socket pair: ExtraFiles[0].
const childSockFD = 3

// Messages on the socket pair (SOCK_SEQPACKET: one message per write).
const (
	msgTUN   = "tun"   // child -> parent, with the TUN descriptor
	msgReady = "ready" // parent -> child: the forwarder serves the device; exec COMMAND
)

// nsSetup is what the child configures in the namespace.
type nsSetup struct {
	mtu        int
	noIPv6     bool
	addr4      netip.Prefix
	gw4        netip.Addr
	addr6      netip.Prefix
	gw6        netip.Addr
	nameserver []netip.Addr
	tap, dhcp  bool // berth run --tap, --dhcp: a TAP device, not configured with --dhcp
}

func (s *nsSetup) args() []string {
	a := []string{"-mtu", strconv.Itoa(s.mtu),
		"-addr4", s.addr4.String(), "-gw4", s.gw4.String(),
		"-addr6", s.addr6.String(), "-gw6", s.gw6.String()}
	if s.noIPv6 {
		a = append(a, "-no-ipv6")
	}
	if s.tap {
		a = append(a, "-tap")
	}
	if s.dhcp {
		a = append(a, "-dhcp")
	}
	for _, d := range s.nameserver {
		a = append(a, "-dns", d.String())
	}
	return a
}

func orAddr(a, def netip.Addr) netip.Addr {
	if a.IsValid() {
		return a
	}
	return def
}

// setupFor derives the namespace's configuration from the session's, with forward's
// defaults where it leaves a field zero.
func setupFor(cfg forward.SessionConfig, dns []netip.Addr) nsSetup {
	fc := cfg.Forward
	return nsSetup{
		mtu:        cfg.MTU,
		noIPv6:     fc.NoIPv6,
		addr4:      netip.PrefixFrom(orAddr(fc.NSAddr4, forward.DefaultNSAddr4.Addr()), forward.DefaultNSAddr4.Bits()),
		gw4:        orAddr(fc.Gateway4, forward.DefaultGateway4),
		addr6:      netip.PrefixFrom(orAddr(fc.NSAddr6, forward.DefaultNSAddr6.Addr()), forward.DefaultNSAddr6.Bits()),
		gw6:        orAddr(fc.Gateway6, forward.DefaultGateway6),
		nameserver: dns,
		tap:        cfg.TAP,
		dhcp:       cfg.DHCP,
	}
}

// runRootless is berth run's user-namespace mode; sigs receives the signals to pass on
// to COMMAND.
func runRootless(cfg forward.SessionConfig, dns []netip.Addr, argv []string, controlPath string, sigs <-chan os.Signal) int {
	if cfg.MTU <= 0 {
		cfg.MTU = forward.DefaultMTU
	}
	// The same limits forward.Start checks, before the child sets the MTU.
	if cfg.MTU < 1280 && !cfg.Forward.NoIPv6 {
		return fail("run", "MTU %d is below IPv6's minimum 1280 (use --no-ipv6)", cfg.MTU)
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return fail("run", "MTU %d out of range 576-65535", cfg.MTU)
	}
	setup := setupFor(cfg, dns)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("run", "socketpair: %v", err)
	}
	sock := fds[0]
	defer func() {
		if sock >= 0 {
			unix.Close(sock)
		}
	}()
	childSock := os.NewFile(uintptr(fds[1]), "berth-rootless-sock")
	args := append([]string{rootlessChildArg}, setup.args()...)
	args = append(append(args, "--"), argv...)
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.ExtraFiles = []*os.File{childSock} // childSockFD
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		// The caller's ids become root in the namespace: enough for CAP_NET_ADMIN there,
		// and what unshare -r, slirp4netns and rootlesskit give.
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
		// An unprivileged process may map its gid only with setgroups denied
		// (user_namespaces(7)).
		GidMappingsEnableSetgroups: false,
		// If berth dies, so do the child and COMMAND: nothing is left behind.
		Pdeathsig: syscall.SIGKILL,
	}

	// Pdeathsig fires when the thread that forked the child exits, not the process:
	// start and wait from one locked thread, which lives until the child is reaped.
	started := make(chan error, 1)
	waited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			runtime.UnlockOSThread()
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
		runtime.UnlockOSThread()
	}()
	err = <-started
	childSock.Close()
	if err != nil {
		return fail("run", "%v", usernsError(err))
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s) // the child, and once it has exec'd, COMMAND
			case <-done:
				return
			}
		}
	}()
	// abort ends the child before COMMAND runs: with the socket closed, it exits.
	abort := func(format string, a ...any) int {
		unix.Close(sock)
		sock = -1
		<-waited
		return fail("run", format, a...)
	}

	f, err := recvTUN(sock)
	if err != nil {
		return abort("%v", err)
	}
	if f == nil {
		// The child failed before sending the device, and said why on stderr.
		return exitStatus(<-waited)
	}
	fromFile := tun.FromFile
	if cfg.TAP {
		fromFile = tun.TAPFromFile
	}
	dev, err := fromFile(f, tun.Options{MTU: cfg.MTU, VnetHdr: true})
	f.Close()
	if err != nil {
		return abort("%v", err)
	}
	cfg.Device = dev
	tap := sessionTap(&cfg, controlPath)
	if tap != nil {
		tap.Ethernet = cfg.TAP
	}
	sess, err := forward.Start(cfg)
	if err != nil {
		dev.Close()
		return abort("%v", err)
	}
	defer sess.Close()
	if controlPath != "none" {
		stop, err := serveSessionControl(controlPath, sess, tap)
		if err != nil {
			return abort("control socket %s: %v", controlPath, err)
		}
		defer stop()
	}
	if err := unix.Sendmsg(sock, []byte(msgReady), nil, nil, unix.MSG_NOSIGNAL); err != nil {
		return abort("telling the namespace to start COMMAND: %v", err)
	}
	unix.Close(sock)
	sock = -1
	return exitStatus(<-waited)
}

// recvTUN receives the TUN descriptor; nil, nil means the child closed its end first.
func recvTUN(sock int) (*os.File, error) {
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("receiving the TUN device: %w", err)
		}
		if n == 0 && oobn == 0 {
			return nil, nil
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return nil, fmt.Errorf("receiving the TUN device: bad control message (%v)", err)
		}
		rights, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(rights) != 1 {
			for _, fd := range rights {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("receiving the TUN device: want one descriptor (%v)", err)
		}
		if string(buf[:n]) != msgTUN {
			unix.Close(rights[0])
			return nil, fmt.Errorf("receiving the TUN device: unexpected message %q", buf[:n])
		}
		return os.NewFile(uintptr(rights[0]), "/dev/net/tun"), nil
	}
}

// usernsError explains a failure to create the user namespace.
func usernsError(err error) error {
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EUSERS) &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EACCES) {
		return err
	}
	why := ""
	for _, s := range []struct{ file, bad, name string }{
		{"/proc/sys/user/max_user_namespaces", "0", "user.max_user_namespaces"},
		{"/proc/sys/kernel/unprivileged_userns_clone", "0", "kernel.unprivileged_userns_clone"},
		{"/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1", "kernel.apparmor_restrict_unprivileged_userns"},
	} {
		if b, e := os.ReadFile(s.file); e == nil && strings.TrimSpace(string(b)) == s.bad {
			why += fmt.Sprintf("; %s is %s", s.name, s.bad)
		}
	}
	return fmt.Errorf("cannot create a user namespace (user namespaces disabled or exhausted?%s): %w", why, err)
}

// rootlessChild is the re-executed berth inside the new namespaces. It returns only on
// failure; on success it becomes COMMAND.
func rootlessChild(args []string) int {
	parent := os.Getppid()           // alive: it waits for the device on the socket
	syscall.CloseOnExec(childSockFD) // COMMAND must not inherit the socket
	fs := flag.NewFlagSet(rootlessChildArg, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var s nsSetup
	fs.IntVar(&s.mtu, "mtu", forward.DefaultMTU, "")
	fs.BoolVar(&s.noIPv6, "no-ipv6", false, "")
	fs.BoolVar(&s.tap, "tap", false, "")
	fs.BoolVar(&s.dhcp, "dhcp", false, "")
	fs.Func("addr4", "", func(v string) (err error) { s.addr4, err = netip.ParsePrefix(v); return })
	fs.Func("addr6", "", func(v string) (err error) { s.addr6, err = netip.ParsePrefix(v); return })
	fs.Func("gw4", "", func(v string) (err error) { s.gw4, err = netip.ParseAddr(v); return })
	fs.Func("gw6", "", func(v string) (err error) { s.gw6, err = netip.ParseAddr(v); return })
	fs.Func("dns", "", func(v string) error {
		a, err := netip.ParseAddr(v)
		s.nameserver = append(s.nameserver, a)
		return err
	})
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		return exitUsage
	}
	argv := fs.Args()
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(stderr, "berth run: %v\n", err)
		return 127
	}
	if err := s.resolvConf(); err != nil {
		fmt.Fprintf(stderr, "berth run: warning: the namespace keeps the host's /etc/resolv.conf: %v\n", err)
	}
	tunFD, err := s.device()
	if err != nil {
		fmt.Fprintf(stderr, "berth run: %v\n", err)
		return exitFailure
	}
	if err := unix.Sendmsg(childSockFD, []byte(msgTUN), unix.UnixRights(tunFD), nil, unix.MSG_NOSIGNAL); err != nil {
		fmt.Fprintf(stderr, "berth run: passing the TUN device on: %v\n", err)
		return exitFailure
	}
	unix.Close(tunFD) // the parent holds it now; closing its copy removes the device
	buf := make([]byte, 16)
	n, err := unix.Read(childSockFD, buf)
	for err == unix.EINTR {
		n, err = unix.Read(childSockFD, buf)
	}
	if err != nil || string(buf[:n]) != msgReady {
		return exitFailure // the parent failed and says why
	}
	unix.Close(childSockFD)
	// The parent-death signal (SysProcAttr.Pdeathsig) belongs to the thread fork made, and
	// COMMAND keeps only that of the thread that calls execve: main's goroutine may run on
	// another of the runtime's threads by now. Set it on the thread that execs, then make
	// sure the parent did not die before (we would have been reparented).
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		fmt.Fprintf(stderr, "berth run: prctl(PR_SET_PDEATHSIG): %v\n", err)
		return exitFailure
	}
	if os.Getppid() != parent {
		return exitFailure // berth is gone: COMMAND would have no network
	}
	err = syscall.Exec(path, argv, os.Environ())
	fmt.Fprintf(stderr, "berth run: exec %s: %v\n", argv[0], err)
	if errors.Is(err, unix.ENOENT) {
		return 127
	}
	return 126 // found but not executable, as shells report it
}

// resolvConf makes the namespace's /etc/resolv.conf name the DNS forwarder, as
// /etc/netns/NAME/resolv.conf does for ip netns exec in the root mode: a file bind-mounted
// over it in this mount namespace. Mounts are made private first so that none propagates
// to the host (a mount namespace made with a new user namespace gets slave mounts anyway,
// mount_namespaces(7), but root with --userns should not depend on that).
func (s *nsSetup) resolvConf() error {
	if len(s.nameserver) == 0 {
		return nil
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	var b strings.Builder
	for _, a := range s.nameserver {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	f, err := os.CreateTemp("", "berth-resolv-*.conf")
	if err != nil {
		return err
	}
	// The mount keeps the file's inode: the name can go at once, leaving nothing behind.
	defer os.Remove(f.Name())
	_, err = io.WriteString(f, b.String())
	if e := f.Chmod(0o644); err == nil {
		err = e
	}
	if e := f.Close(); err == nil {
		err = e
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(f.Name(), "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting over /etc/resolv.conf: %w", err)
	}
	return nil
}

// device brings up lo, creates berth0 with the virtio-net header and configures it as
// forward.Start does in the root mode. It returns the TUN descriptor.
func (s *nsSetup) device() (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			mode := ""
			if st, e := os.Stat("/dev/net/tun"); e == nil {
				mode = fmt.Sprintf(" (it is %v)", st.Mode().Perm())
			}
			return -1, fmt.Errorf("open /dev/net/tun: %w: the rootless mode needs the TUN device node open to every user, mode 0666 as udev sets it%s", err, mode)
		}
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, _ := unix.NewIfreq(forward.DeviceName)
	// The flags tun.Open sets with Options.VnetHdr; tun.FromFile in the parent applies
	// the header size and offloads, which belong to the descriptor.
	kind := uint16(unix.IFF_TUN)
	if s.tap {
		kind = unix.IFF_TAP // tun.TAPFromFile in the parent
	}
	ifr.SetUint16(kind | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tun: TUNSETIFF %q: %w", forward.DeviceName, err)
	}
	dev := forward.DeviceName
	ip := ipPath()
	cmds := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", dev, "mtu", strconv.Itoa(s.mtu)},
		// As tun.Open does in the root mode: the kernel's 500-packet default overflows in
		// a close storm, and tun.FromFile in the parent cannot reach the device by name
		// from the host's namespace.
		{"link", "set", dev, "txqueuelen", strconv.Itoa(tun.DefaultTxQueueLen)},
		{"addr", "add", s.addr4.String(), "dev", dev},
		{"link", "set", dev, "up"},
		{"route", "add", "default", "via", s.gw4.String(), "dev", dev},
	}
	if !s.noIPv6 {
		cmds = append(cmds,
			[]string{"-6", "addr", "add", s.addr6.String(), "dev", dev, "nodad"},
			[]string{"-6", "route", "add", "default", "via", s.gw6.String(), "dev", dev})
	}
	if s.dhcp {
		// --tap --dhcp: addresses and routes come from berth's DHCP server and router
		// advertisements (forward.SessionConfig.DHCP).
		cmds = [][]string{cmds[0], cmds[1], cmds[2], {"link", "set", dev, "up"}}
	}
	for _, c := range cmds {
		cmd := exec.Command(ip, c...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Run(); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, strings.TrimSpace(errb.String()))
		}
	}
	return fd, nil
}

// ipPath finds ip(8), also where an unprivileged user's PATH lacks the sbin directories.
func ipPath() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return "ip" // the error then names it
}
