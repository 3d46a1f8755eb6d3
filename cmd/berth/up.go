package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/control"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/link/pcap"
	"github.com/berthnet/berth/link/tun"
	"github.com/berthnet/berth/metrics"
	"github.com/berthnet/berth/services"
)

// upUsage is the synopsis of berth up (after "berth "); main.go's table lists the
// command.
const upUsage = "up --tun NAME|--tap NAME --addr PREFIX [--addr PREFIX] [--host-addr PREFIX]... [--serve NAME,...] [--pcap FILE] [--mtu N] [--control PATH|none] [--metrics ADDR]"

func upHelp() string {
	var b strings.Builder
	b.WriteString(`Creates (or attaches to) the TUN device NAME and runs a berth stack on it with the
given addresses until SIGINT or SIGTERM, then closes everything and exits 0.

  --tun NAME         the TUN device (a pattern like "berth%d" lets the kernel pick)
  --tap NAME         a TAP device instead (Ethernet): berth answers ARP and
                     neighbour discovery for its addresses (link/ether)
  --addr PREFIX      berth's address on the device, with its prefix length
                     (10.7.0.2/24, fd07::2/64); repeat for more; at least one
  --host-addr PREFIX also configure the kernel's side of the device: add this address
                     and set the link up (needs the ip program); repeatable
  --serve NAME,...   classic services to serve on every address, ports from the IANA
                     registry ("all" for every one); repeatable
  --pcap FILE        record every packet on the device (pcap, LINKTYPE_RAW; with
                     --tap every frame, LINKTYPE_ETHERNET)
  --mtu N            set the device MTU (default: the device's)
  --control PATH     the control socket that berth ss, stats and capture read
                     (default: ` + control.DefaultPath("NAME") + `; none: no socket)
  --metrics ADDR     serve the counters and socket counts for Prometheus over HTTP
                     on ADDR (HOST:PORT) of the host's own network

Services:
`)
	for _, name := range services.Names() {
		socks, _ := services.Resolve(name)
		var ps []string
		for _, s := range socks {
			ps = append(ps, s.Port.String()+"/"+s.Network)
		}
		fmt.Fprintf(&b, "  %-9s %s\n", name, strings.Join(ps, ", "))
	}
	b.WriteString(`
The http service answers GET /bytes/N with N bytes of a fixed pattern (see package
services) and GET / with the list of open sockets.

Logs go to stderr (log/slog text), one line per start, stop and error. Exit status: 0
after a signal, 1 when something fails (the log says why), 2 for bad arguments.

Example:
  berth up --tun berth0 --addr 10.7.0.2/24 --host-addr 10.7.0.1/24 --serve echo,http`)
	return b.String()
}

// upConfig is what the flags of `berth up` say.
type upConfig struct {
	tun       string
	tap       bool // tun names a TAP device (--tap)
	addrs     []netip.Prefix
	hostAddrs []netip.Prefix
	serve     []string // service names, checked by services.Resolve, each once
	pcap      string
	mtu       int
	control   string // control socket path; "" the default, "none" no socket
	metrics   string // address for the Prometheus metrics, "" none
}

// prefixList is a repeatable flag of address prefixes.
type prefixList struct{ list *[]netip.Prefix }

func (p prefixList) String() string {
	if p.list == nil {
		return ""
	}
	var s []string
	for _, x := range *p.list {
		s = append(s, x.String())
	}
	return strings.Join(s, ",")
}

func (p prefixList) Set(v string) error {
	pfx, err := netip.ParsePrefix(v)
	if err != nil {
		if _, aerr := netip.ParseAddr(v); aerr == nil {
			return fmt.Errorf("%q has no prefix length (want ADDRESS/LENGTH, like 10.7.0.2/24)", v)
		}
		return fmt.Errorf("%q is not an address with a prefix length (like 10.7.0.2/24 or fd07::2/64)", v)
	}
	a := pfx.Addr()
	if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.Is4In6() {
		return fmt.Errorf("%q cannot be an interface address", v)
	}
	if a.Is4() && (pfx.Bits() < 31 && (a == pfx.Masked().Addr() || a == broadcast(pfx))) {
		return fmt.Errorf("%q is the network's or the broadcast address", v)
	}
	*p.list = append(*p.list, pfx)
	return nil
}

// broadcast returns the IPv4 broadcast address of p.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// serveList is the repeatable, comma-separated --serve flag.
type serveList struct{ names *[]string }

func (s serveList) String() string {
	if s.names == nil {
		return ""
	}
	return strings.Join(*s.names, ",")
}

func (s serveList) Set(v string) error {
	for _, n := range strings.Split(v, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
		case strings.EqualFold(n, "all"):
			for _, name := range services.Names() {
				s.add(name)
			}
		default:
			if _, err := services.Resolve(n); err != nil {
				return fmt.Errorf("unknown service %q (known: %s, or all)", n, strings.Join(services.Names(), ", "))
			}
			s.add(strings.ToLower(n))
		}
	}
	return nil
}

func (s serveList) add(name string) {
	if !slices.Contains(*s.names, name) {
		*s.names = append(*s.names, name)
	}
}

// parseUp parses and checks the arguments; every error is a usage error.
func parseUp(args []string) (*upConfig, error) {
	cfg := &upConfig{}
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // runUp prints the error and the usage line
	fs.StringVar(&cfg.tun, "tun", "", "TUN device name")
	tapName := fs.String("tap", "", "TAP device name")
	fs.Var(prefixList{&cfg.addrs}, "addr", "berth's address/prefix (repeatable)")
	fs.Var(prefixList{&cfg.hostAddrs}, "host-addr", "the kernel side's address/prefix (repeatable)")
	fs.Var(serveList{&cfg.serve}, "serve", "services to serve (comma-separated, repeatable)")
	fs.StringVar(&cfg.pcap, "pcap", "", "capture file")
	fs.IntVar(&cfg.mtu, "mtu", 0, "device MTU")
	fs.StringVar(&cfg.control, "control", "", "control socket path, or none")
	fs.StringVar(&cfg.metrics, "metrics", "", "serve Prometheus metrics on this address")
	if err := fs.Parse(args); err != nil {
		return nil, err // flag.ErrHelp for -h
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case cfg.tun != "" && *tapName != "":
		return nil, errors.New("--tun and --tap exclude each other")
	case *tapName != "":
		cfg.tun, cfg.tap = *tapName, true
	case cfg.tun == "":
		return nil, errors.New("--tun NAME is required (or --tap NAME)")
	}
	// IFNAMSIZ is 16 with the NUL; dev_valid_name rejects '/', ':' and white space.
	if len(cfg.tun) > 15 || cfg.tun == "." || cfg.tun == ".." || strings.ContainsAny(cfg.tun, "/: \t\n") {
		return nil, fmt.Errorf("--tun %q is not a valid device name (at most 15 characters, no '/', ':' or spaces)", cfg.tun)
	}
	if len(cfg.addrs) == 0 {
		return nil, errors.New("at least one --addr is required")
	}
	has6 := false
	for _, a := range cfg.addrs {
		has6 = has6 || a.Addr().Is6()
	}
	for _, h := range cfg.hostAddrs {
		for _, a := range cfg.addrs {
			if h.Addr() == a.Addr() {
				return nil, fmt.Errorf("--host-addr %s is also an --addr: the two sides need different addresses", h)
			}
		}
	}
	if cfg.mtu != 0 {
		lowest := 68 // RFC 791: every IPv4 host must take 68-byte datagrams unfragmented
		if has6 {
			lowest = 1280 // RFC 8200 §5
		}
		if cfg.mtu < lowest || cfg.mtu > 65535 {
			return nil, fmt.Errorf("--mtu %d out of range %d-65535", cfg.mtu, lowest)
		}
	}
	if cfg.metrics != "" {
		if _, _, err := net.SplitHostPort(cfg.metrics); err != nil {
			return nil, fmt.Errorf("--metrics %q: want HOST:PORT (127.0.0.1:9100, [::1]:9100, :9100)", cfg.metrics)
		}
	}
	return cfg, nil
}

func runUp(c *command, args []string) int {
	cfg, err := parseUp(args)
	if errors.Is(err, flag.ErrHelp) {
		return runHelp([]string{c.name}) // as every command: usage and help on stdout, exit 0
	}
	if err != nil {
		return usageError(c, "%s", err.Error())
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)
	go func() {
		select {
		case sig := <-sigc:
			log.Info("signal received, stopping", "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	return up(ctx, cfg, log)
}

// up runs the host until ctx is done and returns the exit status.
func up(ctx context.Context, cfg *upConfig, log *slog.Logger) int {
	open, kind := tun.Open, "TUN"
	if cfg.tap {
		open, kind = tun.OpenTAP, "TAP"
	}
	ep, err := open(cfg.tun, tun.Options{MTU: cfg.mtu})
	if err != nil {
		log.Error("cannot open "+kind+" device", "tun", cfg.tun, "err", err)
		return exitFailure
	}
	log.Info(kind+" device open", "tun", ep.Name(), "mtu", ep.MTU())
	var lep link.Endpoint = ep
	var capture *os.File
	var pw *pcap.Writer
	if cfg.pcap != "" {
		capture, err = os.Create(cfg.pcap)
		if err == nil {
			if cfg.tap {
				pw, err = pcap.NewWriter(capture, pcap.DefaultSnapLen+14, pcap.WithLinkType(pcap.LinkTypeEthernet))
			} else {
				pw, err = pcap.NewWriter(capture, 0)
			}
		}
		if err != nil {
			ep.Close()
			if capture != nil {
				capture.Close()
			}
			log.Error("cannot write the capture", "file", cfg.pcap, "err", err)
			return exitFailure
		}
		lep = pcap.Tap(ep, pw)
		log.Info("capture started", "file", cfg.pcap)
	}
	status := runStack(ctx, cfg, ep.Name(), lep, log) // closes lep
	if capture != nil {
		err := errors.Join(pw.Err(), capture.Close())
		if err != nil {
			log.Error("capture incomplete", "file", cfg.pcap, "err", err)
			status = exitFailure
		} else {
			log.Info("capture stopped", "file", cfg.pcap)
		}
	}
	log.Info("stopped", "tun", ep.Name(), "status", status)
	return status
}

// runStack runs a berth stack on ep (the device dev) until ctx is done; it closes ep.
func runStack(ctx context.Context, cfg *upConfig, dev string, ep link.Endpoint, log *slog.Logger) int {
	// Captures through the control socket (berth capture) see every packet of the device.
	tap := &control.Tap{Ethernet: cfg.tap}
	s := berth.New()
	defer s.Close()
	ep = tap.Wrap(ep)
	if cfg.tap {
		// The Ethernet layer over the TAP device's frames; captures record the frames.
		eth, err := ether.New(ep, ether.Config{Addrs: cfg.addrs, Counter: s.Net().Counters().Counter})
		if err != nil {
			ep.Close()
			log.Error("cannot start the Ethernet layer", "tap", dev, "err", err)
			return exitFailure
		}
		log.Info("Ethernet layer up", "tap", dev, "mac", eth.MAC().String())
		ep = eth
	}
	if err := s.AddInterface(dev, ep); err != nil {
		ep.Close()
		log.Error("cannot add the interface", "tun", dev, "err", err)
		return exitFailure
	}
	for _, a := range cfg.addrs {
		if err := s.AddAddress(dev, a); err != nil {
			log.Error("cannot add the address", "tun", dev, "addr", a.String(), "err", err)
			return exitFailure
		}
	}
	src := control.FromStack(s, tap)
	if cfg.control != "none" {
		path := cfg.control
		if path == "" {
			path = control.DefaultPath(dev)
		}
		cs, err := control.Listen(path, src, log)
		if err != nil {
			log.Error("cannot create the control socket", "path", path, "err", err)
			return exitFailure
		}
		defer func() {
			cs.Close()
			log.Info("control socket closed", "path", path)
		}()
		log.Info("control socket open", "path", path)
	}
	if cfg.metrics != "" {
		// On the host's own network (Go's net), where a Prometheus server can scrape it.
		ln, err := net.Listen("tcp", cfg.metrics)
		if err != nil {
			log.Error("cannot serve metrics", "addr", cfg.metrics, "err", err)
			return exitFailure
		}
		hs := &http.Server{Handler: metrics.Handler(src), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "addr", ln.Addr().String(), "err", err)
			}
		}()
		defer func() {
			hs.Close()
			<-served
			log.Info("metrics stopped", "addr", ln.Addr().String())
		}()
		log.Info("metrics serving", "addr", ln.Addr().String())
	}
	// The kernel's side last: once it is up, the kernel talks to the stack at once
	// (router and neighbour solicitations, MLD).
	if len(cfg.hostAddrs) > 0 {
		if err := configureHost(ctx, dev, cfg.hostAddrs); err != nil {
			log.Error("cannot configure the host side", "tun", dev, "err", err)
			return exitFailure
		}
		log.Info("host side configured", "tun", dev, "host-addr", joinPrefixes(cfg.hostAddrs))
	}
	srv, err := services.Start(ctx, services.Config{
		Services: cfg.serve,
		Listen: func(network, address string) (net.Listener, error) {
			return s.Listen(ctx, network, address)
		},
		ListenPacket: func(network, address string) (net.PacketConn, error) {
			return s.ListenPacket(ctx, network, address)
		},
		Sockets: func() []string { return socketLines(s) },
		Logger:  log,
	})
	if err != nil {
		return exitFailure // services logged it
	}
	log.Info("up", "tun", dev, "addr", joinPrefixes(cfg.addrs), "serve", strings.Join(cfg.serve, ","))
	<-ctx.Done()
	status := exitOK
	if err := srv.Wait(); err != nil {
		status = exitFailure // each failure was logged when it happened
	}
	return status
}

// configureHost gives the kernel's side of dev its addresses and sets the link up, with
// the ip program (iproute2).
func configureHost(ctx context.Context, dev string, addrs []netip.Prefix) error {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("--host-addr needs the ip program (iproute2): %w", err)
	}
	run := func(args ...string) error {
		out, err := exec.CommandContext(ctx, ip, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	for _, a := range addrs {
		args := []string{"addr", "add", a.String(), "dev", dev}
		if a.Addr().Is6() {
			// The stack does not answer duplicate address detection for the kernel's
			// address: skip it so the address is usable at once.
			args = append(args, "nodad")
		}
		if err := run(args...); err != nil {
			return err
		}
	}
	return run("link", "set", "dev", dev, "up")
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// socketLines formats the stack's sockets for the http service's page, like ss.
func socketLines(s *berth.Stack) []string {
	var out []string
	for _, si := range s.Sockets() {
		remote := "*"
		if si.Remote.IsValid() {
			remote = si.Remote.String()
		}
		out = append(out, fmt.Sprintf("%-4s %-11s %-45s %s", si.Protocol, si.State, si.Local, remote))
	}
	return out
}
