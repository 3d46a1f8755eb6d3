package main

// berth as pasta: the options Podman and rootlesskit's pasta network driver pass, the
// way pasta starts (it forks once the namespace is served, the parent exits 0, the
// child quits when the namespace goes away), and a control socket that berth's pesto
// changes forwards through. The options pasta has and berth has no use for are
// accepted and listed as such in --help.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/forward/portspec"
)

const pastaUsage = "pasta [OPTION]... PID | pasta [OPTION]... --netns PATH|NAME"

// pastaVersion is --version; rootlesskit and Podman only run it (exit 0).
const pastaVersion = "pasta (berth) 2026_07_16.berth\nberth: the berth user-mode network stack standing in for pasta\n"

const pastaHelp = `Usage: pasta [OPTION]... PID
       pasta [OPTION]... --netns PATH|NAME
Connects the network namespace of PID, or the one at PATH (NAME: /run/netns/NAME),
through berth. pasta's own mode of running a COMMAND in new namespaces is berth run.

  -t, --tcp-ports SPEC   forward host TCP ports into the namespace (repeatable)
  -u, --udp-ports SPEC   forward host UDP ports into the namespace (repeatable)
      SPEC: none | [ADDR[%IFACE]/]PORTS, PORTS a comma-separated list of
      FIRST[-LAST][:TOFIRST[-TOLAST]] and ~FIRST[-LAST] (excluded); auto (the
      default) forwards the ports the namespace listens on, checked every second
      (in /proc/PID/net of PID, or of a process in --netns's namespace that berth
      may look at); all is accepted and forwards nothing
  -T, --tcp-ns SPEC      forward TCP ports of the namespace's loopback (127.0.0.1,
                         ::1) to the host's loopback (repeatable)
  -U, --udp-ns SPEC      forward UDP ports of the namespace's loopback likewise
      SPEC: as -t's, without ADDR/ (the namespace's loopback listens) or
      target addresses; auto (the default) forwards the ports the host listens
      on, checked every second, less those of berth's -t and -u
  --config-net           configure the namespace's interface (addresses, routes,
                         MTU), as Podman and rootlesskit ask
  -a, --address ADDR     the namespace's IPv4 or IPv6 address (repeatable;
                         default 10.0.2.100, fd00::100)
  -n, --netmask MASK     the IPv4 prefix length or netmask (default 24)
  -g, --gateway ADDR     the IPv4 or IPv6 gateway (default 10.0.2.2, fd00::2),
                         which stands for the host's loopback
  --dns-forward ADDR     the address DNS queries to are forwarded to the host's
                         resolver (repeatable; default 10.0.2.3, fd00::3)
  --map-guest-addr ADDR  ADDR reaches the host (its loopback in berth)
  --no-map-gw            the gateway does not reach the host's loopback
  --map-gw               the gateway reaches the host's loopback (the default)
  --host-lo-to-ns-lo     accepted (berth delivers forwarded connections to the
                         namespace's address, their source the gateway)
  -I, --ns-ifname NAME   the namespace's interface (default eth0)
  -m, --mtu MTU          its MTU (default 65520)
  -4, --ipv4-only        IPv4 only
  -6, --ipv6-only        IPv6 only
  --netns PATH|NAME      the namespace, rather than a PID
  --userns PATH          the user namespace to enter to reach it
  -P, --pid FILE         write the PID of the process serving the namespace
  -c, --conf-path PATH   the control socket berth's pesto talks to
  -f, --foreground       do not fork into the background
  -q, --quiet            no informational messages
  -e, --stderr           messages to stderr (the default in the foreground)
  -d, --debug, --trace   accepted
  --no-netns-quit        keep serving after the namespace's file is gone
  -h, --help             this help
  --version              the version
Also accepted and without effect in berth: -D/--dns, -S/--search, --dns-host,
--dhcp-dns, --no-dhcp-dns, --dhcp-search, --no-dhcp-search, --no-dhcp, --no-ndp,
--no-dhcpv6, --no-ra, --no-tcp, --no-udp, --no-icmp, --freebind, --no-map-host-loopback,
--map-host-loopback ADDR, --no-copy-routes, --no-copy-addrs, --netns-only,
--ns-mac-addr ADDR, -M/--mac-addr ADDR, -i/--interface NAME, -o/--outbound ADDR,
--outbound-if4 NAME, --outbound-if6 NAME, --runas USER, -l/--log-file PATH,
--log-size SIZE, -p/--pcap FILE, --stats DELAY, --splice-only.
The DNS forwarder asks the first nameserver of /etc/resolv.conf, or the
environment's BERTH_DNS_UPSTREAM (ADDR[:PORT]). berth's Go code runs on one
thread (as berth run's --threads 1) unless the environment sets GOMAXPROCS.
`

// pastaOpts are pasta's options as berth uses them.
type pastaOpts struct {
	configNet, quiet, foreground, stderr, v4only, v6only bool
	noMapGW, hostLoToNsLo, noNetnsQuit, help, version    bool
	tcp, udp, tcpNS, udpNS                               []string
	dnsForward, addresses, gateways                      []netip.Addr
	mapGuest                                             netip.Addr
	netmask                                              int
	netns, userns, pidFile, confPath, ifname             string
	mtu                                                  int
	target                                               string // the PID operand
}

func parsePastaOpts(args []string) (*pastaOpts, error) {
	o := &pastaOpts{mtu: 65520, ifname: "eth0", netmask: -1}
	flag := func(p *bool) func(string) error { return func(string) error { *p = true; return nil } }
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	list := func(p *[]string) func(string) error {
		return func(v string) error { *p = append(*p, v); return nil }
	}
	addrs := func(p *[]netip.Addr) func(string) error {
		return func(v string) error {
			a, err := netip.ParseAddr(v)
			if err != nil || a.Zone() != "" {
				return fmt.Errorf("bad address %q", v)
			}
			*p = append(*p, a.Unmap())
			return nil
		}
	}
	ignore := func(string) error { return nil }
	opts := []gnuOpt{
		{short: 't', long: "tcp-ports", hasArg: true, set: list(&o.tcp)},
		{short: 'u', long: "udp-ports", hasArg: true, set: list(&o.udp)},
		{short: 'T', long: "tcp-ns", hasArg: true, set: list(&o.tcpNS)},
		{short: 'U', long: "udp-ns", hasArg: true, set: list(&o.udpNS)},
		{long: "config-net", set: flag(&o.configNet)},
		{short: 'a', long: "address", hasArg: true, set: func(v string) error {
			// pasta takes ADDR[/PREFIX_LEN] for IPv4.
			if p, err := netip.ParsePrefix(v); err == nil && p.Addr().Is4() {
				o.netmask = p.Bits()
				v = p.Addr().String()
			}
			return addrs(&o.addresses)(v)
		}},
		{short: 'n', long: "netmask", hasArg: true, set: func(v string) error {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 32 {
				o.netmask = n
				return nil
			}
			m, err := netip.ParseAddr(v)
			if err != nil || !m.Is4() {
				return fmt.Errorf("bad netmask %q", v)
			}
			b := m.As4()
			ones, bits := net.IPMask(b[:]).Size()
			if bits == 0 {
				return fmt.Errorf("netmask %q is not contiguous", v)
			}
			o.netmask = ones
			return nil
		}},
		{short: 'g', long: "gateway", hasArg: true, set: addrs(&o.gateways)},
		{long: "dns-forward", hasArg: true, set: addrs(&o.dnsForward)},
		{long: "map-guest-addr", hasArg: true, set: func(v string) error {
			var a []netip.Addr
			if err := addrs(&a)(v); err != nil {
				return err
			}
			o.mapGuest = a[0]
			return nil
		}},
		{long: "no-map-gw", set: flag(&o.noMapGW)},
		{long: "map-gw", set: func(string) error { o.noMapGW = false; return nil }},
		{long: "host-lo-to-ns-lo", set: flag(&o.hostLoToNsLo)},
		{short: 'I', long: "ns-ifname", hasArg: true, set: str(&o.ifname)},
		{short: 'm', long: "mtu", hasArg: true, set: func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 68 || n > 65520 {
				return fmt.Errorf("bad MTU %q (68-65520)", v)
			}
			o.mtu = n
			return nil
		}},
		{short: '4', long: "ipv4-only", set: flag(&o.v4only)},
		{short: '6', long: "ipv6-only", set: flag(&o.v6only)},
		{long: "netns", hasArg: true, set: str(&o.netns)},
		{long: "userns", hasArg: true, set: str(&o.userns)},
		{short: 'P', long: "pid", hasArg: true, set: str(&o.pidFile)},
		{short: 'c', long: "conf-path", hasArg: true, set: str(&o.confPath)},
		{short: 'f', long: "foreground", set: flag(&o.foreground)},
		{short: 'q', long: "quiet", set: flag(&o.quiet)},
		{short: 'e', long: "stderr", set: flag(&o.stderr)},
		{short: 'd', long: "debug", set: ignore},
		{long: "trace", set: ignore},
		{long: "no-netns-quit", set: flag(&o.noNetnsQuit)},
		{short: 'h', long: "help", set: flag(&o.help)},
		{long: "version", set: flag(&o.version)},
		// Accepted, no effect in berth (see the help).
		{short: 'D', long: "dns", hasArg: true, set: ignore},
		{short: 'S', long: "search", hasArg: true, set: ignore},
		{long: "dns-host", hasArg: true, set: ignore},
		{long: "dhcp-dns", set: ignore}, {long: "no-dhcp-dns", set: ignore},
		{long: "dhcp-search", set: ignore}, {long: "no-dhcp-search", set: ignore},
		{long: "no-dhcp", set: ignore}, {long: "no-ndp", set: ignore}, {long: "no-dhcpv6", set: ignore},
		{long: "no-ra", set: ignore}, {long: "no-tcp", set: ignore}, {long: "no-udp", set: ignore},
		{long: "no-icmp", set: ignore}, {long: "freebind", set: ignore},
		{long: "no-map-host-loopback", set: ignore}, {long: "map-host-loopback", hasArg: true, set: ignore},
		{long: "no-copy-routes", set: ignore}, {long: "no-copy-addrs", set: ignore},
		{long: "netns-only", set: ignore}, {long: "ns-mac-addr", hasArg: true, set: ignore},
		{short: 'M', long: "mac-addr", hasArg: true, set: ignore},
		{short: 'i', long: "interface", hasArg: true, set: ignore},
		{short: 'o', long: "outbound", hasArg: true, set: ignore},
		{long: "outbound-if4", hasArg: true, set: ignore}, {long: "outbound-if6", hasArg: true, set: ignore},
		{long: "runas", hasArg: true, set: ignore},
		{short: 'l', long: "log-file", hasArg: true, set: ignore}, {long: "log-size", hasArg: true, set: ignore},
		{short: 'p', long: "pcap", hasArg: true, set: ignore}, {long: "stats", hasArg: true, set: ignore},
		{long: "splice-only", set: ignore},
	}
	operands, err := gnuParse(opts, args, false)
	if err != nil {
		return nil, err
	}
	if o.help || o.version {
		return o, nil
	}
	if o.v4only && o.v6only {
		return nil, errors.New("--ipv4-only and --ipv6-only exclude each other")
	}
	switch {
	case o.netns != "" && len(operands) > 0:
		return nil, fmt.Errorf("--netns and %q: give one namespace", operands[0])
	case o.netns != "":
		if !strings.Contains(o.netns, "/") {
			o.netns = "/run/netns/" + o.netns
		}
	case len(operands) == 1:
		if n, err := strconv.Atoi(operands[0]); err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: berth as pasta serves a namespace (PID or --netns); to run a command in a new one, use berth run", operands[0])
		}
		o.target = operands[0]
	case len(operands) == 0:
		return nil, errors.New("no namespace: give a PID or --netns (to run a command in a new one, use berth run)")
	default:
		return nil, fmt.Errorf("unexpected arguments %q", operands[1:])
	}
	if len(o.ifname) >= unix.IFNAMSIZ || o.ifname == "" {
		return nil, fmt.Errorf("--ns-ifname %q: want 1-15 characters", o.ifname)
	}
	if !o.v4only && o.mtu < 1280 {
		return nil, fmt.Errorf("MTU %d is below IPv6's minimum 1280 (add --ipv4-only)", o.mtu)
	}
	if _, _, _, err := pastaNSSpecs(o.tcpNS, "tcp"); err != nil {
		return nil, err
	}
	if _, _, _, err := pastaNSSpecs(o.udpNS, "udp"); err != nil {
		return nil, err
	}
	return o, nil
}

// pastaNet is the namespace's addressing from the options, with berth's defaults.
type pastaNet struct {
	addr4          netip.Prefix
	gw4, dns4      netip.Addr
	addr6          netip.Prefix
	gw6, dns6      netip.Addr
	noHostLoopback bool
}

func (o *pastaOpts) network() (pastaNet, error) {
	n := pastaNet{addr4: forward.DefaultNSAddr4, gw4: forward.DefaultGateway4, dns4: forward.DefaultDNS4,
		addr6: forward.DefaultNSAddr6, gw6: forward.DefaultGateway6, dns6: forward.DefaultDNS6}
	bits := 24
	if o.netmask >= 0 {
		bits = o.netmask
	}
	for _, a := range o.addresses {
		if a.Is4() {
			n.addr4 = netip.PrefixFrom(a, bits)
		} else {
			n.addr6 = netip.PrefixFrom(a, 64)
		}
	}
	if n.addr4.Bits() != bits {
		n.addr4 = netip.PrefixFrom(n.addr4.Addr(), bits)
	}
	for _, g := range o.gateways {
		if g.Is4() {
			n.gw4 = g
		} else {
			n.gw6 = g
		}
	}
	for _, d := range o.dnsForward {
		if d.Is4() {
			n.dns4 = d
		} else {
			n.dns6 = d
		}
	}
	// berth's forwarder stands for the host's loopback at one address per family:
	// --map-guest-addr's when given (Podman's host.containers.internal), else the
	// gateway's unless --no-map-gw.
	if o.mapGuest.IsValid() {
		if o.mapGuest.Is4() {
			n.gw4 = o.mapGuest
		} else {
			n.gw6 = o.mapGuest
		}
	} else if o.noMapGW {
		n.noHostLoopback = true
	}
	for _, a := range []netip.Addr{n.gw4, n.dns4} {
		if a == n.addr4.Addr() {
			return n, fmt.Errorf("address %s is the namespace's own", a)
		}
	}
	return n, nil
}

// pastaForwards turns -t and -u into port mappings.
func pastaForwards(specs []string, proto string, n pastaNet, ipv4Only bool) ([]forward.PortMapping, []string, error) {
	var out []forward.PortMapping
	var notes []string
	for _, s := range specs {
		sp, err := portspec.Parse(s)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case sp.None:
			continue
		case sp.Iface != "":
			return nil, nil, fmt.Errorf("-%s %s: berth does not bind forwards to an interface", map[string]string{"tcp": "t", "udp": "u"}[proto], s)
		case sp.Auto || (sp.All && len(sp.Include) == 0):
			notes = append(notes, fmt.Sprintf("%s ports %q: berth forwards the ports named, or auto's with a PID, not all", proto, s))
			continue
		}
		for _, f := range sp.Forwards(portspec.Ephemeral) {
			if f.ToAddr.IsValid() && f.ToAddr != n.addr4.Addr() && f.ToAddr != n.addr6.Addr() {
				return nil, nil, fmt.Errorf("%s: berth forwards to the namespace's address only, not %s", s, f.ToAddr)
			}
			m := forward.PortMapping{Proto: proto, HostAddr: sp.Addr, HostPort: f.Listen, NSPort: f.Target}
			if !m.HostAddr.IsValid() && ipv4Only {
				m.HostAddr = netip.IPv4Unspecified()
			}
			out = append(out, m)
		}
	}
	return out, notes, nil
}

// pastaChildEnv marks the background process of a pasta that forked: its value is the
// descriptor of the pipe that reports "ready" or the error to the parent.
const pastaChildEnv = "BERTH_PASTA_CHILD_FD"

// runPasta is berth invoked as pasta; args follow the program name.
func runPasta(args []string) int {
	o, err := parsePastaOpts(args)
	if err != nil {
		fmt.Fprintf(stderr, "pasta: %v\n", err)
		return exitFailure
	}
	switch {
	case o.help:
		fmt.Fprint(stdout, pastaHelp)
		return exitOK
	case o.version:
		fmt.Fprint(stdout, pastaVersion)
		return exitOK
	}
	// pasta forks once ready; the parent exits 0 then, or 1 with the child's error.
	if fdStr := os.Getenv(pastaChildEnv); fdStr != "" || o.foreground {
		var status *os.File
		if fdStr != "" {
			fd, _ := strconv.Atoi(fdStr)
			status = os.NewFile(uintptr(fd), "pasta-status")
			os.Unsetenv(pastaChildEnv)
		}
		return servePasta(o, status)
	}
	return forkPasta()
}

// forkPasta starts the serving process in the background (its own session, stdio on
// /dev/null: rootlesskit waits for pasta's output to end) and waits for it to be ready.
func forkPasta() int {
	// The name it was started by (a symlink named pasta, most often), so that the
	// background process is "pasta" in ps and pgrep, as pasta's own is.
	self := os.Args[0]
	if !strings.Contains(self, "/") {
		self, _ = exec.LookPath(self)
	}
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			fmt.Fprintf(stderr, "pasta: %v\n", err)
			return exitFailure
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "pasta: %v\n", err)
		return exitFailure
	}
	defer r.Close()
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Args[0] = os.Args[0] // the child is pasta (or berth pasta) too
	cmd.Env = append(os.Environ(), pastaChildEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		fmt.Fprintf(stderr, "pasta: %v\n", err)
		return exitFailure
	}
	w.Close()
	msg, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	if string(msg) == "ready\n" {
		cmd.Process.Release()
		return exitOK
	}
	cmd.Wait()
	why := strings.TrimSpace(string(msg))
	if why == "" {
		why = "the background process ended before it was ready"
	}
	fmt.Fprintf(stderr, "pasta: %s\n", why)
	return exitFailure
}

// servePasta serves the namespace until it goes away or berth is signalled; status,
// when not nil, is the pipe to the parent of a fork: "ready\n" or the error goes there.
func servePasta(o *pastaOpts, status *os.File) int {
	defer dropInThreads()()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	failed := func(format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		if status != nil {
			io.WriteString(status, msg+"\n")
			status.Close()
		} else {
			fmt.Fprintf(stderr, "pasta: %s\n", msg)
		}
		return exitFailure
	}
	n, err := o.network()
	if err != nil {
		return failed("%v", err)
	}
	// pasta's default for -t and -u is auto.
	if len(o.tcp) == 0 {
		o.tcp = []string{"auto"}
	}
	if len(o.udp) == 0 {
		o.udp = []string{"auto"}
	}
	// And so is -T's and -U's.
	if len(o.tcpNS) == 0 {
		o.tcpNS = []string{"auto"}
	}
	if len(o.udpNS) == 0 {
		o.udpNS = []string{"auto"}
	}
	tcpNS, autoTCPNS, notesT, err := pastaNSSpecs(o.tcpNS, "tcp")
	if err != nil {
		return failed("%v", err)
	}
	udpNS, autoUDPNS, notesU, err := pastaNSSpecs(o.udpNS, "udp")
	if err != nil {
		return failed("%v", err)
	}
	auto := &autoForward{pid: 0, specs: map[string][]portspec.Spec{}, ipv4Only: o.v4only, have: map[forward.PortMapping]bool{}}
	var notes []string
	split := func(specs []string, proto string) []string {
		var rest []string
		for _, s := range specs {
			if sp, err := portspec.Parse(s); err == nil && sp.Auto {
				auto.specs[proto] = append(auto.specs[proto], sp)
				continue
			}
			rest = append(rest, s)
		}
		return rest
	}
	tcp, notes1, err := pastaForwards(split(o.tcp, "tcp"), "tcp", n, o.v4only)
	if err != nil {
		return failed("%v", err)
	}
	udp, notes2, err := pastaForwards(split(o.udp, "udp"), "udp", n, o.v4only)
	if err != nil {
		return failed("%v", err)
	}
	notes = append(append(append(notes, notes1...), notesT...), notesU...)
	if o.v6only {
		return failed("--ipv6-only: berth's forwarder needs IPv4 in the namespace")
	}
	pid := 0
	netnsPath, userns := o.netns, o.userns
	if o.target != "" {
		pid, _ = strconv.Atoi(o.target)
		netnsPath = "/proc/" + o.target + "/ns/net"
		if userns == "" {
			userns = "/proc/" + o.target + "/ns/user"
		}
	}
	setup := &nsSetup{mtu: o.mtu, noIPv6: o.v4only, addr4: n.addr4, gw4: n.gw4, addr6: n.addr6, gw6: n.gw6}
	// Without --config-net pasta leaves the addresses to the namespace's DHCP and NDP
	// clients; berth's TUN device speaks neither, so it is configured either way.
	dev := nsDevice{netns: netnsPath, userns: userns, name: o.ifname, tap: dropInTAP, configure: setup}
	f, isTAP, err := openNSDevice(dev)
	if err != nil {
		return failed("%v", err)
	}
	sess, err := startDropIn(f, isTAP, dropInConfig{
		mtu: o.mtu, ipv6: !o.v4only, noHostLoopback: n.noHostLoopback,
		ns4: n.addr4.Addr(), gw4: n.gw4, dns4: n.dns4, ns6: n.addr6.Addr(), gw6: n.gw6, dns6: n.dns6,
		ports: slices.Concat(tcp, udp),
	})
	f.Close()
	if err != nil {
		return failed("%v", err)
	}
	defer sess.Close()
	// -T and -U: the namespace's loopback to the host's, once the device has set lo up.
	nsf := newNSForwarder(netnsPath, userns, o.v4only)
	defer nsf.Close()
	if errs := nsf.Add(slices.Concat(tcpNS, udpNS)); errors.Join(errs...) != nil {
		return failed("%v", errors.Join(errs...))
	}
	if o.confPath != "" {
		ln, err := listenAPI(o.confPath)
		if err != nil {
			return failed("control socket %s: %v", o.confPath, err)
		}
		ctl := &pastaControl{ports: sess.Forwarder, net: n, ipv4Only: o.v4only, have: slices.Concat(tcp, udp),
			ns: nsf, haveNS: slices.Concat(tcpNS, udpNS)}
		done := make(chan struct{})
		go func() { ctl.serve(ln); close(done) }()
		defer func() { ln.Close(); <-done }()
	}
	stopAuto := make(chan struct{})
	if len(auto.specs) > 0 {
		auto.ports, auto.pid, auto.netns, auto.userns = sess.Forwarder, pid, netnsPath, userns
		autoDone := make(chan struct{})
		go func() {
			scanEvery(time.Second, stopAuto, auto.scan)
			if auto.diag != nil {
				auto.diag.Close()
			}
			close(autoDone)
		}()
		defer func() { close(stopAuto); <-autoDone }()
	}
	if len(autoTCPNS)+len(autoUDPNS) > 0 {
		nsAuto := &nsAutoForward{fwd: nsf, specs: map[string][]portspec.Spec{}, procNet: "/proc/self/net",
			hostPorts: sess.Forwarder.Ports, have: map[nsMapping]bool{}}
		if d, err := openSockDiag(); err == nil { // else /proc/self/net
			nsAuto.diag = d
			defer d.Close()
		}
		if len(autoTCPNS) > 0 {
			nsAuto.specs["tcp"] = autoTCPNS
		}
		if len(autoUDPNS) > 0 {
			nsAuto.specs["udp"] = autoUDPNS
		}
		stopNSAuto, nsAutoDone := make(chan struct{}), make(chan struct{})
		go func() { scanEvery(time.Second, stopNSAuto, nsAuto.scan); close(nsAutoDone) }()
		defer func() { close(stopNSAuto); <-nsAutoDone }()
	}
	if o.pidFile != "" {
		if err := os.WriteFile(o.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return failed("--pid %s: %v", o.pidFile, err)
		}
		defer os.Remove(o.pidFile)
	}
	if !o.quiet {
		msg := fmt.Sprintf("berth as pasta: serving %s on %s, MTU %d, %s via %s", netnsPath, o.ifname, o.mtu, n.addr4, n.gw4)
		for _, note := range append(notes, notes2...) {
			msg += "\nberth as pasta: " + note
		}
		if status == nil || o.stderr {
			fmt.Fprintln(stderr, msg)
		}
	}
	if status != nil {
		io.WriteString(status, "ready\n")
		status.Close()
	}
	stop := make(chan struct{})
	defer close(stop)
	watchPath := netnsPath
	if o.noNetnsQuit {
		watchPath = ""
	}
	gone := nsGone(pid, watchPath, 200*time.Millisecond, stop)
	select {
	case <-sigs:
	case <-gone:
	}
	return exitOK
}

// The control socket of berth's pasta, for berth's pesto (its protocol is berth's own;
// the command line is pesto's): one JSON request per connection, ended by the client's
// shutdown, one JSON reply.
//
//	{"op": "add"|"delete", "proto": "tcp"|"udp", "spec": "0.0.0.0/8080:80"}
//	{"op": "add"|"delete", "proto": "tcp"|"udp", "ns": true, "spec": "8080:80"}
//	{"op": "list"}
//
// ("ns": pasta's -T and -U, from the namespace's loopback to the host's) and the reply
// {"forwards": ["8080:80/tcp", "ns 8080:80/tcp", ...]} or {"error": "..."}.

type pastaRequest struct {
	Op    string `json:"op"`
	Proto string `json:"proto,omitempty"`
	NS    bool   `json:"ns,omitempty"`
	Spec  string `json:"spec,omitempty"`
}

type pastaReply struct {
	Forwards []string `json:"forwards,omitempty"`
	Error    string   `json:"error,omitempty"`
}

type pastaControl struct {
	ports    portTable
	net      pastaNet
	ipv4Only bool
	ns       *nsForwarder // -T and -U
	mu       sync.Mutex
	have     []forward.PortMapping
	haveNS   []nsMapping
}

func (p *pastaControl) handle(req []byte) pastaReply {
	var r pastaRequest
	if err := json.Unmarshal(req, &r); err != nil {
		return pastaReply{Error: "bad request: " + err.Error()}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.Op {
	case "list":
	case "add", "delete":
		if r.Proto != "tcp" && r.Proto != "udp" {
			return pastaReply{Error: fmt.Sprintf("bad protocol %q", r.Proto)}
		}
		if r.NS {
			if err := p.changeNS(r); err != nil {
				return pastaReply{Error: err.Error()}
			}
			break
		}
		ms, notes, err := pastaForwards([]string{r.Spec}, r.Proto, p.net, p.ipv4Only)
		if err != nil {
			return pastaReply{Error: err.Error()}
		}
		if len(notes) > 0 {
			return pastaReply{Error: notes[0]}
		}
		for i, m := range ms {
			var err error
			if r.Op == "add" {
				err = p.ports.AddPort(m)
			} else {
				err = p.ports.RemovePort(m)
			}
			if err != nil {
				// All or nothing: undo what this request did.
				for _, u := range ms[:i] {
					if r.Op == "add" {
						p.ports.RemovePort(u)
					} else {
						p.ports.AddPort(u)
					}
				}
				return pastaReply{Error: err.Error()}
			}
		}
		for _, m := range ms {
			if r.Op == "add" {
				p.have = append(p.have, m)
			} else if i := slices.Index(p.have, m); i >= 0 {
				p.have = slices.Delete(p.have, i, i+1)
			}
		}
	default:
		return pastaReply{Error: fmt.Sprintf("unknown op %q", r.Op)}
	}
	out := []string{}
	for _, m := range p.have {
		out = append(out, m.String())
	}
	for _, m := range p.haveNS {
		out = append(out, m.String())
	}
	slices.Sort(out)
	return pastaReply{Forwards: out}
}

// changeNS adds or deletes the -T or -U forwards of r, all or none; p.mu is held.
func (p *pastaControl) changeNS(r pastaRequest) error {
	flag := map[string]string{"tcp": "-T", "udp": "-U"}[r.Proto]
	ms, auto, notes, err := pastaNSSpecs([]string{r.Spec}, r.Proto)
	switch {
	case err != nil:
		return err
	case len(auto) > 0:
		return fmt.Errorf("%s %s: berth scans for auto's ports only from the command line", flag, r.Spec)
	case len(notes) > 0:
		return errors.New(notes[0])
	case p.ns == nil:
		return errors.New("no namespace forwarder")
	}
	if r.Op == "add" {
		errs := p.ns.Add(ms)
		if err := errors.Join(errs...); err != nil {
			for i, e := range errs {
				if e == nil {
					p.ns.Remove(ms[i])
				}
			}
			return err
		}
		p.haveNS = append(p.haveNS, ms...)
		return nil
	}
	for _, m := range ms {
		if !slices.Contains(p.haveNS, m) {
			return fmt.Errorf("%s: not forwarded", m)
		}
	}
	for _, m := range ms {
		p.ns.Remove(m)
		i := slices.Index(p.haveNS, m)
		p.haveNS = slices.Delete(p.haveNS, i, i+1)
	}
	return nil
}

func (p *pastaControl) serve(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		// One at a time: pesto's requests are few, and each is quick.
		c.SetDeadline(time.Now().Add(apiTimeout))
		req, err := io.ReadAll(io.LimitReader(c, apiMaxRequest))
		if err == nil {
			b, _ := json.Marshal(p.handle(req))
			c.Write(append(b, '\n'))
		}
		c.Close()
	}
}

// pastaCall sends one request to a pasta control socket.
func pastaCall(path string, req pastaRequest) (pastaReply, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return pastaReply{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	b, _ := json.Marshal(req)
	if _, err := c.Write(b); err != nil {
		return pastaReply{}, err
	}
	c.(*net.UnixConn).CloseWrite()
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return pastaReply{}, fmt.Errorf("no reply from %s: %v", path, err)
	}
	var r pastaReply
	if err := json.Unmarshal(line, &r); err != nil {
		return pastaReply{}, fmt.Errorf("bad reply from %s: %v", path, err)
	}
	return r, nil
}
