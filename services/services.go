// Package services implements the classic Internet test services — echo (RFC 862), discard
// (RFC 863), daytime (RFC 867), chargen (RFC 864) — and a small http service, written
// against net.Listener, net.PacketConn and net.Conn only, so that they run over berth and
// over Go's net package alike.
//
// Serve (or Start) runs a set of them by name; the ports come from the IANA registry
// (package ports): "echo" is 7/tcp and 7/udp, "http" is 80/tcp.
package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berthnet/berth/ports"
)

// serviceDef says which transports a service uses: TCP and UDP where its RFC defines both.
type serviceDef struct {
	name     string
	networks []string
}

var defs = []serviceDef{
	{"echo", []string{"tcp", "udp"}},    // RFC 862
	{"discard", []string{"tcp", "udp"}}, // RFC 863
	{"daytime", []string{"tcp", "udp"}}, // RFC 867
	{"chargen", []string{"tcp", "udp"}}, // RFC 864
	{"http", []string{"tcp"}},           // RFC 9110 (over TCP, RFC 9112)
}

// Names returns the names of the services this package serves, in a fixed order.
func Names() []string {
	out := make([]string, len(defs))
	for i, d := range defs {
		out[i] = d.name
	}
	return out
}

// ErrUnknown is matched (errors.Is) by Resolve's error for a name it does not serve.
var ErrUnknown = errors.New("unknown service")

// Socket is one socket a service listens on.
type Socket struct {
	Service string     // "echo"
	Network string     // "tcp" or "udp"
	Port    ports.Port // from the IANA registry
}

// String formats s like the registry: "echo 7/tcp".
func (s Socket) String() string {
	return s.Service + " " + s.Port.String() + "/" + s.Network
}

// Resolve maps service names (case-insensitive; duplicates are served once) to the sockets
// they listen on, looking each port up in the IANA registry. A name this package does not
// serve is an error naming it, matching ErrUnknown.
func Resolve(names ...string) ([]Socket, error) {
	var out []Socket
	seen := map[string]bool{}
	for _, name := range names {
		key := strings.ToLower(strings.TrimSpace(name))
		i := slices.IndexFunc(defs, func(d serviceDef) bool { return d.name == key })
		if i < 0 {
			return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(Names(), ", "))
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		for _, network := range defs[i].networks {
			p, ok := registryPort(key, network)
			if !ok {
				// Only if the embedded registry lost the entry: a build problem.
				return nil, fmt.Errorf("service %q has no %s port in the IANA registry", key, network)
			}
			out = append(out, Socket{Service: key, Network: network, Port: p})
		}
	}
	return out, nil
}

func registryPort(name, network string) (ports.Port, bool) {
	for _, s := range ports.LookupService(name, network) {
		if s.HasPort && s.Port == s.PortHigh {
			return s.Port, true
		}
	}
	return 0, false
}

// Config says what to serve and how to open sockets.
type Config struct {
	// Services are the names to serve (see Names); Resolve's rules apply.
	Services []string
	// Listen and ListenPacket open the sockets, with networks "tcp" and "udp" and
	// addresses "host:port", like net.Listen and net.ListenPacket (the defaults).
	Listen       func(network, address string) (net.Listener, error)
	ListenPacket func(network, address string) (net.PacketConn, error)
	// Host is the host part of every listen address; "" means all addresses.
	Host string
	// Ports overrides the registry's port for some services (both TCP and UDP); 0 lets
	// Listen pick one, which Server.Addr then reports. For tests.
	Ports map[string]ports.Port
	// Now is daytime's clock; nil means time.Now.
	Now func() time.Time
	// Rand draws the lengths of UDP chargen answers; nil means a random seed. It is used
	// from one goroutine only.
	Rand *rand.Rand
	// Sockets lists the open sockets for the http service's page; nil leaves it out.
	Sockets func() []string
	// Logger gets one line per socket started and stopped and per service error;
	// nil means slog.Default(). Per-connection errors are logged at debug level.
	Logger *slog.Logger
	// IdleTimeout ends a TCP connection whose client has sent nothing for this long:
	// between HTTP requests (http.Server.IdleTimeout), or while echo or discard wait for
	// data. WriteTimeout ends one whose client has taken none of a write for this long
	// (a client that stops reading chargen, echo or GET /bytes/N). 0 means the defaults
	// DefaultIdleTimeout and DefaultWriteTimeout; negative means no limit.
	IdleTimeout, WriteTimeout time.Duration
	// MaxConns is how many connections each TCP service serves at once (default
	// DefaultMaxConns; negative means no limit). At the limit a service stops
	// accepting until one closes: the stack's backlog holds the rest.
	MaxConns int
}

// Server is a running set of services.
type Server struct {
	log     *slog.Logger
	runners []*runner
	wg      sync.WaitGroup
	stop    context.CancelFunc
	once    sync.Once
	errMu   sync.Mutex
	errs    []error
	done    chan struct{}
}

// runner is one open socket and the goroutine serving it.
type runner struct {
	sock  Socket
	addr  net.Addr
	serve func() error // returns when the socket fails or is closed
	close func()       // closes the socket and every connection; waits for handlers
	abort func()       // closes the socket of a runner that never served
}

// Serve serves cfg's services until ctx is done, then closes every socket and connection
// and returns when all its goroutines have ended. The error is from opening the sockets,
// or the errors of services that failed while running (each also logged).
func Serve(ctx context.Context, cfg Config) error {
	s, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Wait()
}

// Start opens every socket of cfg's services and serves them in the background until ctx
// is done or Close is called. If a socket cannot be opened, Start closes those it opened
// and returns the error.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	socks, err := Resolve(cfg.Services...)
	if err != nil {
		return nil, err
	}
	if cfg.Listen == nil {
		cfg.Listen = net.Listen
	}
	if cfg.ListenPacket == nil {
		cfg.ListenPacket = net.ListenPacket
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{log: log, done: make(chan struct{})}
	for _, sock := range socks {
		port := sock.Port
		if p, ok := cfg.Ports[sock.Service]; ok {
			port = p
		}
		addr := net.JoinHostPort(cfg.Host, strconv.Itoa(int(port)))
		r, err := open(&cfg, sock, addr, log)
		if err != nil {
			for _, r := range s.runners {
				r.abort()
			}
			log.Error("service error", "service", sock.Service, "network", sock.Network, "addr", addr, "err", err)
			return nil, fmt.Errorf("%s: %w", sock, err)
		}
		s.runners = append(s.runners, r)
	}
	ctx, s.stop = context.WithCancel(ctx)
	for _, r := range s.runners {
		log.Info("service started", "service", r.sock.Service, "network", r.sock.Network, "addr", r.addr.String())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := r.serve(); err != nil {
				log.Error("service error", "service", r.sock.Service, "network", r.sock.Network, "addr", r.addr.String(), "err", err)
				s.errMu.Lock()
				s.errs = append(s.errs, fmt.Errorf("%s: %w", r.sock, err))
				s.errMu.Unlock()
			}
		}()
	}
	go func() {
		<-ctx.Done()
		s.shutdown()
	}()
	return s, nil
}

// Addr returns the local address of the service's socket for network ("tcp", "udp"),
// or nil if it has none.
func (s *Server) Addr(service, network string) net.Addr {
	for _, r := range s.runners {
		if r.sock.Service == service && r.sock.Network == network {
			return r.addr
		}
	}
	return nil
}

// Sockets returns the sockets being served, in Resolve's order.
func (s *Server) Sockets() []Socket {
	out := make([]Socket, len(s.runners))
	for i, r := range s.runners {
		out[i] = r.sock
	}
	return out
}

func (s *Server) shutdown() {
	s.once.Do(func() {
		for _, r := range s.runners {
			r.close()
		}
		s.wg.Wait()
		for _, r := range s.runners {
			s.log.Info("service stopped", "service", r.sock.Service, "network", r.sock.Network, "addr", r.addr.String())
		}
		close(s.done)
	})
}

// Close stops every service, closing their sockets and connections, and waits until all
// goroutines have ended. It returns what Wait returns.
func (s *Server) Close() error {
	s.stop()
	s.shutdown()
	return s.Wait()
}

// Wait blocks until the server has stopped (its context done, or Close) and returns the
// errors of the services that failed while running, joined.
func (s *Server) Wait() error {
	<-s.done
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return errors.Join(s.errs...)
}

func open(cfg *Config, sock Socket, addr string, log *slog.Logger) (*runner, error) {
	attrs := []any{"service", sock.Service, "network", sock.Network}
	if sock.Network == "udp" {
		pc, err := cfg.ListenPacket("udp", addr)
		if err != nil {
			return nil, err
		}
		var reply func(req []byte) []byte
		switch sock.Service {
		case "echo": // RFC 862: send back the data of each datagram
			reply = func(req []byte) []byte { return req }
		case "discard": // RFC 863: throw it away
			reply = func([]byte) []byte { return nil }
		case "daytime": // RFC 867: answer any datagram with the date and time
			reply = func([]byte) []byte { return []byte(DaytimeText(cfg.Now())) }
		case "chargen": // RFC 864: answer with 0-512 characters
			rnd := cfg.Rand
			reply = func([]byte) []byte { return chargenDatagram(rnd) }
		default:
			pc.Close()
			return nil, fmt.Errorf("no UDP service %q", sock.Service)
		}
		return &runner{
			sock:  sock,
			addr:  pc.LocalAddr(),
			serve: func() error { return servePacket(pc, reply, log.With(attrs...)) },
			close: func() { pc.Close() },
			abort: func() { pc.Close() },
		}, nil
	}

	ln, err := cfg.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	idle := orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	write := orDefault(cfg.WriteTimeout, DefaultWriteTimeout)
	maxConns := cfg.MaxConns
	if maxConns == 0 {
		maxConns = DefaultMaxConns
	}
	ln = limit(ln, maxConns)
	if sock.Service == "http" {
		// http.Server.Close does not wait for the connections' goroutines: count them
		// through ConnState so that close can.
		var conns sync.WaitGroup
		served := make(chan struct{})
		srv := &http.Server{
			Handler:           HTTPHandler(cfg.Sockets),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       idle,
			ErrorLog:          slog.NewLogLogger(log.With(attrs...).Handler(), slog.LevelDebug),
			ConnState: func(_ net.Conn, st http.ConnState) {
				switch st {
				case http.StateNew:
					conns.Add(1)
				case http.StateClosed, http.StateHijacked:
					conns.Done()
				}
			},
		}
		return &runner{
			sock: sock,
			addr: ln.Addr(),
			serve: func() error {
				defer close(served)
				// The server sets read deadlines itself; writes get a stall bound per
				// write, not one for the whole response (a /bytes/N stream may be long).
				if err := srv.Serve(guardListener{ln, 0, write, false}); !errors.Is(err, http.ErrServerClosed) {
					return err
				}
				return nil
			},
			// Close (not Shutdown): a /bytes/N stream may be 16 GiB long; stopping means
			// stopping now. It closes the listener and every connection.
			close: func() {
				srv.Close()
				<-served // no StateNew after Serve has returned
				conns.Wait()
			},
			abort: func() { ln.Close() },
		}, nil
	}
	var handle func(net.Conn) error
	switch sock.Service {
	case "echo":
		handle = EchoConn
	case "discard":
		handle = DiscardConn
	case "daytime":
		handle = func(c net.Conn) error { return DaytimeConn(c, cfg.Now()) }
	case "chargen":
		handle = ChargenConn
	default:
		ln.Close()
		return nil, fmt.Errorf("no TCP service %q", sock.Service)
	}
	ss := &streamServer{ln: guardListener{ln, idle, write, true}, handle: handle, log: log.With(attrs...), conns: map[net.Conn]struct{}{}}
	return &runner{sock: sock, addr: ln.Addr(), serve: ss.serve, close: ss.close, abort: func() { ln.Close() }}, nil
}

// streamServer accepts connections and runs a handler on each, tracking them so that
// close can end them all.
type streamServer struct {
	ln     net.Listener
	handle func(net.Conn) error
	log    *slog.Logger

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func (s *streamServer) serve() error {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !retryable(err) {
				return err
			}
			// Out of descriptors or memory, or a connection aborted before Accept:
			// wait and go on, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Debug("accept", "err", err, "retry", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			if err := s.handle(c); err != nil && !clientGone(err) {
				s.log.Debug("connection error", "remote", c.RemoteAddr().String(), "err", err)
			}
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func retryable(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

func (s *streamServer) close() {
	s.mu.Lock()
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// servePacket answers each datagram with reply(datagram), if not empty, until pc is
// closed. Datagrams are handled one at a time: UDP services keep no state (RFC 862, 864).
func servePacket(pc net.PacketConn, reply func([]byte) []byte, log *slog.Logger) error {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
				errors.Is(err, syscall.ENETUNREACH) {
				// An ICMP error for an earlier answer, reported on this socket: not ours
				// to fix, and the socket still works.
				continue
			}
			return err
		}
		out := reply(buf[:n])
		if out == nil {
			continue
		}
		if _, err := pc.WriteTo(out, from); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// One failed answer (no route, buffer full) does not stop the service.
			log.Debug("reply", "remote", from.String(), "err", err)
		}
	}
}
