package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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
	"github.com/berthnet/berth/link/pipe"
	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/services"
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

// demoHosts are the two stacks and their link.
type demoHosts struct {
	client, server *berth.Stack
	capture        *os.File
	pw             *pcap.Writer
}

func (h *demoHosts) close() error {
	var errs []error
	if h.client != nil {
		errs = append(errs, h.client.Close())
		h.client = nil
	}
	if h.server != nil {
		errs = append(errs, h.server.Close())
		h.server = nil
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

// newDemoHosts joins a client and a server stack with a pipe, impaired in both
// directions if asked, the client's end recorded to the capture file if asked.
func newDemoHosts(cfg *demoConfig) (*demoHosts, error) {
	h := &demoHosts{client: berth.New(), server: berth.New()}
	pa, pb := pipe.New(1500)
	var ea, eb link.Endpoint = pa, pb
	if cfg.loss > 0 || cfg.delay > 0 {
		ic := impair.Config{Seed: cfg.seed, Loss: cfg.loss / 100, Delay: cfg.delay}
		ea = impair.New(pa, ic)
		ic.Seed++
		eb = impair.New(pb, ic)
	}
	if cfg.pcap != "" {
		f, err := os.Create(cfg.pcap)
		if err != nil {
			ea.Close()
			eb.Close()
			h.close()
			return nil, err
		}
		h.capture = f
		h.pw, err = pcap.NewWriter(f, 0)
		if err != nil {
			ea.Close()
			eb.Close()
			h.close()
			return nil, fmt.Errorf("%s: %w", cfg.pcap, err)
		}
		ea = pcap.Tap(ea, h.pw)
	}
	ca, sa := demoAddrs(cfg.ipv6)
	err := h.client.AddInterface("eth0", ea)
	if err != nil {
		ea.Close()
		eb.Close()
	} else if err = h.server.AddInterface("eth0", eb); err != nil {
		eb.Close()
	}
	if err == nil {
		err = errors.Join(h.client.AddAddress("eth0", ca), h.server.AddAddress("eth0", sa))
	}
	if err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

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
// at the end).
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
	out.end(rep)
	if cfg.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// signalContext is done on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// tableLines is the socket table as lines, for the http service's page.
func tableLines(socks []control.Socket) []string {
	var b strings.Builder
	writeSocketTable(&b, sortSockets(socks), ssOptions{all: true, numeric: true}, nil)
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
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

// demoWriter prints the text report; with --json it prints nothing.
type demoWriter struct {
	w     io.Writer
	cfg   *demoConfig
	mu    sync.Mutex
	p     *palette
	bold  func(string) string
	dim   func(string) string
	red   func(string) string
	green func(string) string
}

func newDemoWriter(w io.Writer, cfg *demoConfig) *demoWriter {
	d := &demoWriter{w: w, cfg: cfg}
	plain := func(s string) string { return s }
	d.bold, d.dim, d.red, d.green = plain, plain, plain, plain
	if cfg.color {
		sgr := func(code string) func(string) string {
			return func(s string) string { return "\x1b[" + code + "m" + s + "\x1b[0m" }
		}
		d.bold, d.dim, d.red, d.green = sgr("1"), sgr("2"), sgr("31"), sgr("32")
		d.p = &palette{header: sgr("1"), state: sgr("32"), service: sgr("36")}
	}
	if cfg.json {
		d.w = io.Discard
	}
	return d
}

func (d *demoWriter) printf(format string, a ...any) { fmt.Fprintf(d.w, format, a...) }

func (d *demoWriter) intro(rep *demoReport) {
	link := "no impairment"
	if d.cfg.loss > 0 || d.cfg.delay > 0 {
		link = fmt.Sprintf("%g%% loss and %v delay each way", d.cfg.loss, d.cfg.delay)
	}
	fam := "IPv4"
	if d.cfg.ipv6 {
		fam = "IPv6"
	}
	d.printf("%s %s and a server on an in-process %s network\n", d.bold("berth demo:"), plural(d.cfg.clients, "client"), fam)
	d.printf("  link   one in-memory pipe, MTU 1500, %s\n", link)
	var svcs []string
	for _, s := range rep.Services {
		svcs = append(svcs, fmt.Sprintf("%s %d/%s", s.Name, s.Port, s.Network))
	}
	head := fmt.Sprintf("  server %s serves ", ssAddr(rep.Server, netip.Addr{}))
	d.printf("%s%s\n", head, wrap(strings.Join(svcs, ", "), 79-len(head), len(head)))
	d.printf("  client %s runs %s\n", ssAddr(rep.Client, netip.Addr{}), plural(d.cfg.clients, "client"))
	if d.cfg.pcap != "" {
		d.printf("  capture of the client's packets: %s\n", d.cfg.pcap)
	}
	d.printf("\n%s the client's stack picked an ephemeral source port for\n", d.bold("Multiplexing:"))
	d.printf("every connection and exchange, so they all share the address %s:\n", ssAddr(rep.Client, netip.Addr{}))
	d.printf("  %-6s %-12s %-15s    %-13s %s\n", "client", "service", "source", "destination", "result")
}

// plural is "1 client", "2 clients".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// wrap breaks s at ", " to fit width, indenting continuation lines by indent.
func wrap(s string, width, indent int) string {
	var b strings.Builder
	line := 0
	for i, part := range strings.Split(s, ", ") {
		if i > 0 {
			b.WriteString(",")
			line++
			if line+len(part)+1 > width {
				b.WriteString("\n" + strings.Repeat(" ", indent))
				line = 0
			} else {
				b.WriteString(" ")
				line++
			}
		}
		b.WriteString(part)
		line += len(part)
	}
	return b.String()
}

// exchange prints one finished exchange, as it happens.
func (d *demoWriter) exchange(e demoExchange) {
	d.mu.Lock()
	defer d.mu.Unlock()
	result := e.Result
	if !e.OK {
		result = "FAILED: " + e.Error
	}
	if r := []rune(result); len(r) > 25 {
		result = string(r[:24]) + "…"
	}
	if !e.OK {
		result = d.red(result)
	}
	src := "-"
	if e.Local.IsValid() {
		a, p := ssAddr(e.Local.Addr(), netip.Addr{}), strconv.Itoa(int(e.Local.Port()))
		src = a + ":" + d.bold(p) + strings.Repeat(" ", max(0, 15-len(a)-1-len(p)))
	} else {
		src = fmt.Sprintf("%-15s", src)
	}
	dst := ssAddr(e.Remote.Addr(), netip.Addr{}) + ":" + strconv.Itoa(int(e.Remote.Port()))
	d.printf("  %-6d %-12s %s -> %-13s %s\n", e.Client, e.Service+"/"+e.Network, src, dst, result)
}

func (d *demoWriter) flushExchanges(rep *demoReport) {
	ports := map[uint16]bool{}
	n := 0
	for _, e := range rep.Exchanges {
		if e.Local.IsValid() {
			ports[e.Local.Port()] = true
			n++
		}
	}
	d.printf("  %d connections and exchanges from %d different source ports.\n", n, len(ports))
}

func (d *demoWriter) demux(rep *demoReport) {
	d.printf("\n%s the server's stack told them apart by their socket\n", d.bold("Demultiplexing:"))
	d.printf("pairs (local address:port, peer address:port). Its socket table (ss -tuan):\n")
	writeSocketTable(d.w, sortSockets(rep.ServerSockets), ssOptions{all: true}, d.p)
	// One line per service port: how many peers share it.
	type key struct {
		network string
		port    uint16
	}
	peers := map[key][]string{}
	var keys []key
	for _, a := range append(slices.Clone(rep.Accepted), rep.Datagrams...) {
		k := key{a.Network, a.Local.Port()}
		if _, ok := peers[k]; !ok {
			keys = append(keys, k)
		}
		peers[k] = append(peers[k], strconv.Itoa(int(a.Peer.Port())))
	}
	slices.SortFunc(keys, func(a, b key) int {
		if a.network != b.network {
			return strings.Compare(a.network, b.network) // tcp, then udp
		}
		return int(a.port) - int(b.port)
	})
	d.printf("\n")
	for _, k := range keys {
		name := ports.ServiceName(ports.Port(k.port), k.network)
		what := "connections"
		if k.network == "udp" {
			what = "peers on one socket"
		}
		line := fmt.Sprintf("  %s %d/%s: %d %s, from ports %s", name, k.port, k.network, len(peers[k]), what, strings.Join(peers[k], " "))
		d.printf("%s\n", wrapWords(line, 80, 6))
	}
}

// wrapWords breaks a line at spaces to fit width, indenting continuation lines.
func wrapWords(s string, width, indent int) string {
	var b strings.Builder
	col := 0
	for i, w := range strings.Split(s, " ") {
		if i > 0 {
			if col+1+len(w) > width {
				b.WriteString("\n" + strings.Repeat(" ", indent))
				col = indent
			} else {
				b.WriteString(" ")
				col++
			}
		}
		b.WriteString(w)
		col += len(w)
	}
	return b.String()
}

func (d *demoWriter) probes(rep *demoReport) {
	d.printf("\n%s nothing listens on %s port %d (discard):\n", d.bold("Closed ports:"), rep.Server, rep.Probes[0].Remote.Port())
	for _, p := range rep.Probes {
		how := "a TCP RST"
		if p.Network == "udp" {
			how = "ICMP port unreachable"
		}
		res := p.Error
		if p.Errno == "ECONNREFUSED" {
			res = d.green(res) + " (the server's stack sent " + how + ")"
		}
		d.printf("  %s: %s\n", p.Network, res)
	}
}

// demoCounterNames are the counters the text report shows, per family.
func demoCounterNames(v6 bool) []string {
	ip, icmp := "Ip", "Icmp"
	if v6 {
		ip, icmp = "Ip6", "Icmp6"
	}
	return []string{ip + "InReceives", ip + "OutRequests",
		"TcpActiveOpens", "TcpPassiveOpens", "TcpInSegs", "TcpOutSegs", "TcpRetransSegs",
		"TcpAttemptFails", "TcpOutRsts", "TcpCurrEstab",
		"UdpInDatagrams", "UdpOutDatagrams", "UdpNoPorts",
		icmp + "InDestUnreachs", icmp + "OutDestUnreachs"}
}

func (d *demoWriter) counters(rep *demoReport) {
	get := func(cs []control.Counter) map[string]uint64 {
		m := map[string]uint64{}
		for _, c := range cs {
			m[c.Name] = c.Value
		}
		return m
	}
	cl, sv := get(rep.ClientCounters), get(rep.ServerCounters)
	d.printf("\n%s (named like the kernel's; berth stats shows them all):\n", d.bold("Counters"))
	d.printf("  %-24s %10s %10s\n", "", "client", "server")
	for _, n := range demoCounterNames(d.cfg.ipv6) {
		d.printf("  %-24s %10d %10d\n", n, cl[n], sv[n])
	}
}

func (d *demoWriter) end(rep *demoReport) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "\nDone in %v.", time.Duration(rep.ElapsedMS)*time.Millisecond)
	if n := rep.failures(); n > 0 {
		fmt.Fprintf(&b, " %s", d.red(fmt.Sprintf("%d exchanges failed.", n)))
	}
	if rep.Pcap != "" {
		fmt.Fprintf(&b, " Capture: %s (tshark -r %s).", rep.Pcap, rep.Pcap)
	}
	d.printf("%s\n", b.String())
}
