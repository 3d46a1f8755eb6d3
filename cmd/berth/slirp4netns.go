package main

// berth as slirp4netns: the command line, defaults and behaviour that slirp4netns's
// callers depend on (rootlesskit's slirp4netns network and port drivers, Podman's
// slirp4netns network mode), so that berth installed as slirp4netns, or given to them
// with --slirp4netns-binary, serves their namespace instead.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/link/tun"
)

const slirp4netnsUsage = "slirp4netns [OPTION]... PID|PATH [TAPNAME]"

// slirp4netnsVersion is what --version prints: callers parse the first line's
// "slirp4netns version X.Y.Z" (Podman compares it), so berth claims the slirp4netns
// release whose interface it implements, and says it is berth.
const slirp4netnsVersion = "slirp4netns version 1.3.1+berth\nberth: the berth user-mode network stack standing in for slirp4netns\n"

// slirp4netnsHelp is --help. Callers find features by searching it for option names
// (rootlesskit: --netns-type, --enable-ipv6, --cidr, --disable-host-loopback,
// --api-socket, --enable-sandbox, --enable-seccomp), so it names every one berth takes.
const slirp4netnsHelp = `Usage: slirp4netns [OPTION]... PID|PATH [TAPNAME]
User-mode networking for unprivileged network namespaces (berth).

-c, --configure          bring up the interface (addresses, routes, MTU, lo)
-e, --exit-fd=FD         exit when FD becomes readable or is closed
-r, --ready-fd=FD        write "1" to FD and close it once ready
-m, --mtu=MTU            MTU (default=1500, max=65521)
-6, --enable-ipv6        enable IPv6 (fd00::/64, gateway fd00::2, DNS fd00::3)
-a, --api-socket=PATH    serve the API (add_hostfwd, list_hostfwd, remove_hostfwd)
--cidr=CIDR              the IPv4 network (default 10.0.2.0/24)
--disable-host-loopback  refuse connections to the host's loopback via the gateway
--netns-type=TYPE        PID|PATH is a pid or a path ([path|pid], default=pid)
--userns-path=PATH       the user namespace to enter to reach the network namespace
--enable-sandbox         accepted: berth needs no privileges once running, and
                         drops them (no_new_privs; as root, every capability but
                         CAP_NET_BIND_SERVICE)
--enable-seccomp         accepted, with --enable-sandbox's effect
--outbound-addr=IPv4|IF  the host address or interface outbound IPv4 flows use
--outbound-addr6=IPv6|IF the host address or interface outbound IPv6 flows use
--disable-dns            no DNS forwarder at the network address + 3
--macaddress=MAC         the TAP device's MAC address (with --configure)
--target-type=netns      the only target type berth serves
-h, --help               show this help and exit
-v, --version            show the version and exit

Defaults: 10.0.2.0/24, gateway and host 10.0.2.2, DNS 10.0.2.3, guest 10.0.2.100;
with -6 fd00::/64, fd00::2, fd00::3, guest fd00::100; TAPNAME tap0.
The DNS forwarder asks the first nameserver of /etc/resolv.conf, or the
environment's BERTH_DNS_UPSTREAM (ADDR[:PORT]). berth's Go code runs on one
thread (as berth run's --threads 1) unless the environment sets GOMAXPROCS.
Port forwards through the API keep the client's address as the source the
namespace sees, and may be IPv6 (host_addr "::" or an IPv6 address).
`

// slirpOpts are slirp4netns's options.
type slirpOpts struct {
	configure, ipv6, noHostLoopback, disableDNS, sandbox, seccomp bool
	exitFD, readyFD                                               int
	mtu                                                           int
	apiSocket, cidr, netnsType, usernsPath                        string
	outbound4, outbound6, mac, targetType                         string
	help, version                                                 bool
	target, tapName                                               string
}

func parseSlirpOpts(args []string) (*slirpOpts, error) {
	o := &slirpOpts{exitFD: -1, readyFD: -1, mtu: 1500, netnsType: "pid", targetType: "netns"}
	fdArg := func(p *int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("bad file descriptor %q", v)
			}
			*p = n
			return nil
		}
	}
	flag := func(p *bool) func(string) error { return func(string) error { *p = true; return nil } }
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	opts := []gnuOpt{
		{short: 'c', long: "configure", set: flag(&o.configure)},
		{short: 'e', long: "exit-fd", hasArg: true, set: fdArg(&o.exitFD)},
		{short: 'r', long: "ready-fd", hasArg: true, set: fdArg(&o.readyFD)},
		{short: 'm', long: "mtu", hasArg: true, set: func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > 65521 {
				return fmt.Errorf("MTU must be a positive integer (< 65522), got %q", v)
			}
			o.mtu = n
			return nil
		}},
		{short: '6', long: "enable-ipv6", set: flag(&o.ipv6)},
		{short: 'a', long: "api-socket", hasArg: true, set: str(&o.apiSocket)},
		{long: "cidr", hasArg: true, set: str(&o.cidr)},
		{long: "disable-host-loopback", set: flag(&o.noHostLoopback)},
		{long: "netns-type", hasArg: true, set: str(&o.netnsType)},
		{long: "userns-path", hasArg: true, set: str(&o.usernsPath)},
		{long: "enable-sandbox", set: flag(&o.sandbox)},
		{long: "enable-seccomp", set: flag(&o.seccomp)},
		{long: "outbound-addr", hasArg: true, set: str(&o.outbound4)},
		{long: "outbound-addr6", hasArg: true, set: str(&o.outbound6)},
		{long: "disable-dns", set: flag(&o.disableDNS)},
		{long: "macaddress", hasArg: true, set: str(&o.mac)},
		{long: "target-type", hasArg: true, set: str(&o.targetType)},
		{short: 'h', long: "help", set: flag(&o.help)},
		{short: 'v', long: "version", set: flag(&o.version)},
	}
	operands, err := gnuParse(opts, args, true)
	if err != nil {
		return nil, err
	}
	if o.help || o.version {
		return o, nil
	}
	if o.targetType != "netns" {
		return nil, fmt.Errorf("--target-type=%s: berth serves only netns", o.targetType)
	}
	if o.netnsType != "pid" && o.netnsType != "path" {
		return nil, fmt.Errorf("--netns-type=%s: want path or pid", o.netnsType)
	}
	if o.mac != "" {
		if !o.configure {
			return nil, errors.New("--macaddress needs --configure")
		}
		if _, err := net.ParseMAC(o.mac); err != nil {
			return nil, fmt.Errorf("--macaddress: %v", err)
		}
	}
	switch len(operands) {
	case 1:
		o.tapName = "tap0"
	case 2:
		o.tapName = operands[1]
	default:
		return nil, errors.New("want PID|PATH [TAPNAME]")
	}
	o.target = operands[0]
	if len(o.tapName) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("TAPNAME %q too long", o.tapName)
	}
	if o.netnsType == "pid" {
		if n, err := strconv.Atoi(o.target); err != nil || n <= 0 {
			return nil, fmt.Errorf("PID %q: want a positive process id (or --netns-type=path)", o.target)
		}
	}
	if !o.ipv6 && o.mtu < 576 {
		return nil, fmt.Errorf("MTU %d is below IPv4's minimum 576", o.mtu)
	}
	if o.ipv6 && o.mtu < 1280 {
		return nil, fmt.Errorf("MTU %d is below IPv6's minimum 1280", o.mtu)
	}
	return o, nil
}

// slirpNet is the addressing the options give: CIDR's network + 100 for the guest, + 2
// for the gateway, + 3 for DNS, as slirp4netns.
type slirpNet struct {
	prefix4        netip.Prefix
	ns4, gw4, dns4 netip.Addr
	ns6, gw6, dns6 netip.Addr
}

func (o *slirpOpts) network() (slirpNet, error) {
	p := netip.MustParsePrefix("10.0.2.0/24")
	if o.cidr != "" {
		var err error
		if p, err = netip.ParsePrefix(o.cidr); err != nil || !p.Addr().Is4() {
			return slirpNet{}, fmt.Errorf("--cidr %q: want an IPv4 network like 10.0.2.0/24", o.cidr)
		}
		// slirp4netns takes the network of whatever address is given.
		p = p.Masked()
		if p.Bits() > 25 {
			return slirpNet{}, fmt.Errorf("--cidr %s: too small for the guest at + 100 (at most /25)", o.cidr)
		}
	}
	add := func(a netip.Addr, n byte) netip.Addr {
		b := a.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		v += uint32(n)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	return slirpNet{
		prefix4: p,
		ns4:     add(p.Addr(), 100), gw4: add(p.Addr(), 2), dns4: add(p.Addr(), 3),
		ns6: forward.DefaultNSAddr6.Addr(), gw6: forward.DefaultGateway6, dns6: forward.DefaultDNS6,
	}, nil
}

// outboundControl binds outbound connections to the --outbound-addr[6] address or
// interface (SO_BINDTODEVICE), per family.
func outboundControl(v4, v6 string) (func(network, address string, c syscall.RawConn) error, error) {
	type bind struct {
		addr  netip.Addr
		iface string
	}
	parse := func(v string, want4 bool) (bind, error) {
		if v == "" {
			return bind{}, nil
		}
		if a, err := netip.ParseAddr(v); err == nil {
			if a.Is4() != want4 {
				return bind{}, fmt.Errorf("%s is not an IPv%s address", v, map[bool]string{true: "4", false: "6"}[want4])
			}
			return bind{addr: a}, nil
		}
		if _, err := net.InterfaceByName(v); err != nil {
			return bind{}, fmt.Errorf("%q: neither an address nor an interface: %v", v, err)
		}
		return bind{iface: v}, nil
	}
	b4, err := parse(v4, true)
	if err != nil {
		return nil, fmt.Errorf("--outbound-addr %w", err)
	}
	b6, err := parse(v6, false)
	if err != nil {
		return nil, fmt.Errorf("--outbound-addr6 %w", err)
	}
	if b4 == (bind{}) && b6 == (bind{}) {
		return nil, nil
	}
	return func(network, _ string, c syscall.RawConn) error {
		b := b4
		if strings.HasSuffix(network, "6") {
			b = b6
		}
		var serr error
		err := c.Control(func(fd uintptr) {
			switch {
			case b.iface != "":
				serr = unix.BindToDevice(int(fd), b.iface)
			case b.addr.Is4():
				serr = unix.Bind(int(fd), &unix.SockaddrInet4{Addr: b.addr.As4()})
			case b.addr.Is6():
				serr = unix.Bind(int(fd), &unix.SockaddrInet6{Addr: b.addr.As16()})
			}
		})
		if err != nil {
			return err
		}
		return serr
	}, nil
}

// dropPrivileges is --enable-sandbox: berth needs no privileges once its device is
// open, so no_new_privs is set on every thread, and root keeps only
// CAP_NET_BIND_SERVICE (for API forwards of ports below 1024), as slirp4netns's
// sandbox does for root. slirp4netns also pivots into a minimal root; berth's host
// side opens only sockets, so it leaves the file system as it is.
func dropPrivileges() error {
	if _, _, e := syscall.AllThreadsSyscall6(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", e)
	}
	if os.Geteuid() != 0 {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	keep := uint32(1) << unix.CAP_NET_BIND_SERVICE
	data[0] = unix.CapUserData{Effective: keep, Permitted: keep}
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}

// dropInThreads runs berth's Go code on one thread, as berth run does by default
// (fwdFlags.applyThreads: the forwarder's work is mostly system calls, and a second
// thread spun on the CPU the namespace's programs need), unless GOMAXPROCS is set; the
// engines pass no berth flags, so the environment is the only knob.
//
// BERTH_CPUPROFILE, when set, is a file to write a CPU profile of the serving process to
// (runtime/pprof), for measuring the drop-ins where an engine starts them: the returned
// function, deferred by the caller, ends the profile. A profile that cannot be started
// is said on stderr and serving goes on.
func dropInThreads() (stop func()) {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	path := os.Getenv("BERTH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "berth: BERTH_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// runSlirp4netns is berth invoked as slirp4netns; args follow the program name.
func runSlirp4netns(args []string) int {
	o, err := parseSlirpOpts(args)
	if err != nil {
		fmt.Fprintf(stderr, "slirp4netns: %v\n", err)
		fmt.Fprintf(stderr, "usage: %s\n", slirp4netnsUsage)
		return exitFailure // slirp4netns exits 1 on a bad command line
	}
	switch {
	case o.help:
		fmt.Fprint(stdout, slirp4netnsHelp)
		return exitOK
	case o.version:
		fmt.Fprint(stdout, slirp4netnsVersion)
		return exitOK
	}
	defer dropInThreads()()
	sn, err := o.network()
	if err != nil {
		fmt.Fprintf(stderr, "slirp4netns: %v\n", err)
		return exitFailure
	}
	control, err := outboundControl(o.outbound4, o.outbound6)
	if err != nil {
		fmt.Fprintf(stderr, "slirp4netns: %v\n", err)
		return exitFailure
	}
	slirpFail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "slirp4netns: %s\n", fmt.Sprintf(format, a...))
		return exitFailure
	}

	pid := 0
	netnsPath := o.target
	if o.netnsType == "pid" {
		pid, _ = strconv.Atoi(o.target)
		netnsPath = "/proc/" + o.target + "/ns/net"
	}
	userns := o.usernsPath
	if userns == "" && pid > 0 {
		userns = "/proc/" + o.target + "/ns/user"
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	dev := nsDevice{netns: netnsPath, userns: userns, name: o.tapName, tap: dropInTAP, mac: o.mac}
	if o.configure {
		dev.configure = &nsSetup{mtu: o.mtu, noIPv6: !o.ipv6,
			addr4: netip.PrefixFrom(sn.ns4, sn.prefix4.Bits()), gw4: sn.gw4,
			addr6: netip.PrefixFrom(sn.ns6, 64), gw6: sn.gw6}
	}
	f, isTAP, err := openNSDevice(dev)
	if err != nil {
		return slirpFail("%v", err)
	}
	sess, err := startDropIn(f, isTAP, dropInConfig{
		mtu: o.mtu, ipv6: o.ipv6, noHostLoopback: o.noHostLoopback, disableDNS: o.disableDNS,
		ns4: sn.ns4, gw4: sn.gw4, dns4: sn.dns4, ns6: sn.ns6, gw6: sn.gw6, dns6: sn.dns6,
		control: control,
	})
	f.Close()
	if err != nil {
		return slirpFail("%v", err)
	}
	defer sess.Close()

	if o.apiSocket != "" {
		ln, err := listenAPI(o.apiSocket)
		if err != nil {
			return slirpFail("API socket %s: %v", o.apiSocket, err)
		}
		api := &slirpAPI{ports: sess.Forwarder, ns4: sn.ns4, ns6: sn.ns6, ipv6: o.ipv6}
		done := make(chan struct{})
		go func() { api.serve(ln); close(done) }()
		defer func() { ln.Close(); <-done }()
	}
	if o.sandbox || o.seccomp {
		// Podman passes both whenever --help names them: a build that cannot change
		// every thread's privileges (AllThreadsSyscall refuses when cgo is linked in)
		// says so and serves on, as a slirp4netns without the sandbox would.
		if err := dropPrivileges(); errors.Is(err, syscall.ENOTSUP) {
			fmt.Fprintf(stderr, "slirp4netns: --enable-sandbox: privileges kept (this berth build links cgo)\n")
		} else if err != nil {
			return slirpFail("--enable-sandbox: %v", err)
		}
	}
	fmt.Fprintf(stderr, "berth as slirp4netns: serving %s on %s (%s), MTU %d, %s via gateway %s, DNS %s\n",
		netnsPath, o.tapName, map[bool]string{true: "TAP", false: "TUN"}[isTAP], o.mtu, sn.ns4, sn.gw4, sn.dns4)
	if o.readyFD >= 0 {
		rf := os.NewFile(uintptr(o.readyFD), "ready-fd")
		_, err := rf.Write([]byte("1"))
		rf.Close()
		if err != nil {
			return slirpFail("--ready-fd %d: %v", o.readyFD, err)
		}
	}

	stop := make(chan struct{})
	defer close(stop)
	var exitC <-chan struct{}
	if o.exitFD >= 0 {
		exitC = watchExitFD(o.exitFD, stop)
	}
	gone := nsGone(pid, netnsPath, 200*time.Millisecond, stop)
	select {
	case <-sigs:
	case <-exitC:
	case <-gone:
	}
	return exitOK
}

// watchExitFD returns a channel closed once fd polls readable or hung up (the -e
// contract: "exits when a poll(2) event happens on the FD").
func watchExitFD(fd int, stop <-chan struct{}) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		defer close(c)
		for {
			select {
			case <-stop:
				return
			default:
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 200)
			if err == unix.EINTR || (err == nil && n == 0) {
				continue
			}
			return // an event (POLLIN, POLLHUP, POLLERR, POLLNVAL) or a bad fd
		}
	}()
	return c
}

// dropInTAP: TAPNAME is created as a TAP device (when it does not exist yet), as
// slirp4netns and pasta do; berth's side of it is link/ether (ARP, NDP, router
// advertisements, DHCP), as berth run --tap. A TUN device of that name that exists is
// served as TUN.
const dropInTAP = true

// dropInConfig is the forwarding that slirp4netns's and pasta's options ask for.
type dropInConfig struct {
	mtu                              int
	ipv6, noHostLoopback, disableDNS bool
	ns4, gw4, dns4, ns6, gw6, dns6   netip.Addr
	dnsUpstream                      netip.AddrPort // zero: /etc/resolv.conf's
	control                          func(network, address string, c syscall.RawConn) error
	ports                            []forward.PortMapping
}

// startDropIn serves the device f (a TUN or TAP descriptor from openNSDevice) with a
// forwarder configured by dc.
func startDropIn(f *os.File, isTAP bool, dc dropInConfig) (*forward.Session, error) {
	fromFile := tun.FromFile
	if isTAP {
		fromFile = tun.TAPFromFile
	}
	ep, err := fromFile(f, tun.Options{MTU: dc.mtu, VnetHdr: true})
	if err != nil {
		return nil, err
	}
	cfg := forward.SessionConfig{MTU: dc.mtu, Device: ep, TAP: isTAP, Ports: dc.ports}
	fc := &cfg.Forward
	fc.NSAddr4, fc.Gateway4, fc.DNS4 = dc.ns4, dc.gw4, dc.dns4
	fc.NSAddr6, fc.Gateway6, fc.DNS6 = dc.ns6, dc.gw6, dc.dns6
	fc.NoIPv6 = !dc.ipv6
	fc.NoHostLoopback = dc.noHostLoopback
	if dc.control != nil {
		fc.Dialer = &net.Dialer{Control: dc.control}
	}
	if !dc.disableDNS {
		fc.DNSUpstream = dc.dnsUpstream
		if !fc.DNSUpstream.IsValid() {
			// The engines pass no resolver: berth run's --dns-upstream is the
			// environment's BERTH_DNS_UPSTREAM here, else resolv.conf's first.
			up := os.Getenv("BERTH_DNS_UPSTREAM")
			if up == "" {
				up = resolvConfServer("/etc/resolv.conf")
			}
			if up != "" {
				ap, err := parseDNSUpstream(up)
				if err != nil {
					ep.Close()
					return nil, fmt.Errorf("BERTH_DNS_UPSTREAM: %v", err)
				}
				fc.DNSUpstream = ap
			}
		}
	}
	sess, err := forward.Start(cfg)
	if err != nil {
		ep.Close()
		return nil, err
	}
	return sess, nil
}

// parseDNSUpstream reads ADDR or ADDR:PORT ([ADDR]:PORT for IPv6); the port defaults
// to 53.
func parseDNSUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: want ADDR or ADDR:PORT", s)
	}
	return netip.AddrPortFrom(a.WithZone(""), 53), nil
}

// dropInName tells which drop-in berth was invoked as, from argv[0]'s base name:
// "slirp4netns", "pasta", "pesto", or "".
func dropInName(argv0 string) string {
	switch b := filepath.Base(argv0); b {
	case "slirp4netns", "pasta", "pesto":
		return b
	}
	return ""
}

// dropInCommand is the table's run function of a drop-in (berth slirp4netns ...): -h,
// -help or --help before any operand prints berth's usage and the drop-in's help;
// everything else is the drop-in's command line.
func dropInCommand(run func([]string) int) func(*command, []string) int {
	return func(c *command, args []string) int {
		for _, a := range args {
			if a == "--" || !strings.HasPrefix(a, "-") {
				break
			}
			if a == "-h" || a == "-help" || a == "--help" {
				fmt.Fprintf(stdout, "usage: berth %s\n\n%s\n\n%s", c.usage, c.summary, c.help)
				return exitOK
			}
		}
		return run(args)
	}
}

// dropInMain runs berth as the helper argv[0] names (slirp4netns, pasta, pesto: berth
// installed under that name, or a symlink), or as the hidden namespace helper; it
// returns -1 when argv is none of them, for main to go on with berth's commands.
func dropInMain(argv []string) int {
	if len(argv) > 1 && argv[1] == nsDeviceArg {
		return nsDeviceChild(argv[2:])
	}
	if len(argv) > 1 && argv[1] == nsListenArg {
		return nsListenChild(argv[2:])
	}
	switch dropInName(argv[0]) {
	case "slirp4netns":
		return runSlirp4netns(argv[1:])
	case "pasta":
		return runPasta(argv[1:])
	case "pesto":
		return runPesto(argv[1:])
	}
	return -1
}
