package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/control"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/impair"
	"github.com/berthnet/berth/link/pcap"
	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/services"
	"github.com/berthnet/berth/vnet"
)

// demoUsage is the synopsis of berth demo (after "berth "); main.go's table lists the
// command.
const demoUsage = "demo [--clients N] [-4|-6] [--loss P] [--delay D] [--pcap FILE] [--json] [--no-color]"

// demoDoc is the text of berth help demo.
const demoDoc = `Runs two berth stacks in this process, joined by an in-memory link: a server host
with the classic services on their well-known ports (echo 7, daytime 13, http 80
over TCP; echo 7 and daytime 13 over UDP) and a client host whose clients all
talk to them at once. No root, no network: it takes a few seconds.

It shows how ports tell conversations apart:
  multiplexing    the source port the client's stack chose for each connection;
  demultiplexing  the server's socket table, where many connections share one
                  well-known port and differ by their peer's address and port;
  closed ports    what a TCP RST and an ICMP port unreachable look like;
  counters        segments, datagrams, RSTs and ICMP errors, named like the
                  kernel's (netstat -s).

  -c, --clients N   concurrent clients, each with one connection to every TCP
                    service and one UDP echo exchange (default 4, at most 64)
  -4, -6            IPv4 (default) or IPv6 addresses
  --loss P          drop P percent of the packets in each direction (0-90)
  --delay D         delay every packet by D in each direction (like 20ms, at most 2s)
  --pcap FILE       record the client's packets (pcap; tcpdump, Wireshark, tshark)
  --seed N          seed for the link impairment (default 1)
  --json            a machine-readable report instead of the text
  --no-color        no colour (colour is used only when stdout is a terminal and
                    NO_COLOR is unset)

Exit status 1 when an exchange failed (the report says which), 2 for bad flags.

Examples:
  berth demo
  berth demo --clients 16 --loss 5 --delay 10ms --pcap demo.pcap
  berth demo -6 --json`

// demoConfig is what the flags say.
type demoConfig struct {
	clients int
	ipv6    bool
	loss    float64 // percent
	delay   time.Duration
	seed    int64
	pcap    string
	json    bool
	color   bool
}

func parseDemo(args []string) (*demoConfig, bool, error) {
	cfg := &demoConfig{clients: 4, seed: 1}
	var v4, v6, noColor bool
	var clients, loss, delay, seed string
	specs := []flagSpec{
		{short: 'c', long: "clients", value: &clients, valueN: "N"},
		{short: '4', long: "ipv4", bool: &v4},
		{short: '6', long: "ipv6", bool: &v6},
		{long: "loss", value: &loss, valueN: "P"},
		{long: "delay", value: &delay, valueN: "D"},
		{long: "seed", value: &seed, valueN: "N"},
		{long: "pcap", value: &cfg.pcap, valueN: "FILE"},
		{long: "json", bool: &cfg.json},
		{long: "no-color", bool: &noColor},
	}
	pos, help, err := parseFlags(specs, args)
	if help || err != nil {
		return nil, help, err
	}
	if len(pos) > 0 {
		return nil, false, fmt.Errorf("unexpected argument %q", pos[0])
	}
	if v4 && v6 {
		return nil, false, errors.New("-4 and -6 exclude each other")
	}
	cfg.ipv6 = v6
	if clients != "" {
		n, err := strconv.Atoi(clients)
		if err != nil || n < 1 || n > 64 {
			return nil, false, fmt.Errorf("--clients %q: want a number from 1 to 64", clients)
		}
		cfg.clients = n
	}
	if loss != "" {
		p, err := strconv.ParseFloat(strings.TrimSuffix(loss, "%"), 64)
		if err != nil || p < 0 || p > 90 {
			return nil, false, fmt.Errorf("--loss %q: want a percentage from 0 to 90 (like 5 or 5%%)", loss)
		}
		cfg.loss = p
	}
	if delay != "" {
		d, err := time.ParseDuration(delay)
		if err != nil || d < 0 || d > 2*time.Second {
			return nil, false, fmt.Errorf("--delay %q: want a duration from 0 to 2s (like 20ms)", delay)
		}
		cfg.delay = d
	}
	if seed != "" {
		n, err := strconv.ParseInt(seed, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("--seed %q: want an integer", seed)
		}
		cfg.seed = n
	}
	cfg.color = !noColor && !cfg.json && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb" && isTerminal(stdout)
	return cfg, false, nil
}

// isTerminal reports whether w is a terminal (a tty answers TCGETS; a file or a pipe does
// not).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func runDemo(c *command, args []string) int {
	cfg, help, err := parseDemo(args)
	if help {
		return runHelp([]string{c.name}) // the same text as berth help NAME
	}
	if err != nil {
		return usageError(c, "%v", err)
	}
	ctx, stop := signalContext()
	defer stop()
	rep, err := demo(ctx, cfg, stdout)
	if err != nil {
		return fail(c.name, "%v", err)
	}
	if failed := rep.failures(); failed > 0 {
		return fail(c.name, "%d of %d exchanges failed (see the report)", failed, len(rep.Exchanges))
	}
	return exitOK
}

// demoReport is what the demo found; --json prints it.
type demoReport struct {
	Clients        int               `json:"clients"`
	Family         string            `json:"family"` // "ipv4", "ipv6"
	Client         netip.Addr        `json:"client"`
	Server         netip.Addr        `json:"server"`
	LossPercent    float64           `json:"loss_percent"`
	Delay          string            `json:"delay"`
	Pcap           string            `json:"pcap,omitempty"`
	Services       []demoService     `json:"services"`
	Exchanges      []demoExchange    `json:"exchanges"`
	Probes         []demoProbe       `json:"probes"`
	Accepted       []demoPeer        `json:"accepted"`  // connections the server's services accepted
	Datagrams      []demoPeer        `json:"udp_peers"` // peers the server's UDP services heard from
	ServerSockets  []control.Socket  `json:"server_sockets"`
	ClientSockets  []control.Socket  `json:"client_sockets"`
	ServerCounters []control.Counter `json:"server_counters"`
	ClientCounters []control.Counter `json:"client_counters"`
	ElapsedMS      int64             `json:"elapsed_ms"`
}

type demoService struct {
	Name    string `json:"name"`
	Network string `json:"network"`
	Port    uint16 `json:"port"`
}

// demoExchange is one client's conversation with one service.
type demoExchange struct {
	Client  int            `json:"client"`
	Service string         `json:"service"`
	Network string         `json:"network"`
	Local   netip.AddrPort `json:"local"`  // the source port the client's stack chose
	Remote  netip.AddrPort `json:"remote"` // the service's well-known port
	OK      bool           `json:"ok"`
	Result  string         `json:"result"`
	Error   string         `json:"error,omitempty"`
	Millis  float64        `json:"ms"`
}

// demoProbe is a connection attempt to a port nothing listens on.
type demoProbe struct {
	Network string         `json:"network"`
	Local   netip.AddrPort `json:"local,omitempty"`
	Remote  netip.AddrPort `json:"remote"`
	Error   string         `json:"error"`
	Errno   string         `json:"errno,omitempty"` // "ECONNREFUSED" when refused as expected
}

// demoPeer is what a server application saw: its socket and the peer.
type demoPeer struct {
	Service string         `json:"service"`
	Network string         `json:"network"`
	Local   netip.AddrPort `json:"local"`
	Peer    netip.AddrPort `json:"peer"`
}

func (r *demoReport) failures() int {
	n := 0
	for _, e := range r.Exchanges {
		if !e.OK {
			n++
		}
	}
	return n
}

// demoHosts are the two stacks, on a vnet network of their own.
type demoHosts struct {
	net            *vnet.Network
	client, server *berth.Stack
	capture        *os.File
	pw             *pcap.Writer
}

func (h *demoHosts) close() error {
	var errs []error
	if h.net != nil {
		errs = append(errs, h.net.Close()) // the client's stack, then the server's
		h.net = nil
	}
	if h.capture != nil {
		if h.pw != nil {
			errs = append(errs, h.pw.Err())
		}
		errs = append(errs, h.capture.Close())
		h.capture = nil
	}
	return errors.Join(errs...)
}

func demoAddrs(v6 bool) (client, server netip.Prefix) {
	if v6 {
		return netip.MustParsePrefix("fd00::1/64"), netip.MustParsePrefix("fd00::2/64")
	}
	return netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("10.0.0.2/24")
}

// newDemoHosts joins a client and a server stack with one vnet link (an MTU-1500 pipe),
// impaired in both directions if asked (the client's end with seed, the server's with
// seed+1), the client's end recorded to the capture file if asked.
func newDemoHosts(cfg *demoConfig) (*demoHosts, error) {
	h := &demoHosts{}
	var opts []vnet.Option
	if cfg.pcap != "" {
		f, err := os.Create(cfg.pcap)
		if err != nil {
			return nil, err
		}
		h.capture = f
		h.pw, err = pcap.NewWriter(f, 0)
		if err != nil {
			h.close()
			return nil, fmt.Errorf("%s: %w", cfg.pcap, err)
		}
		opts = append(opts, vnet.WithLinkWrap(func(host, _ string, ep link.Endpoint) link.Endpoint {
			if host == "client" {
				return pcap.Tap(ep, h.pw)
			}
			return ep
		}))
	}
	h.net = vnet.New(opts...)
	h.client, h.server = h.net.Host("client"), h.net.Host("server")
	ca, sa := demoAddrs(cfg.ipv6)
	lc := vnet.LinkConfig{MTU: demoMTU, A: []netip.Prefix{ca}, B: []netip.Prefix{sa}}
	if cfg.loss > 0 || cfg.delay > 0 {
		lc.Impair = &impair.Config{Seed: cfg.seed, Loss: cfg.loss / 100, Delay: cfg.delay}
	}
	if err := h.net.Link("client", "server", lc); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

// demoMTU is the link's MTU, Ethernet's.
const demoMTU = vnet.DefaultMTU

// serverLog collects what the server's applications saw.
type serverLog struct {
	mu        sync.Mutex
	accepted  []demoPeer
	datagrams []demoPeer
	seenUDP   map[demoPeer]bool
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// unmapped shows an IPv4 peer of a dual-stack socket as IPv4.
func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

type loggingListener struct {
	net.Listener
	service string
	log     *serverLog
}

func (l *loggingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.log.mu.Lock()
		l.log.accepted = append(l.log.accepted, demoPeer{Service: l.service, Network: "tcp",
			Local: unmapped(addrPortOf(c.LocalAddr())), Peer: unmapped(addrPortOf(c.RemoteAddr()))})
		l.log.mu.Unlock()
	}
	return c, err
}

type loggingPacketConn struct {
	net.PacketConn
	service string
	log     *serverLog
}

func (p *loggingPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := p.PacketConn.ReadFrom(b)
	if err == nil {
		peer := demoPeer{Service: p.service, Network: "udp", Local: unmapped(addrPortOf(p.LocalAddr())), Peer: unmapped(addrPortOf(from))}
		p.log.mu.Lock()
		if !p.log.seenUDP[peer] {
			p.log.seenUDP[peer] = true
			p.log.datagrams = append(p.log.datagrams, peer)
		}
		p.log.mu.Unlock()
	}
	return n, from, err
}

// demoServices are what the server runs; serviceByPort names a listen address's service.
var demoServices = []string{"echo", "daytime", "http"}

func serviceByPort(address, network string) string {
	_, p, _ := net.SplitHostPort(address)
	n, _ := strconv.Atoi(p)
	return ports.ServiceName(ports.Port(n), network)
}

// demo runs the demonstration and writes its report to w (text as it happens, or JSON
// at the end): the scenario is here, what it prints is demoWriter's (demo_render.go).
func demo(ctx context.Context, cfg *demoConfig, w io.Writer) (*demoReport, error) {
	start := time.Now()
	h, err := newDemoHosts(cfg)
	if err != nil {
		return nil, err
	}
	defer h.close()
	ca, sa := demoAddrs(cfg.ipv6)
	rep := &demoReport{Clients: cfg.clients, Family: "ipv4", Client: ca.Addr(), Server: sa.Addr(),
		LossPercent: cfg.loss, Delay: cfg.delay.String(), Pcap: cfg.pcap}
	if cfg.ipv6 {
		rep.Family = "ipv6"
	}
	seen := &serverLog{seenUDP: map[demoPeer]bool{}}
	sctx, stopServices := context.WithCancel(ctx)
	defer stopServices()
	srv, err := services.Start(sctx, services.Config{
		Services: demoServices,
		Listen: func(network, address string) (net.Listener, error) {
			l, err := h.server.Listen(sctx, network, address)
			if err != nil {
				return nil, err
			}
			return &loggingListener{Listener: l, service: serviceByPort(address, network), log: seen}, nil
		},
		ListenPacket: func(network, address string) (net.PacketConn, error) {
			pc, err := h.server.ListenPacket(sctx, network, address)
			if err != nil {
				return nil, err
			}
			return &loggingPacketConn{PacketConn: pc, service: serviceByPort(address, network), log: seen}, nil
		},
		Sockets: func() []string { return tableLines(control.SocketsOf(h.server)) },
		Logger:  quietLogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("starting the server's services: %w", err)
	}
	for _, s := range srv.Sockets() {
		rep.Services = append(rep.Services, demoService{Name: s.Service, Network: s.Network, Port: uint16(s.Port)})
	}
	out := newDemoWriter(w, cfg)
	out.intro(rep)

	// Every client opens its connections at once, and keeps them open until the socket
	// tables have been read: the server's table then shows them side by side.
	ectx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		holding []io.Closer
	)
	type job struct {
		client           int
		service, network string
	}
	var jobs []job
	for i := 1; i <= cfg.clients; i++ {
		for _, s := range []string{"echo", "daytime", "http"} {
			jobs = append(jobs, job{i, s, "tcp"})
		}
		jobs = append(jobs, job{i, "echo", "udp"})
	}
	rep.Exchanges = make([]demoExchange, len(jobs))
	for k, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			port, _ := registryPort(j.service, j.network)
			ex := demoExchange{Client: j.client, Service: j.service, Network: j.network,
				Remote: netip.AddrPortFrom(sa.Addr(), port)}
			t0 := time.Now()
			conn, err := exchange(ectx, h.client, &ex, cfg)
			ex.Millis = float64(time.Since(t0).Microseconds()) / 1000
			if err != nil {
				ex.Error = errorText(err)
			} else {
				ex.OK = true
			}
			if conn != nil {
				mu.Lock()
				holding = append(holding, conn)
				mu.Unlock()
			}
			rep.Exchanges[k] = ex
			out.exchange(ex)
		}()
	}
	wg.Wait()
	out.flushExchanges(rep)

	// Ports nothing listens on: TCP answers with a RST, UDP with ICMP port unreachable.
	rep.Probes = probeClosed(ectx, h.client, sa.Addr(), cfg)

	// The server may still be finishing handshakes and closes its clients started.
	settle(h.server, rep)
	rep.ServerSockets = control.SocketsOf(h.server)
	rep.ClientSockets = control.SocketsOf(h.client)
	seen.mu.Lock()
	rep.Accepted = slices.Clone(seen.accepted)
	rep.Datagrams = slices.Clone(seen.datagrams)
	seen.mu.Unlock()
	rep.ServerCounters = control.CountersOf(h.server)
	rep.ClientCounters = control.CountersOf(h.client)
	out.demux(rep)
	out.probes(rep)
	out.counters(rep)

	for _, c := range holding {
		c.Close()
	}
	stopServices()
	srv.Wait()
	if err := h.close(); err != nil && cfg.pcap != "" {
		return nil, fmt.Errorf("writing %s: %w", cfg.pcap, err)
	}
	rep.ElapsedMS = time.Since(start).Milliseconds()
	if err := out.end(rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// signalContext is done on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func registryPort(service, network string) (uint16, bool) {
	for _, s := range ports.LookupService(service, network) {
		if s.HasPort {
			return uint16(s.Port), true
		}
	}
	return 0, false
}

func errorText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

// exchange runs one client's conversation with one service and returns the connection,
// still open (nil for one that is over: daytime's server closes it).
func exchange(ctx context.Context, s *berth.Stack, ex *demoExchange, cfg *demoConfig) (io.Closer, error) {
	network := ex.Network
	if cfg.ipv6 {
		network += "6"
	} else {
		network += "4"
	}
	conn, err := s.DialContext(ctx, network, ex.Remote.String())
	if err != nil {
		return nil, err
	}
	ex.Local = unmapped(addrPortOf(conn.LocalAddr()))
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	msg := fmt.Sprintf("hello from client %d, port %d\n", ex.Client, ex.Local.Port())
	switch {
	case ex.Service == "echo" && ex.Network == "tcp":
		if _, err := io.WriteString(conn, msg); err != nil {
			return conn, err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil {
			return conn, err
		}
		if string(got) != msg {
			return conn, fmt.Errorf("echo sent back %q, not %q", got, msg)
		}
		ex.Result = fmt.Sprintf("echoed %d bytes", len(got))
	case ex.Service == "echo" && ex.Network == "udp":
		// UDP does not retransmit: the client does, when a datagram or its echo is lost.
		wait := max(300*time.Millisecond, 4*cfg.delay+100*time.Millisecond)
		buf := make([]byte, 1500)
		for try := 1; ; try++ {
			if _, err := io.WriteString(conn, msg); err != nil {
				return conn, err
			}
			conn.SetReadDeadline(time.Now().Add(wait))
			n, err := conn.Read(buf)
			if err == nil && string(buf[:n]) == msg {
				ex.Result = fmt.Sprintf("echoed %d bytes", n)
				if try > 1 {
					ex.Result += fmt.Sprintf(" (try %d)", try)
				}
				break
			}
			if err == nil {
				continue // not our echo: wait for it
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) || try == 5 || ctx.Err() != nil {
				return conn, err
			}
		}
	case ex.Service == "daytime":
		b, err := io.ReadAll(conn)
		conn.Close() // the server closed first: it holds TIME-WAIT
		if err != nil {
			return nil, err
		}
		ex.Result = strings.TrimSpace(string(b))
		return nil, nil
	case ex.Service == "http":
		req, _ := http.NewRequest("GET", "http://"+ex.Remote.String()+"/bytes/1000", nil)
		if err := req.Write(conn); err != nil {
			return conn, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return conn, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return conn, err
		}
		ex.Result = fmt.Sprintf("%s, %d bytes", resp.Status, n)
	}
	return conn, nil
}

// probeClosed tries TCP and UDP on the discard port, which the server does not serve.
func probeClosed(ctx context.Context, s *berth.Stack, server netip.Addr, cfg *demoConfig) []demoProbe {
	suffix := "4"
	if cfg.ipv6 {
		suffix = "6"
	}
	port, _ := registryPort("discard", "tcp")
	remote := netip.AddrPortFrom(server, port)
	var out []demoProbe
	for _, network := range []string{"tcp", "udp"} {
		p := demoProbe{Network: network, Remote: remote}
		pctx, cancel := context.WithTimeout(ctx, max(2*time.Second, 10*cfg.delay))
		conn, err := s.DialContext(pctx, network+suffix, remote.String())
		if err == nil {
			p.Local = unmapped(addrPortOf(conn.LocalAddr()))
			// The ICMP error for the first datagram is reported on the socket.
			wait := max(300*time.Millisecond, 4*cfg.delay+100*time.Millisecond)
			for try := 0; try < 5 && err == nil; try++ {
				conn.Write([]byte("anyone there?"))
				conn.SetReadDeadline(time.Now().Add(wait))
				_, err = conn.Read(make([]byte, 64))
				if errors.Is(err, os.ErrDeadlineExceeded) {
					err = nil // lost on the way: try again
				}
			}
			conn.Close()
			if err == nil {
				err = errors.New("no answer")
			}
		}
		cancel()
		p.Error = errorText(err)
		if errors.Is(err, syscall.ECONNREFUSED) {
			p.Errno = "ECONNREFUSED"
		}
		out = append(out, p)
	}
	return out
}

// settle waits (at most a second) until the server's table shows every accepted
// connection and the client has acknowledged what the server sent (a delayed ACK
// takes up to 200ms), so that the table shows the steady state.
func settle(server *berth.Stack, rep *demoReport) {
	want := 0
	for _, e := range rep.Exchanges {
		if e.OK && e.Network == "tcp" {
			want++
		}
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		n, unacked := 0, 0
		for _, s := range server.Sockets() {
			switch {
			case s.Protocol != "tcp" || s.State == "LISTEN":
			case s.State == "ESTAB" || s.State == "TIME-WAIT":
				n++
				unacked += s.SendQ
			default:
				unacked++ // handshake or close still under way
			}
		}
		if n >= want && unacked == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
