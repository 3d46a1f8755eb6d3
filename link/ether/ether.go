// Package ether is the Ethernet layer between a frame device (package link: a link.Endpoint
// whose packets are Ethernet II frames, such as a TAP device, a QEMU socket or
// pipe.NewEthernet) and a stack that speaks IP: its Endpoint is a link.Endpoint of IP
// packets. It adds and strips Ethernet headers, resolves next hops with ARP (RFC 826,
// RFC 5227) and IPv6 Neighbor Discovery (RFC 4861, with DAD of RFC 4862 §5.4) in a
// bounded neighbour cache, and, when configured, acts as the link's router (router
// advertisements for SLAAC, RFC 4861 §6 and RFC 8106) and DHCPv4 server (RFC 2131).
//
// Everything runs to completion on the caller's goroutine: the stack's writes on the
// stack's, the device's deliveries on the device's. Only the neighbour timers (clock
// package) run on their own.
package ether

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

// Defaults for Config fields left zero. The neighbour timers are Linux's (net.ipv4.neigh.*
// and net.ipv6.neigh.*), which are RFC 4861 §10's constants.
const (
	DefaultMaxNeighbors    = 1024             // gc_thresh3
	DefaultMaxIncomplete   = 256              // entries being resolved at once
	DefaultQueueBytes      = 64 << 10         // per neighbour being resolved (unres_qlen_bytes is 212992)
	DefaultReachableTime   = 30 * time.Second // base_reachable_time_ms, REACHABLE_TIME
	DefaultRetransTime     = time.Second      // retrans_time_ms, RETRANS_TIMER
	DefaultDelayFirstProbe = 5 * time.Second  // delay_first_probe_time, DELAY_FIRST_PROBE_TIME
	DefaultMaxMulticast    = 3                // mcast_solicit, MAX_MULTICAST_SOLICIT
	DefaultMaxUnicast      = 3                // ucast_solicit, MAX_UNICAST_SOLICIT
)

// Config configures an Endpoint. Zero fields take the defaults above.
type Config struct {
	// MAC is the interface's address; zero picks a random locally administered unicast
	// one (IEEE 802 §8.2: the U/L bit set, the I/G bit clear).
	MAC wire.MAC
	// Addrs are the interface's addresses with their prefixes: ARP and ND answer for
	// them, and the prefixes are the on-link subnets, whose hosts are resolved directly.
	Addrs []netip.Prefix
	// Extra are more addresses the interface answers ARP and ND for without owning a
	// subnet: the gateway and DNS addresses `berth run` plays for its guest.
	Extra []netip.Addr
	// Gateway4 and Gateway6 are the next hops for destinations outside every on-link
	// subnet. Zero: such packets are dropped and counted (EtherOutNoRoutes).
	Gateway4, Gateway6 netip.Addr

	MaxNeighbors    int           // cache entries in all, both families
	MaxIncomplete   int           // entries in INCOMPLETE at once: an address scan cannot fill the cache
	QueueBytes      int           // bytes queued for one neighbour while it is resolved
	ReachableTime   time.Duration // BaseReachableTime: entries stay REACHABLE 0.5-1.5 times it
	RetransTime     time.Duration
	DelayFirstProbe time.Duration
	MaxMulticast    int // solicitations of an INCOMPLETE entry before it fails
	MaxUnicast      int // probes of an entry in PROBE before it fails

	// NoDAD skips duplicate address detection (RFC 4862 §5.4) of the IPv6 addresses: they
	// are answered for at once instead of after one solicitation and RetransTime.
	NoDAD bool
	// OnDADFailure, if set, is called (on the goroutine that saw it) when another node
	// turns out to use one of the IPv6 addresses: it is then no longer answered for.
	OnDADFailure func(netip.Addr)

	// Router, if set, makes the interface the link's IPv6 router: it sends router
	// advertisements (periodically and when solicited) so hosts configure addresses by
	// SLAAC and a default route through it.
	Router *Router
	// DHCP, if set, runs a DHCPv4 server on the interface (RFC 2131).
	DHCP *DHCPConfig
	// DHCPv6, if set, runs a stateless DHCPv6 server (DNS servers, search domains).
	DHCPv6 *DHCPv6Config

	// Clock drives the neighbour timers; nil: clock.Real.
	Clock clock.Clock
	// Counter registers and returns a named counter (stack.Counters.Counter, so `berth
	// stats` shows them with the stack's); nil keeps them private (Endpoint.Counters).
	Counter func(name string) *atomic.Uint64
}

// Endpoint is the Ethernet layer over a frame device. It implements link.Endpoint,
// link.GSOEndpoint (GSOMaxSize is 0 unless the device is a GSOEndpoint),
// link.GSOGatherWriter and, towards the
// device, link.VerifiedDispatcher. It is safe for concurrent use.
type Endpoint struct {
	dev link.Endpoint
	gso link.GSOEndpoint          // dev, when it segments
	fw  link.FrameWriter          // dev, when it gathers header and packet itself
	gfw link.GSOFrameWriter       // likewise for super-segments (only with gso)
	ggw link.GSOFrameGatherWriter // and for super-segments in pieces (only with gfw)
	cfg Config
	clk clock.Clock
	mac wire.MAC
	mtu int
	// reachable is how long a confirmation lasts: ReachableTime times a random factor
	// from 0.5 to 1.5 (RFC 4861 §6.3.2, Linux's neigh_rand_reach_time), so that hosts
	// booted together do not probe in step.
	reachable time.Duration
	// maxIn is the longest frame taken from the device: MTU+14, or more when the device
	// coalesces TCP segments and says how long its frames get (package link).
	maxIn int
	ll6   netip.Addr                      // link-local address derived from mac (RFC 4291 §2.5.1, RFC 4862 §5.3)
	up    atomic.Pointer[link.Dispatcher] // nil: detached
	ctr   counters
	// addrs is what the interface answers for and its subnets, replaced whole (copy on
	// write) by AddAddress and friends so the packet paths read it without a lock.
	addrs   atomic.Pointer[addrTable]
	addrsMu sync.Mutex // serialises the writers of addrs

	mu    sync.Mutex
	neigh map[netip.Addr]*neighbor
	nInc  int // entries in INCOMPLETE
	// defended is when each of our addresses was last defended (RFC 5227 §2.4).
	defended map[netip.Addr]time.Time
	dhcp     *dhcpServer   // nil: no DHCP server
	dhcp6    *dhcpv6Server // nil: no DHCPv6 server
	timers   []clock.Timer // one-shot timers (announcements) Close stops
	// addr6 is the state of each IPv6 address answered for: tentative while DAD runs,
	// duplicate after it failed; absent when usable.
	addr6  map[netip.Addr]*dadState
	ra     *raState // nil unless Config.Router
	closed atomic.Bool

	// tx keeps few scratches: each holds a batch of frames, up to 64 × 64 KiB at the
	// largest MTU, and one per concurrent writer is what steady state needs.
	tx  freeList[txScratch]
	rx  freeList[rxBatch]
	ctl freeList[ctlFrame]
}

var (
	_ link.GSOEndpoint        = (*Endpoint)(nil)
	_ link.VerifiedDispatcher = (*rxSide)(nil)
)

// New returns the Ethernet layer over dev, a frame device, and attaches itself to dev: it
// answers ARP and ND from then on, before a stack attaches.
func New(dev link.Endpoint, cfg Config) (*Endpoint, error) {
	if dev == nil {
		return nil, errors.New("ether: nil device")
	}
	if cfg.MAC.IsZero() {
		if _, err := rand.Read(cfg.MAC[:]); err != nil {
			return nil, err
		}
		cfg.MAC[0] = cfg.MAC[0]&^1 | 2
	} else if cfg.MAC.IsMulticast() {
		return nil, errors.New("ether: MAC " + cfg.MAC.String() + " is a group address")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxNeighbors, DefaultMaxNeighbors)
	def(&cfg.MaxIncomplete, DefaultMaxIncomplete)
	def(&cfg.QueueBytes, DefaultQueueBytes)
	def(&cfg.MaxMulticast, DefaultMaxMulticast)
	def(&cfg.MaxUnicast, DefaultMaxUnicast)
	defd(&cfg.ReachableTime, DefaultReachableTime)
	defd(&cfg.RetransTime, DefaultRetransTime)
	defd(&cfg.DelayFirstProbe, DefaultDelayFirstProbe)
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	e := &Endpoint{
		dev: dev, cfg: cfg, clk: cfg.Clock, mac: cfg.MAC, mtu: dev.MTU(),
		neigh: map[netip.Addr]*neighbor{},
		addr6: map[netip.Addr]*dadState{},
	}
	if g, ok := dev.(link.GSOEndpoint); ok {
		e.gso = g
		e.gfw, _ = dev.(link.GSOFrameWriter)
		if e.gfw != nil {
			e.ggw, _ = dev.(link.GSOFrameGatherWriter)
		}
	}
	e.fw, _ = dev.(link.FrameWriter)
	var r [8]byte
	rand.Read(r[:])
	e.reachable = cfg.ReachableTime/2 + time.Duration(binary.LittleEndian.Uint64(r[:])%uint64(cfg.ReachableTime))
	e.maxIn = e.mtu + wire.EthernetHeaderLen
	if m, ok := dev.(interface{ MaxInboundSize() int }); ok {
		e.maxIn = max(e.maxIn, m.MaxInboundSize())
	}
	e.ll6 = linkLocal(cfg.MAC)
	t := &addrTable{own: map[netip.Addr]bool{e.ll6: true}}
	for _, p := range cfg.Addrs {
		t.add(p)
	}
	for _, a := range cfg.Extra {
		t.own[a.Unmap()] = true
	}
	e.addrs.Store(t)
	e.ctr.register(cfg.Counter)
	e.tx.max = 4
	if err := e.initDHCPv6(); err != nil { // before initRouter: it may set the O flag
		return nil, err
	}
	e.initRouter()
	if err := e.initDHCP(); err != nil {
		return nil, err
	}
	dev.Attach((*rxSide)(e))
	e.announce(t.list())
	if e.cfg.NoDAD {
		e.routerUp()
	}
	return e, nil
}

// linkLocal is fe80::/64 with the modified EUI-64 interface identifier of mac (RFC 4291
// Appendix A: ff:fe in the middle, the U/L bit inverted).
func linkLocal(mac wire.MAC) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	b[8], b[9], b[10], b[11] = mac[0]^2, mac[1], mac[2], 0xff
	b[12], b[13], b[14], b[15] = 0xfe, mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}

// MAC returns the interface's MAC address.
func (e *Endpoint) MAC() wire.MAC { return e.mac }

// LinkLocal returns the interface's IPv6 link-local address (fe80:: and the modified
// EUI-64 of its MAC), which ND and router advertisements use as their source and which
// the endpoint answers for. Add it to the stack's interface to make it reachable above.
func (e *Endpoint) LinkLocal() netip.Addr { return e.ll6 }

// MTU is the device's MTU: the largest IP packet, without the Ethernet header.
func (e *Endpoint) MTU() int { return e.mtu }

// Attach sets where inbound IP packets go; nil detaches (ARP and ND are still answered).
func (e *Endpoint) Attach(d link.Dispatcher) {
	var p *link.Dispatcher
	if d != nil {
		p = &d
	}
	e.up.Store(p)
}

// Close stops the neighbour timers, drops the packets waiting for resolution and closes
// the device. Later writes return net.ErrClosed.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed.Swap(true) {
		e.mu.Unlock()
		return net.ErrClosed
	}
	for _, n := range e.neigh {
		e.removeLocked(n)
	}
	e.stopTimersLocked()
	e.mu.Unlock()
	return e.dev.Close()
}

// GSOMaxSize is the device's (an IP packet's size, without the Ethernet header), or 0.
func (e *Endpoint) GSOMaxSize() int {
	if e.gso == nil {
		return 0
	}
	return e.gso.GSOMaxSize()
}

// onLink reports whether a is in one of the interface's subnets, or is link-local IPv6
// (RFC 4861 §5.2: fe80::/10 is always on-link).
func (e *Endpoint) onLink(a netip.Addr) bool {
	if a.Is6() && a.IsLinkLocalUnicast() {
		return true
	}
	for _, p := range e.addrs.Load().nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
