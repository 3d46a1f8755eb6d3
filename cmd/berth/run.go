package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/berthnet/berth/forward"
)

// runUsage is the synopsis of berth run (after "berth "); main.go's table lists the
// command.
const runUsage = "run [-p [HOSTIP:]HOSTPORT:NSPORT[/tcp|/udp]]... [--tap [--dhcp]] [--mtu N] [--no-ipv6] [--no-host-loopback] [--dns-upstream ADDR[:PORT]] [--control PATH|none] [--threads N] [--max-LIMIT N]... [--userns] -- COMMAND [ARGS...]"

// runDoc is the text of berth help run.
const runDoc = `Creates a network namespace, gives it a TUN device berth0 whose far side is berth,
runs COMMAND in it, and exits with COMMAND's exit status, removing what it made.
berth terminates every TCP and UDP flow the namespace opens and re-opens it with the
host's sockets (user-mode networking, like slirp4netns and pasta).

In the namespace: berth0 has 10.0.2.100/24 and fd00::100/64, MTU 65520 by default;
the gateways 10.0.2.2 and fd00::2 reach the host's loopback (unless
--no-host-loopback); 10.0.2.3 and fd00::3 forward DNS to the host's resolver (the
first nameserver of /etc/resolv.conf, or --dns-upstream), and the namespace's
/etc/resolv.conf names them.

  -p MAPPING          forward a host port into the namespace (repeatable); the
                      namespace sees the client's address (loopback clients as the
                      gateway)
  --control PATH      the control socket that berth ss, stats, capture and
                      forward add|rm|ls talk to (default: forward-PID.sock in
                      the control socket directory; none: no socket)
  --threads N         how many threads run berth's Go code at once (GOMAXPROCS;
                      0: every CPU). Default 1, unless GOMAXPROCS is set: the
                      forwarder's work is mostly system calls, which still run in
                      parallel, and one thread leaves the other CPUs to the
                      namespace's programs (on 2 CPUs, 5-60 % more throughput
                      than with both: docs/benchmarks.md)
  --userns            the rootless mode even as root
  --tap               berth0 is a TAP device (Ethernet) instead of TUN: berth
                      answers ARP and neighbour discovery for the gateways, sends
                      router advertisements (SLAAC) and runs a DHCP server, as for a
                      VM; the namespace is configured as in the TUN mode
  --dhcp              with --tap: only bring berth0 up, and leave its addresses
                      to a DHCP client in the namespace (udhcpc, dhclient) and to
                      SLAAC from berth's router advertisements
  --max-tcp-flows N, --max-udp-flows N, --max-connects N,
  --max-connects-per-dest N, --max-connect-backlog N, --max-echo-sessions N,
  --max-buffered BYTES
                      the forwarder's limits (defaults 16384, 4096, 1024, 128,
                      4096, 256, 268435456). At a flow or backlog limit a new
                      SYN is dropped (the namespace retransmits, as with a full
                      Linux SYN queue), a new UDP flow evicts an idle one, a new
                      ping session the least recently used one; a SYN beyond
                      the connect limits waits for its destination's turn; a copy
                      that finds the buffer budget spent waits for room. What
                      each refused is counted (berth stats, Forward*).

Root gets a named network namespace (ip netns). Any other user gets the rootless
mode, as slirp4netns and pasta do: a new user namespace (the caller's uid and gid
mapped to root) with its own network and mount namespaces, where COMMAND runs as
that root; berth itself stays outside with the caller's privileges, so -p cannot
bind host ports below net.ipv4.ip_unprivileged_port_start (1024). It needs user
namespaces (user.max_user_namespaces above 0) and a /dev/net/tun open to every
user (mode 0666, as udev sets it).

A COMMAND that is not found exits 127.`

// fwdFlags are the options run and attach share.
type fwdFlags struct {
	ports          []string
	mtu            int
	noIPv6         bool
	noHostLoopback bool
	dnsUpstream    string
	control        string
	threads        int
	tap, dhcp      bool
	limits         forward.Config // the Max* fields only; zero: forward's default
}

type stringList struct{ p *[]string }

func (l stringList) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}
func (l stringList) Set(s string) error { *l.p = append(*l.p, s); return nil }

func (ff *fwdFlags) register(fs *flag.FlagSet) {
	fs.Var(stringList{&ff.ports}, "p", "port mapping [HOSTIP:]HOSTPORT:NSPORT[/tcp|/udp] (repeatable)")
	fs.IntVar(&ff.mtu, "mtu", forward.DefaultMTU, "the namespace device's MTU")
	fs.BoolVar(&ff.noIPv6, "no-ipv6", false, "no IPv6 in the namespace")
	fs.BoolVar(&ff.noHostLoopback, "no-host-loopback", false, "the gateways do not reach the host's loopback")
	fs.StringVar(&ff.dnsUpstream, "dns-upstream", "", "DNS resolver for 10.0.2.3 (default: /etc/resolv.conf's first)")
	fs.StringVar(&ff.control, "control", "", "control socket path, or none")
	fs.IntVar(&ff.threads, "threads", 1, "GOMAXPROCS for berth (0: every CPU)")
	fs.BoolVar(&ff.tap, "tap", false, "a TAP device (Ethernet) instead of TUN")
	fs.BoolVar(&ff.dhcp, "dhcp", false, "with --tap: addresses by DHCP and SLAAC, not configured")
	l := &ff.limits
	fs.IntVar(&l.MaxTCPFlows, "max-tcp-flows", forward.DefaultMaxTCPFlows, "TCP flows at once")
	fs.IntVar(&l.MaxUDPFlows, "max-udp-flows", forward.DefaultMaxUDPFlows, "UDP flows at once")
	fs.IntVar(&l.MaxConnects, "max-connects", forward.DefaultMaxConnects, "host connects under way")
	fs.IntVar(&l.MaxConnectsPerDest, "max-connects-per-dest", forward.DefaultMaxConnectsPerDest, "host connects under way to one address and port")
	fs.IntVar(&l.MaxConnectBacklog, "max-connect-backlog", forward.DefaultMaxConnectBacklog, "SYNs waiting for a connect to one destination")
	fs.IntVar(&l.MaxEchoSessions, "max-echo-sessions", forward.DefaultMaxEchoSessions, "ping sessions at once")
	fs.Int64Var(&l.MaxBuffered, "max-buffered", forward.DefaultMaxBuffered, "bytes of copy buffers in use at once")
}

// applyThreads sets GOMAXPROCS from --threads, after fs parsed the arguments: the value
// given, every CPU for 0, and without the flag 1 unless the GOMAXPROCS environment
// variable chose. Measured on 2 CPUs (docs/benchmarks.md): a second thread made the
// forwarder slower, not faster, as the Go scheduler's idle threads spin looking for work
// on the CPU that iperf3 (or any program in the namespace) needs; slirp4netns and pasta
// are single-threaded too.
func (ff *fwdFlags) applyThreads(fs *flag.FlagSet) error {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "threads" })
	switch {
	case ff.threads < 0:
		return fmt.Errorf("--threads %d: want 0 (every CPU) or more", ff.threads)
	case !given && os.Getenv("GOMAXPROCS") != "":
	case ff.threads == 0:
		runtime.SetDefaultGOMAXPROCS()
	default:
		runtime.GOMAXPROCS(ff.threads)
	}
	return nil
}

// config turns the flags into a session configuration.
func (ff *fwdFlags) config(nsPath string) (forward.SessionConfig, error) {
	cfg := forward.SessionConfig{NSPath: nsPath, MTU: ff.mtu, TAP: ff.tap, DHCP: ff.dhcp}
	if ff.dhcp && !ff.tap {
		return cfg, errors.New("--dhcp needs --tap (a TUN device has no DHCP)")
	}
	for _, l := range []struct {
		name string
		v    int64
	}{
		{"max-tcp-flows", int64(ff.limits.MaxTCPFlows)}, {"max-udp-flows", int64(ff.limits.MaxUDPFlows)},
		{"max-connects", int64(ff.limits.MaxConnects)}, {"max-connects-per-dest", int64(ff.limits.MaxConnectsPerDest)},
		{"max-connect-backlog", int64(ff.limits.MaxConnectBacklog)}, {"max-echo-sessions", int64(ff.limits.MaxEchoSessions)},
		{"max-buffered", ff.limits.MaxBuffered},
	} {
		if l.v <= 0 {
			return cfg, fmt.Errorf("--%s %d: want 1 or more", l.name, l.v)
		}
	}
	cfg.Forward.MaxTCPFlows, cfg.Forward.MaxUDPFlows = ff.limits.MaxTCPFlows, ff.limits.MaxUDPFlows
	cfg.Forward.MaxConnects, cfg.Forward.MaxConnectsPerDest = ff.limits.MaxConnects, ff.limits.MaxConnectsPerDest
	cfg.Forward.MaxConnectBacklog, cfg.Forward.MaxEchoSessions = ff.limits.MaxConnectBacklog, ff.limits.MaxEchoSessions
	cfg.Forward.MaxBuffered = ff.limits.MaxBuffered
	cfg.Forward.NoIPv6 = ff.noIPv6
	cfg.Forward.NoHostLoopback = ff.noHostLoopback
	for _, p := range ff.ports {
		m, err := forward.ParsePortMapping(p)
		if err != nil {
			return cfg, err
		}
		cfg.Ports = append(cfg.Ports, m)
	}
	up := ff.dnsUpstream
	if up == "" {
		up = resolvConfServer("/etc/resolv.conf")
	}
	if up != "" {
		ap, err := netip.ParseAddrPort(up)
		if err != nil {
			a, err2 := netip.ParseAddr(strings.Trim(up, "[]"))
			if err2 != nil {
				return cfg, fmt.Errorf("--dns-upstream %q: %v", up, err)
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		cfg.Forward.DNSUpstream = ap
	}
	return cfg, nil
}

// resolvConfServer returns the first nameserver of a resolv.conf file, or "".
func resolvConfServer(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				return a.WithZone("").String()
			}
		}
	}
	return ""
}

func runRun(c *command, args []string) int {
	var ff fwdFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ff.register(fs)
	userns := fs.Bool("userns", false, "rootless (user namespace) mode, also as root")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return runHelp([]string{c.name}) // as every command: usage and help on stdout, exit 0
		}
		return usageError(c, "%v", err)
	}
	if err := ff.applyThreads(fs); err != nil {
		return usageError(c, "%v", err)
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usageError(c, "no COMMAND given")
	}
	name := fmt.Sprintf("berth-run-%d", os.Getpid())
	dns := []netip.Addr{forward.DefaultDNS4}
	if !ff.noIPv6 {
		dns = append(dns, forward.DefaultDNS6)
	}
	cfg, err := ff.config((&forward.Namespace{Name: name}).Path())
	if err != nil {
		return usageError(c, "%v", err)
	}
	// As a shell would, before any namespace exists: 127 for a COMMAND not found.
	if _, err := exec.LookPath(argv[0]); err != nil {
		fmt.Fprintf(stderr, "berth run: %v\n", err)
		return 127
	}
	// Signals from here on go to COMMAND (once it runs), never kill berth before it has
	// removed the namespace.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if *userns || os.Geteuid() != 0 {
		return runRootless(cfg, dns, argv, ff.control, sigs)
	}
	ns, err := forward.NewNamespace(name, dns)
	if err != nil {
		return fail("run", "%v", err)
	}
	defer ns.Delete()
	tap := sessionTap(&cfg, ff.control)
	if tap != nil {
		tap.Ethernet = cfg.TAP // captures record the TAP device's frames
	}
	sess, err := forward.Start(cfg)
	if err != nil {
		return fail("run", "%v", err)
	}
	defer sess.Close()
	if ff.control != "none" {
		stop, err := serveSessionControl(ff.control, sess, tap)
		if err != nil {
			return fail("run", "control socket %s: %v", ff.control, err)
		}
		defer stop()
	}

	cmd := ns.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	if err := cmd.Start(); err != nil {
		return fail("run", "%v", err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s) // COMMAND decides; its status becomes ours
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	return exitStatus(err)
}

// exitStatus is a finished command's status as a shell reports it: 128+N for signal N.
func exitStatus(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		fmt.Fprintf(stderr, "berth run: %v\n", err)
		return exitFailure
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}
