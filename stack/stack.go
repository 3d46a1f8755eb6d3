// Package stack is berth's network layer: interfaces and their addresses, the routing
// table, IPv4 and IPv6 input and output, fragmentation and reassembly, ICMP and ICMPv6, and
// dispatch to the transport protocols that register with it. *Stack implements
// transport.Network and transport.GSONetwork, the contract the transport packages (udp,
// tcp) consume, and calls them through transport.Handler and transport.BatchHandler.
package stack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/transport"
)

// Defaults, named after the Linux sysctls they mirror.
const (
	DefaultTTL            = 64               // net.ipv4.ip_default_ttl, net.ipv6.conf.*.hop_limit
	DefaultICMPRateLimit  = time.Second      // net.ipv4.icmp_ratelimit (1000 ms)
	DefaultICMPMsgsPerSec = 1000             // net.ipv4.icmp_msgs_per_sec
	DefaultICMPMsgsBurst  = 50               // net.ipv4.icmp_msgs_burst
	DefaultFragHighThresh = 4 << 20          // net.ipv4.ipfrag_high_thresh (4 MiB)
	DefaultFragLowThresh  = 3 << 20          // net.ipv4.ipfrag_low_thresh (3 MiB)
	DefaultFragTimeout    = 30 * time.Second // net.ipv4.ipfrag_time
	LoopbackMTU           = 65535            // Linux lo has 65536; IPv4 total length caps at 65535
	LoopbackName          = "lo"
	loopbackQueue         = 1000 // net.core.netdev_max_backlog
)

// Options configure a Stack. Zero fields take the defaults above.
type Options struct {
	Clock clock.Clock // nil: clock.Real
	Seed  uint64      // seeds IP IDs and echo identifiers; zero: random
	// Forwarding turns the host into a router (net.ipv4.ip_forward): packets for other hosts
	// are routed on, with TTL decremented (RFC 1812 §5.2). Off by default: they are dropped.
	Forwarding bool
	DefaultTTL uint8
	// ICMP error rate limiting (RFC 1812 §4.3.2.8, RFC 4443 §2.4(f)), like Linux: a token
	// bucket per destination host, one message per ICMPRateLimit with a burst of 6, under a
	// global bucket of ICMPMsgsPerSec with burst ICMPMsgsBurst. Echo replies are not limited
	// (Linux's default icmp_ratemask). NoICMPRateLimit turns limiting off.
	ICMPRateLimit   time.Duration
	ICMPMsgsPerSec  int
	ICMPMsgsBurst   int
	NoICMPRateLimit bool
	// Fragment reassembly limits, for IPv4 and IPv6 each: over FragHighThresh bytes held by
	// incomplete datagrams, the least recently used are evicted down to FragLowThresh
	// (which defaults to 3/4 of a FragHighThresh below DefaultFragLowThresh); one source
	// holds at most FragHighThresh/4. FragTimeout is how long a datagram may wait for its
	// missing fragments.
	FragHighThresh int
	FragLowThresh  int
	FragTimeout    time.Duration
}

// Interface is a network interface: a link endpoint and the addresses assigned to it.
type Interface struct {
	s        *Stack
	name     string
	ep       link.Endpoint // nil for the loopback interface
	mtu      int
	loopback bool
	addrs    []netip.Prefix // guarded by s.mu
}

// Name returns the interface's name.
func (ifc *Interface) Name() string { return ifc.name }

// MTU returns the interface's MTU.
func (ifc *Interface) MTU() int { return ifc.mtu }

// Addresses returns the prefixes assigned to the interface.
func (ifc *Interface) Addresses() []netip.Prefix {
	ifc.s.mu.Lock()
	defer ifc.s.mu.Unlock()
	return slices.Clone(ifc.addrs)
}

// DeliverPackets is the link.Dispatcher the stack attaches to the interface's endpoint:
// each packet is processed to completion on the calling (link) goroutine.
func (ifc *Interface) DeliverPackets(pkts [][]byte) { ifc.deliver(pkts, false) }

// DeliverVerified implements link.VerifiedDispatcher: TCP checksums are not checked
// (and are completed before a packet is forwarded to another link).
func (ifc *Interface) DeliverVerified(pkts [][]byte) { ifc.deliver(pkts, true) }

func (ifc *Interface) deliver(pkts [][]byte, csumOK bool) {
	for _, p := range pkts {
		ifc.s.input(ifc, p, csumOK)
	}
	if bs := ifc.s.batchers.Load(); bs != nil {
		for _, b := range *bs {
			b.EndBatch()
		}
	}
}

// Route is one routing table entry. Gateway is the zero Addr for a connected route.
type Route struct {
	Prefix    netip.Prefix // destination prefix
	Gateway   netip.Addr   // next hop; zero for directly connected
	Interface string       // outgoing interface's name
}

type route struct {
	prefix netip.Prefix
	gw     netip.Addr
	ifc    *Interface
}

// table is an immutable snapshot of addresses and routes, swapped atomically on change so
// the packet path reads it without a lock.
type table struct {
	local  map[netip.Addr]*Interface
	routes []route // longest prefix first
	ifaces map[string]*Interface
	addrs  map[*Interface][]netip.Prefix // copies: the packet path must not read ifc.addrs
}

// Stack is a network layer instance. It is safe for concurrent use.
type Stack struct {
	opts     Options
	clk      clock.Clock
	counters *Counters
	ip4      ipCounters
	ip6      ip6Counters
	icmp4    icmpCounters
	icmp6    icmpCounters

	loDrops, linkTxErrs *atomic.Uint64

	mu      sync.Mutex // guards configuration changes
	tab     atomic.Pointer[table]
	ifaces  []*Interface
	lo      *Interface
	loop    *loopback
	closed  atomic.Bool
	closeMu sync.Once

	transports atomic.Pointer[[256]transport.Handler]
	batchers   atomic.Pointer[[]transport.BatchHandler] // the transports that are BatchHandlers
	unmatched  atomic.Pointer[transport.UnmatchedHandler]

	ipID   atomic.Uint32
	frag6  atomic.Uint32
	rl     rateLimiter
	reasm  reassembler
	pinger pinger
	pmtu   pmtuLocks

	staticRoutes []route // guarded by mu
	raw          atomic.Pointer[[]*ICMPEndpoint]
}

// New returns a stack with only the loopback interface ("lo": 127.0.0.1/8 and ::1/128).
func New(opts Options) *Stack {
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.DefaultTTL == 0 {
		opts.DefaultTTL = DefaultTTL
	}
	if opts.ICMPRateLimit <= 0 {
		opts.ICMPRateLimit = DefaultICMPRateLimit
	}
	if opts.ICMPMsgsPerSec <= 0 {
		opts.ICMPMsgsPerSec = DefaultICMPMsgsPerSec
	}
	if opts.ICMPMsgsBurst <= 0 {
		opts.ICMPMsgsBurst = DefaultICMPMsgsBurst
	}
	if opts.FragHighThresh <= 0 {
		opts.FragHighThresh = DefaultFragHighThresh
	}
	if opts.FragLowThresh <= 0 || opts.FragLowThresh >= opts.FragHighThresh {
		opts.FragLowThresh = min(DefaultFragLowThresh, opts.FragHighThresh-opts.FragHighThresh/4)
	}
	if opts.FragTimeout <= 0 {
		opts.FragTimeout = DefaultFragTimeout
	}
	if opts.Seed == 0 {
		opts.Seed = rand.Uint64()
	}
	s := &Stack{opts: opts, clk: opts.Clock, counters: NewCounters()}
	s.registerCounters()
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	s.ipID.Store(rng.Uint32())
	s.frag6.Store(rng.Uint32())
	s.pinger.init(uint16(rng.Uint32()))
	s.rl.init(&s.opts, s.clk.Now())
	s.reasm.init(s)
	s.transports.Store(new([256]transport.Handler))
	s.tab.Store(&table{local: map[netip.Addr]*Interface{}, ifaces: map[string]*Interface{}})

	s.lo = &Interface{s: s, name: LoopbackName, mtu: LoopbackMTU, loopback: true}
	s.loop = newLoopback(s, s.lo)
	s.ifaces = append(s.ifaces, s.lo)
	s.mu.Lock()
	s.lo.addrs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}
	s.rebuildLocked()
	s.mu.Unlock()
	return s
}

// Counters returns the stack's counter registry; protocols register theirs here.
func (s *Stack) Counters() *Counters { return s.counters }

// Stats returns a snapshot of every counter.
func (s *Stack) Stats() map[string]uint64 { return s.counters.Snapshot() }

// Clock returns the stack's time source.
func (s *Stack) Clock() clock.Clock { return s.clk }

// Options returns the options the stack runs with (defaults filled in).
func (s *Stack) Options() Options { return s.opts }

// RegisterTransport makes h receive packets of IP protocol proto (wire.ProtoTCP,
// wire.ProtoUDP, ...). Register before traffic flows; registering again replaces the
// handler. A transport.BatchHandler gets the packets of link batches through
// HandleBatched, and EndBatch after each batch.
func (s *Stack) RegisterTransport(proto uint8, h transport.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := *s.transports.Load()
	t[proto] = h
	s.transports.Store(&t)
	var bs []transport.BatchHandler
	for _, h := range t {
		if b, ok := h.(transport.BatchHandler); ok {
			bs = append(bs, b)
		}
	}
	s.batchers.Store(&bs)
}

// SetUnmatchedHandler installs (or with nil removes) the hook for unmatched flows (see
// transport.UnmatchedHandler for what it is offered). While one is installed, fragments
// addressed to other hosts are reassembled for it instead of forwarded.
func (s *Stack) SetUnmatchedHandler(h transport.UnmatchedHandler) {
	if h == nil {
		s.unmatched.Store(nil)
		return
	}
	s.unmatched.Store(&h)
}

// AddInterface adds a network interface on ep and attaches the stack to it as ep's
// Dispatcher. The stack closes ep when it closes.
func (s *Stack) AddInterface(name string, ep link.Endpoint) (*Interface, error) {
	if name == "" || ep == nil {
		return nil, syscall.EINVAL
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, net.ErrClosed
	}
	if _, ok := s.tab.Load().ifaces[name]; ok {
		return nil, fmt.Errorf("stack: interface %q: %w", name, syscall.EEXIST)
	}
	ifc := &Interface{s: s, name: name, ep: ep, mtu: ep.MTU()}
	s.ifaces = append(s.ifaces, ifc)
	s.rebuildLocked()
	ep.Attach(ifc)
	return ifc, nil
}

// Interface returns the interface called name.
func (s *Stack) Interface(name string) (*Interface, bool) {
	ifc, ok := s.tab.Load().ifaces[name]
	return ifc, ok
}

// Interfaces lists the interfaces, loopback first.
func (s *Stack) Interfaces() []*Interface {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ifaces)
}

// AddAddress assigns p's address to interface ifname and adds the connected route for p's
// network (as Linux does for an address with a prefix length).
func (s *Stack) AddAddress(ifname string, p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return syscall.EINVAL
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ifc, ok := s.tab.Load().ifaces[ifname]
	if !ok {
		return fmt.Errorf("stack: interface %q: %w", ifname, syscall.ENODEV)
	}
	if _, ok := s.tab.Load().local[p.Addr()]; ok {
		return fmt.Errorf("stack: address %v: %w", p.Addr(), syscall.EEXIST)
	}
	ifc.addrs = append(ifc.addrs, p)
	s.rebuildLocked()
	return nil
}

// RemoveAddress removes an address (and its connected route).
func (s *Stack) RemoveAddress(ifname string, a netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ifc, ok := s.tab.Load().ifaces[ifname]
	if !ok {
		return syscall.ENODEV
	}
	i := slices.IndexFunc(ifc.addrs, func(p netip.Prefix) bool { return p.Addr() == a })
	if i < 0 {
		return syscall.EADDRNOTAVAIL
	}
	ifc.addrs = slices.Delete(ifc.addrs, i, i+1)
	s.rebuildLocked()
	return nil
}

// AddRoute adds a route to prefix through gateway (zero Addr: directly connected) on
// interface ifname. With ifname empty the interface is the one whose connected network
// holds gateway. "0.0.0.0/0" and "::/0" are default routes.
func (s *Stack) AddRoute(prefix netip.Prefix, gateway netip.Addr, ifname string) error {
	if !prefix.IsValid() {
		return syscall.EINVAL
	}
	prefix = prefix.Masked()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tab.Load()
	var ifc *Interface
	if ifname != "" {
		var ok bool
		if ifc, ok = t.ifaces[ifname]; !ok {
			return fmt.Errorf("stack: interface %q: %w", ifname, syscall.ENODEV)
		}
	} else if gateway.IsValid() {
		if r, ok := t.lookup(gateway); ok && !r.gw.IsValid() {
			ifc = r.ifc
		}
		if ifc == nil {
			return fmt.Errorf("stack: gateway %v: %w", gateway, syscall.ENETUNREACH)
		}
	} else {
		return syscall.EINVAL
	}
	if gateway.IsValid() && gateway.Is4() != prefix.Addr().Is4() {
		return syscall.EINVAL
	}
	s.staticRoutes = append(s.staticRoutes, route{prefix: prefix, gw: gateway, ifc: ifc})
	s.rebuildLocked()
	return nil
}

// Routes lists the routing table, longest prefix first.
func (s *Stack) Routes() []Route {
	t := s.tab.Load()
	out := make([]Route, 0, len(t.routes))
	for _, r := range t.routes {
		out = append(out, Route{Prefix: r.prefix, Gateway: r.gw, Interface: r.ifc.name})
	}
	return out
}

// rebuildLocked recomputes the snapshot from the interfaces and static routes.
func (s *Stack) rebuildLocked() {
	t := &table{local: map[netip.Addr]*Interface{}, ifaces: map[string]*Interface{},
		addrs: map[*Interface][]netip.Prefix{}}
	for _, ifc := range s.ifaces {
		t.ifaces[ifc.name] = ifc
		t.addrs[ifc] = slices.Clone(ifc.addrs)
		for _, p := range ifc.addrs {
			t.local[p.Addr()] = ifc
			t.routes = append(t.routes, route{prefix: p.Masked(), ifc: ifc})
		}
	}
	t.routes = append(t.routes, s.staticRoutes...)
	// Longest prefix first; among equal prefixes connected routes first, then in the order
	// added (stable sort), so a lookup takes the first match.
	slices.SortStableFunc(t.routes, func(a, b route) int {
		if a.prefix.Bits() != b.prefix.Bits() {
			return b.prefix.Bits() - a.prefix.Bits()
		}
		if a.gw.IsValid() != b.gw.IsValid() {
			if a.gw.IsValid() {
				return 1
			}
			return -1
		}
		return 0
	})
	s.tab.Store(t)
}

// lookup is the longest-prefix match over the snapshot. Routing tables here are short
// (a few connected networks and defaults), so a scan of the sorted slice is cheapest.
func (t *table) lookup(dst netip.Addr) (route, bool) {
	for _, r := range t.routes {
		if r.prefix.Contains(dst) {
			return r, true
		}
	}
	return route{}, false
}

// isLocal reports whether a is ours: an assigned address, or anything in 127.0.0.0/8
// (RFC 1122 §3.2.1.3(g): the whole loopback network is internal to the host).
func (t *table) isLocal(a netip.Addr) bool {
	if _, ok := t.local[a]; ok {
		return true
	}
	return a.Is4() && a.As4()[0] == 127
}

// source picks an address of dst's family from addrs (an interface's), preferring one on
// dst's (or the gateway's) network (RFC 6724 rule 8-like longest match, kept simple).
func source(addrs []netip.Prefix, dst, gw netip.Addr) (netip.Addr, bool) {
	var fallback netip.Addr
	for _, p := range addrs {
		a := p.Addr()
		if a.Is4() != dst.Is4() {
			continue
		}
		if p.Contains(dst) || (gw.IsValid() && p.Contains(gw)) {
			return a, true
		}
		if !fallback.IsValid() {
			fallback = a
		}
	}
	return fallback, fallback.IsValid()
}

// resolve finds the interface and source address for dst.
func (s *Stack) resolve(dst netip.Addr) (ifc *Interface, src netip.Addr, err error) {
	t := s.tab.Load()
	if t.isLocal(dst) {
		// Traffic to our own addresses loops back with the destination as source, as Linux
		// does; the rest of 127/8 answers from 127.0.0.1.
		if _, ok := t.local[dst]; ok {
			return s.lo, dst, nil
		}
		return s.lo, netip.AddrFrom4([4]byte{127, 0, 0, 1}), nil
	}
	r, ok := t.lookup(dst)
	if !ok || r.ifc.loopback {
		return nil, netip.Addr{}, syscall.ENETUNREACH
	}
	src, ok = source(t.addrs[r.ifc], dst, r.gw)
	if !ok {
		return nil, netip.Addr{}, syscall.EADDRNOTAVAIL
	}
	return r.ifc, src, nil
}

// resolveFrom is resolve for a packet whose source is chosen: a link-local destination
// leaves through the interface holding the link-local source. A link-local address is
// unique only on its link, so its zone — the interface — is part of it (RFC 4007 §6);
// a socket bound to an interface's link-local address (a zoned bind or dial) stands for
// that zone, and the same fe80:: address may sit on two links.
func (s *Stack) resolveFrom(src, dst netip.Addr) (*Interface, netip.Addr, error) {
	if src.IsValid() && dst.Is6() && dst.IsLinkLocalUnicast() && src.IsLinkLocalUnicast() {
		t := s.tab.Load()
		if ifc, ok := t.local[src]; ok && !ifc.loopback && !t.isLocal(dst) {
			for _, p := range t.addrs[ifc] {
				if p.Contains(dst) {
					return ifc, src, nil
				}
			}
		}
	}
	return s.resolve(dst)
}

// Route picks the source address towards dst and reports the path MTU (Network contract).
func (s *Stack) Route(dst netip.Addr) (src netip.Addr, mtu int, err error) {
	dst = dst.Unmap()
	if !dst.IsValid() || dst.IsUnspecified() || dst.IsMulticast() {
		return netip.Addr{}, 0, syscall.ENETUNREACH
	}
	ifc, src, err := s.resolve(dst)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	return src, ifc.mtu, nil
}

// IsLocal reports whether a is one of the stack's addresses (Network contract).
func (s *Stack) IsLocal(a netip.Addr) bool { return s.tab.Load().isLocal(a.Unmap()) }

// Close detaches and closes every link endpoint, stops the loopback goroutine and every
// timer, and fails pending pings. It is idempotent.
func (s *Stack) Close() error {
	var err error
	s.closeMu.Do(func() {
		s.closed.Store(true)
		s.mu.Lock()
		ifaces := slices.Clone(s.ifaces)
		s.mu.Unlock()
		for _, ifc := range ifaces {
			if ifc.ep != nil {
				ifc.ep.Attach(nil)
				// Closing one end of a pipe closes the other: a peer stack closing first
				// is not an error here.
				if e := ifc.ep.Close(); e != nil && err == nil && !errors.Is(e, net.ErrClosed) {
					err = e
				}
			}
		}
		if p := s.raw.Load(); p != nil {
			for _, e := range *p {
				e.Close()
			}
		}
		s.loop.close()
		s.reasm.close()
		s.pinger.close()
	})
	return err
}

// Closed reports whether Close was called.
func (s *Stack) Closed() bool { return s.closed.Load() }

// The stack is the network side of the transport contract.
var (
	_ transport.Network    = (*Stack)(nil)
	_ transport.GSONetwork = (*Stack)(nil)
)
