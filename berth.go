// Package berth is a userspace TCP/IP stack for Go in which ports are first class. A Stack
// has interfaces (in-memory pipes, TUN devices, links the application drives), addresses
// and routes, and offers the standard library's socket API on top: Listen, ListenPacket
// and DialContext return net.Listener, net.PacketConn and net.Conn values (*TCPListener,
// *UDPConn, *TCPConn with the methods of their package net counterparts) whose errors are
// shaped like package net's.
//
//	s := berth.New()
//	defer s.Close()
//	pc, err := s.ListenPacket(ctx, "udp", "127.0.0.1:5353")
//
// Names: host names resolve through the stack's static entries (WithHosts) and DNS
// servers (WithDNS), queried by Go's resolver over the stack's own UDP and TCP
// (Stack.Resolver); DialContext tries a name's addresses as RFC 8305 (happy eyeballs)
// says. Ports may be given as IANA service names ("https"), from berth's own copy of the
// registry (package ports), never the host's /etc/services.
package berth

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/stack"
	"github.com/berthnet/berth/tcp"
	"github.com/berthnet/berth/udp"
	"github.com/berthnet/berth/wire"
)

// Config is everything New takes; Options edit it.
type Config struct {
	Stack stack.Options // clock, seed, forwarding, TTL, ICMP and fragment limits
	UDP   udp.Config    // UDP port manager settings and receive buffer
	TCP   tcp.Config    // TCP settings: port manager, buffers, timers, congestion control
	// Unprivileged makes binds below the port manager's UnprivilegedPortStart (1024 by
	// default) fail with EACCES, as for a process without CAP_NET_BIND_SERVICE. By default
	// the program owns its stack the way root owns the kernel's, and may bind any port.
	Unprivileged bool
	// Names holds the DNS servers and static host entries (WithDNS, WithHosts).
	Names NameConfig
}

// Option configures New.
type Option func(*Config)

// WithClock sets the stack's time source (a clock.Manual for virtual time).
func WithClock(c clock.Clock) Option { return func(cfg *Config) { cfg.Stack.Clock = c } }

// WithSeed makes the stack's random choices (IP IDs, echo identifiers) repeatable.
func WithSeed(seed uint64) Option { return func(cfg *Config) { cfg.Stack.Seed = seed } }

// WithForwarding turns IP forwarding on (the stack routes packets between interfaces).
func WithForwarding(on bool) Option { return func(cfg *Config) { cfg.Stack.Forwarding = on } }

// WithStackOptions replaces the network layer options (a nil Clock keeps one set by
// WithClock).
func WithStackOptions(o stack.Options) Option {
	return func(cfg *Config) {
		if o.Clock == nil {
			o.Clock = cfg.Stack.Clock
		}
		cfg.Stack = o
	}
}

// WithUDPConfig sets UDP's port manager settings and receive buffer size.
func WithUDPConfig(c udp.Config) Option { return func(cfg *Config) { cfg.UDP = c } }

// WithUnprivileged enforces the privileged port floor (see Config.Unprivileged).
func WithUnprivileged() Option { return func(cfg *Config) { cfg.Unprivileged = true } }

// Stack is a berth network stack with its transport protocols. It is safe for concurrent
// use.
type Stack struct {
	cfg Config
	net *stack.Stack
	udp *udp.Protocol
	tcp *tcp.Protocol

	names *names

	mu      sync.Mutex
	closers []func() // run by Close, in reverse order, before the network layer closes
	once    sync.Once
}

// New returns a stack with a loopback interface (127.0.0.1/8, ::1), UDP and TCP. Add
// interfaces with AddInterface. New is the one place where a stack is assembled: every
// stack of the project (berth up, demo, the forwarder of berth run) is built by it.
func New(opts ...Option) *Stack {
	var cfg Config
	for _, o := range opts {
		o(&cfg)
	}
	s := &Stack{cfg: cfg, net: stack.New(cfg.Stack), names: newNames(cfg.Names)}

	uc := cfg.UDP
	if uc.Counter == nil {
		// UDP's counters live in the network layer's registry, so that Stats (and the
		// control socket) show them with the others.
		uc.Counter = s.net.Counters().Counter
	}
	s.udp = udp.New(s.net, uc)
	s.net.RegisterTransport(wire.ProtoUDP, s.udp)
	s.onClose(s.udp.Close)

	tc := cfg.TCP
	if !cfg.Unprivileged {
		tc.Ports.NoPrivilegedPorts = tc.Ports.NoPrivilegedPorts || tc.Ports.UnprivilegedPortStart == 0
	}
	if tc.Counter == nil {
		tc.Counter = s.net.Counters().Counter // likewise TCP's
	}
	s.tcp = tcp.New(s.net, tc)
	s.net.RegisterTransport(wire.ProtoTCP, s.tcp)
	s.onClose(s.tcp.Close)
	return s
}

// onClose registers f to run when the stack closes (before the network layer stops).
func (s *Stack) onClose(f func()) {
	s.mu.Lock()
	s.closers = append(s.closers, f)
	s.mu.Unlock()
}

// Net returns the network layer (interfaces, routes, counters, the Network the
// transport protocols use).
func (s *Stack) Net() *stack.Stack { return s.net }

// UDP returns the UDP protocol instance (its port Manager, endpoints).
func (s *Stack) UDP() *udp.Protocol { return s.udp }

// TCP returns the TCP protocol instance (its port Manager, counters, sockets).
func (s *Stack) TCP() *tcp.Protocol { return s.tcp }

// AddInterface adds a network interface called name on the link endpoint ep; the stack
// closes ep when it closes.
func (s *Stack) AddInterface(name string, ep link.Endpoint) error {
	_, err := s.net.AddInterface(name, ep)
	return err
}

// AddAddress assigns an address with its prefix length ("10.0.0.1/24") to an interface and
// adds the connected route.
func (s *Stack) AddAddress(ifname string, p netip.Prefix) error { return s.net.AddAddress(ifname, p) }

// AddRoute adds a route; a zero gateway means directly connected, "0.0.0.0/0" and "::/0"
// are default routes.
func (s *Stack) AddRoute(prefix netip.Prefix, gateway netip.Addr, ifname string) error {
	return s.net.AddRoute(prefix, gateway, ifname)
}

// Stats returns every counter, named like the kernel's SNMP MIB counters.
func (s *Stack) Stats() map[string]uint64 { return s.net.Stats() }

// Ping sends an ICMP (IPv4) or ICMPv6 echo request with sequence number seq and payload
// to addr and waits for the reply, returning the round-trip time. Errors: *net.OpError with
// Op "ping", wrapping ENETUNREACH, an errno reported by an ICMP error, ctx's error, or
// net.ErrClosed.
func (s *Stack) Ping(ctx context.Context, addr netip.Addr, seq int, payload []byte) (time.Duration, error) {
	rtt, err := s.net.Ping(ctx, addr, uint16(seq), payload)
	if err != nil {
		return 0, &net.OpError{Op: "ping", Net: "ip", Addr: &net.IPAddr{IP: addr.AsSlice()}, Err: wrapSyscall("sendto", err)}
	}
	return rtt, nil
}

// Close closes every socket, the interfaces' links and the stack's goroutines and timers.
func (s *Stack) Close() error {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		closers := slices.Clone(s.closers)
		s.mu.Unlock()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		err = s.net.Close()
	})
	return err
}
