// Package forward is berth's user-mode networking forwarder (the job of slirp4netns and
// pasta): a network namespace's packets arrive on a berth stack through a TUN device, and
// the Forwarder terminates every TCP and UDP flow the namespace opens and re-opens it with
// the host's ordinary sockets (package net). Host ports can be forwarded into the
// namespace; the namespace then sees the client's address as the source.
//
// Flows to addresses that are not the berth stack's own reach the Forwarder through the
// stack's unmatched-flow hook (stack.SetUnmatchedHandler); TCP connections are terminated
// with the transparent API of package tcp (AcceptTransparent, DialTransparent). Once a
// TCP connection exists, TCP itself finds its segments by 4-tuple
// (transport.TransparentHandler): the hook sees new SYNs, UDP and ICMP.
//
// Addresses, as slirp4netns and pasta use them: the namespace is 10.0.2.100/24 and
// fd00::100/64, the gateways 10.0.2.2 and fd00::2 stand for the host's loopback, and
// 10.0.2.3 and fd00::3 (port 53) for the host's DNS resolver.
package forward

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/stack"
	"github.com/berthnet/berth/tcp"
	"github.com/berthnet/berth/wire"
)

// Default addresses and limits.
var (
	DefaultNSAddr4  = netip.MustParsePrefix("10.0.2.100/24")
	DefaultNSAddr6  = netip.MustParsePrefix("fd00::100/64")
	DefaultGateway4 = netip.MustParseAddr("10.0.2.2")
	DefaultGateway6 = netip.MustParseAddr("fd00::2")
	DefaultDNS4     = netip.MustParseAddr("10.0.2.3")
	DefaultDNS6     = netip.MustParseAddr("fd00::3")
	// The berth stack's own addresses on the namespace's link. They must differ from the
	// gateway and DNS addresses: flows to those reach the Forwarder only because they are
	// not local (a local address would get the stack's own RST or port unreachable).
	DefaultStackAddr4 = netip.MustParsePrefix("10.0.2.1/24")
	DefaultStackAddr6 = netip.MustParsePrefix("fd00::1/64")
)

const (
	DefaultMTU = 65520 // MTU of the forwarder's interface
	// Limits (Config says what happens at each). A flow without traffic holds no copy
	// buffer, so the flow limits are about sockets and goroutines: a TCP flow costs one
	// host descriptor and two goroutines; conntrack's default table (nf_conntrack_max) is
	// 65,536 entries for all protocols together.
	DefaultMaxTCPFlows = 16384 // TCP flows tracked at once
	DefaultMaxUDPFlows = 4096  // UDP flows tracked at once
	// Host connects under way, in all and to one destination (address and port), and the
	// SYNs one destination may have waiting: a SYN waits for its connect as a listener's
	// SYN queue holds it (net.core.somaxconn is 4,096; net.ipv4.tcp_max_syn_backlog
	// 1,024 on small machines), and one unresponsive destination cannot hold them all.
	DefaultMaxConnects        = 1024             // host connects under way
	DefaultMaxConnectsPerDest = 128              // host connects under way to one destination
	DefaultMaxConnectBacklog  = 4096             // SYNs waiting for a connect slot
	DefaultMaxEchoSessions    = 256              // ping sessions at once
	DefaultMaxBuffered        = 256 << 20        // bytes buffered across all flows
	DefaultDialTimeout        = 10 * time.Second // how long a host-side dial may take
	// Conntrack's nf_conntrack_udp_timeout and nf_conntrack_udp_timeout_stream.
	DefaultUDPTimeout       = 30 * time.Second
	DefaultUDPStreamTimeout = 180 * time.Second // idle timeout of a UDP flow that saw replies
	// A TCP flow's copy buffer, per direction: spliceBuf to begin with, spliceBufMax once
	// reads keep filling it (a bulk transfer; fewer, larger reads and writes on both
	// sides measured 20–40 % more throughput at MTU 65520), within MaxBuffered.
	spliceBuf    = 64 << 10
	spliceBufMax = 512 << 10
)

// Config configures a Forwarder. Zero fields take the defaults.
type Config struct {
	NSAddr4, NSAddr6   netip.Addr // the namespace's addresses (targets of port forwards)
	Gateway4, Gateway6 netip.Addr // stand for the host's loopback
	DNS4, DNS6         netip.Addr // stand for DNSUpstream (port 53)
	DNSUpstream        netip.AddrPort
	NoHostLoopback     bool // flows to the gateways are refused
	NoIPv6             bool
	// MaxTCPFlows bounds the TCP flows, both directions, host connects under way
	// included. A SYN from the namespace over it is dropped (the namespace retransmits,
	// as with a full Linux SYN queue); a host client of a port forward over it is closed.
	MaxTCPFlows int
	// MaxUDPFlows bounds the UDP associations, both directions. A new one over it evicts
	// an idle one, preferring those that never saw a reply (as conntrack's early drop),
	// so that a flood of new flows cannot lock out the namespace's real ones.
	MaxUDPFlows int
	// MaxConnects bounds the host connects under way at once, MaxConnectsPerDest those to
	// one destination (host address and port). A SYN over either waits in its
	// destination's queue, at most MaxConnectBacklog of them (then it is dropped, as for
	// MaxTCPFlows) and at most DialTimeout (then it is dropped, and the namespace's
	// retransmissions start anew).
	MaxConnects, MaxConnectsPerDest, MaxConnectBacklog int
	// MaxEchoSessions bounds the echo (ping) sessions, each with its own host socket; a
	// new one over it evicts the least recently used.
	MaxEchoSessions int
	// MaxBuffered bounds the bytes of copy buffers in use at once. Buffers are taken
	// when there is something to copy, not per flow: a copy that finds no room waits
	// for it (back-pressure), and a bulk copy grows its buffer only where there is room.
	MaxBuffered      int64
	DialTimeout      time.Duration
	UDPTimeout       time.Duration // idle UDP flow without replies
	UDPStreamTimeout time.Duration // idle UDP flow that has seen replies
	Dialer           *net.Dialer   // host connections; nil: a zero net.Dialer
	// Listen and ListenPacket open port forwards' host sockets; nil: net.Listen and
	// net.ListenPacket. Tests use them to put the "host" in a namespace of their own.
	Listen       func(network, address string) (net.Listener, error)
	ListenPacket func(network, address string) (net.PacketConn, error)
}

func (c *Config) setDefaults() {
	def := func(a *netip.Addr, d netip.Addr) {
		if !a.IsValid() {
			*a = d
		}
	}
	def(&c.NSAddr4, DefaultNSAddr4.Addr())
	def(&c.NSAddr6, DefaultNSAddr6.Addr())
	def(&c.Gateway4, DefaultGateway4)
	def(&c.Gateway6, DefaultGateway6)
	def(&c.DNS4, DefaultDNS4)
	def(&c.DNS6, DefaultDNS6)
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt(&c.MaxTCPFlows, DefaultMaxTCPFlows)
	defInt(&c.MaxUDPFlows, DefaultMaxUDPFlows)
	defInt(&c.MaxConnects, DefaultMaxConnects)
	defInt(&c.MaxConnectsPerDest, DefaultMaxConnectsPerDest)
	defInt(&c.MaxConnectBacklog, DefaultMaxConnectBacklog)
	defInt(&c.MaxEchoSessions, DefaultMaxEchoSessions)
	if c.MaxBuffered <= 0 {
		c.MaxBuffered = DefaultMaxBuffered
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.UDPTimeout <= 0 {
		c.UDPTimeout = DefaultUDPTimeout
	}
	if c.UDPStreamTimeout <= 0 {
		c.UDPStreamTimeout = DefaultUDPStreamTimeout
	}
	if c.Dialer == nil {
		c.Dialer = &net.Dialer{}
	}
	if c.Listen == nil {
		c.Listen = net.Listen
	}
	if c.ListenPacket == nil {
		c.ListenPacket = net.ListenPacket
	}
}

// Stats counts the Forwarder's work. The gauges (TCPFlows to BufferedBytes) are the
// present values, the rest counts since New.
type Stats struct {
	TCPFlows, UDPFlows, EchoSessions int64  // flows now (TCP: connects under way included)
	ConnectsInFlight                 int64  // host connects under way
	ConnectsWaiting                  int64  // SYNs waiting for MaxConnects or MaxConnectsPerDest
	BufferedBytes                    int64  // copy buffers in use (MaxBuffered)
	BufferedPeak                     int64  // the most BufferedBytes has been
	TCPOutbound, TCPInbound          uint64 // connections opened: from the namespace, by port forwards
	TCPRefused, TCPUnreachable       uint64 // host connects that failed: RST / ICMP sent back
	UDPOutbound, UDPInbound          uint64 // UDP flows opened
	UDPExpired, UDPEvicted           uint64 // ended idle; ended for a new flow (MaxUDPFlows)
	EchoEvicted                      uint64 // echo sessions ended for a new one (MaxEchoSessions)
	ICMPErrorsSent                   uint64
	// SYNs dropped over MaxTCPFlows and MaxConnectBacklog; port-forward clients closed
	// over MaxTCPFlows.
	TCPFlowLimitDrops, ConnectBacklogDrops, InboundLimitDrops uint64
	// SYNs that waited for a connect slot; that waited DialTimeout and were dropped.
	ConnectsQueued, ConnectsExpired uint64
	BufferWaits                     uint64 // copies that waited for MaxBuffered
	BytesToHost, BytesToNS          uint64
	PingsForwarded, PingsFailed     uint64
}

// Counter is one named figure of Counters.
type Counter struct {
	Name  string // "Forward" and the Stats field's name, as berth stats shows it
	Value uint64 // the field's value when Counters was called
}

// Counters returns Stats as named counters, each prefixed "Forward" (berth stats lists
// them after the stack's).
func (f *Forwarder) Counters() []Counter {
	st := f.Stats()
	return []Counter{
		{"ForwardTCPFlows", uint64(st.TCPFlows)}, {"ForwardUDPFlows", uint64(st.UDPFlows)},
		{"ForwardEchoSessions", uint64(st.EchoSessions)}, {"ForwardConnectsInFlight", uint64(st.ConnectsInFlight)},
		{"ForwardConnectsWaiting", uint64(st.ConnectsWaiting)},
		{"ForwardBufferedBytes", uint64(st.BufferedBytes)}, {"ForwardBufferedPeak", uint64(st.BufferedPeak)},
		{"ForwardTCPOutbound", st.TCPOutbound}, {"ForwardTCPInbound", st.TCPInbound},
		{"ForwardTCPRefused", st.TCPRefused}, {"ForwardTCPUnreachable", st.TCPUnreachable},
		{"ForwardUDPOutbound", st.UDPOutbound}, {"ForwardUDPInbound", st.UDPInbound},
		{"ForwardUDPExpired", st.UDPExpired}, {"ForwardUDPEvicted", st.UDPEvicted},
		{"ForwardEchoEvicted", st.EchoEvicted}, {"ForwardICMPErrorsSent", st.ICMPErrorsSent},
		{"ForwardTCPFlowLimitDrops", st.TCPFlowLimitDrops}, {"ForwardConnectBacklogDrops", st.ConnectBacklogDrops},
		{"ForwardInboundLimitDrops", st.InboundLimitDrops},
		{"ForwardConnectsQueued", st.ConnectsQueued}, {"ForwardConnectsExpired", st.ConnectsExpired},
		{"ForwardBufferWaits", st.BufferWaits},
		{"ForwardBytesToHost", st.BytesToHost}, {"ForwardBytesToNS", st.BytesToNS},
		{"ForwardPingsForwarded", st.PingsForwarded}, {"ForwardPingsFailed", st.PingsFailed},
	}
}

type counters struct {
	tcpOut, tcpIn, tcpRefused, tcpUnreach atomic.Uint64
	udpOut, udpIn, udpExpired, icmpSent   atomic.Uint64
	udpEvicted, echoEvicted               atomic.Uint64
	flowDrops, backlogDrops               atomic.Uint64
	connQueued, connExpired               atomic.Uint64
	inDrops                               atomic.Uint64
	toHost, toNS                          atomic.Uint64
	pings, pingFails                      atomic.Uint64
	tcpHooked                             atomic.Uint64 // TCP segments handleTCP saw (tests)
}

// Forwarder terminates a namespace's flows on a berth stack and re-opens them on the host.
type Forwarder struct {
	s   *stack.Stack  // the berth stack's network layer (berth.Stack.Net)
	tcp *tcp.Protocol // its TCP (berth.Stack.TCP)
	cfg Config

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	buf budget // MaxBuffered

	mu       sync.Mutex
	closed   bool
	tcpFlows int                           // MaxTCPFlows
	connects int                           // MaxConnects
	waiting  int                           // SYNs in dests' queues
	dests    map[netip.AddrPort]*destQueue // host connects by destination (connect.go)
	starved  []*destQueue                  // destinations waiting for MaxConnects
	pending  map[flowKey]struct{}          // TCP SYNs waiting for or in their host connect
	active   map[*spliced]struct{}         // live TCP flows, closed by Close
	udp      map[flowKey]*udpFlow          // outbound UDP flows by namespace 4-tuple
	udpRev   map[flowKey]*udpFlow          // port-forwarded UDP flows by (ns side, client side)
	fwds     map[string]*portForward       // by PortMapping.String()
	pings    map[pingKey]*pingFlow         // echo sessions
	c        counters
}

type flowKey struct{ src, dst netip.AddrPort }

// New installs a Forwarder on s (through its network layer's unmatched-flow hook); it
// terminates TCP flows with s's TCP. Close removes it; s stays the caller's to close.
func New(s *berth.Stack, cfg Config) *Forwarder {
	cfg.setDefaults()
	f := &Forwarder{s: s.Net(), tcp: s.TCP(), cfg: cfg,
		dests: map[netip.AddrPort]*destQueue{}, pending: map[flowKey]struct{}{}, active: map[*spliced]struct{}{},
		udp: map[flowKey]*udpFlow{}, udpRev: map[flowKey]*udpFlow{},
		fwds: map[string]*portForward{}, pings: map[pingKey]*pingFlow{}}
	f.buf.init(cfg.MaxBuffered)
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.s.SetUnmatchedHandler(f.handle)
	f.wg.Add(1)
	go f.janitor()
	return f
}

// Config returns the configuration in use (defaults filled in).
func (f *Forwarder) Config() Config { return f.cfg }

// Stats returns a snapshot of the counters.
func (f *Forwarder) Stats() Stats {
	f.mu.Lock()
	tcpFlows, udpFlows, echo, conns, waiting := f.tcpFlows, len(f.udp)+len(f.udpRev), len(f.pings), f.connects, f.waiting
	f.mu.Unlock()
	used, peak, waits := f.buf.stats()
	return Stats{
		TCPFlows: int64(tcpFlows), UDPFlows: int64(udpFlows), EchoSessions: int64(echo),
		ConnectsInFlight: int64(conns), ConnectsWaiting: int64(waiting), BufferedBytes: used, BufferedPeak: peak, BufferWaits: waits,
		UDPEvicted: f.c.udpEvicted.Load(), EchoEvicted: f.c.echoEvicted.Load(),
		TCPFlowLimitDrops: f.c.flowDrops.Load(), ConnectBacklogDrops: f.c.backlogDrops.Load(),
		InboundLimitDrops: f.c.inDrops.Load(),
		ConnectsQueued:    f.c.connQueued.Load(), ConnectsExpired: f.c.connExpired.Load(),
		TCPOutbound: f.c.tcpOut.Load(), TCPInbound: f.c.tcpIn.Load(),
		TCPRefused: f.c.tcpRefused.Load(), TCPUnreachable: f.c.tcpUnreach.Load(),
		UDPOutbound: f.c.udpOut.Load(), UDPInbound: f.c.udpIn.Load(), UDPExpired: f.c.udpExpired.Load(),
		ICMPErrorsSent: f.c.icmpSent.Load(),
		BytesToHost:    f.c.toHost.Load(), BytesToNS: f.c.toNS.Load(),
		PingsForwarded: f.c.pings.Load(), PingsFailed: f.c.pingFails.Load(),
	}
}

// Close removes the hook, stops every port forward, and closes every flow.
func (f *Forwarder) Close() error {
	f.s.SetUnmatchedHandler(nil)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	var closers []func()
	for _, pf := range f.fwds {
		closers = append(closers, pf.close)
	}
	for sp := range f.active {
		closers = append(closers, sp.abort)
	}
	for _, u := range f.udp {
		closers = append(closers, u.close)
	}
	for _, u := range f.udpRev {
		closers = append(closers, u.close)
	}
	for _, p := range f.pings {
		closers = append(closers, p.close)
	}
	f.mu.Unlock()
	f.cancel()
	f.buf.close()
	for _, c := range closers {
		c()
	}
	f.wg.Wait()
	return nil
}

// budget is MaxBuffered: bytes of copy buffers taken while a copy runs.
type budget struct {
	mu              sync.Mutex
	cond            sync.Cond
	used, peak, max int64
	waits           uint64
	closed          bool
}

func (b *budget) init(max int64) {
	b.max = max
	b.cond.L = &b.mu
}

// take waits until n bytes fit (or nothing is in use: a MaxBuffered below one buffer
// still lets one copy run at a time); false once the Forwarder is closed.
func (b *budget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	waited := false
	for !b.closed && b.used > 0 && b.used+n > b.max {
		if !waited {
			waited = true
			b.waits++
		}
		b.cond.Wait()
	}
	if b.closed {
		return false
	}
	b.addLocked(n)
	return true
}

// tryTake takes n bytes if they fit now.
func (b *budget) tryTake(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.used+n > b.max {
		return false
	}
	b.addLocked(n)
	return true
}

func (b *budget) addLocked(n int64) {
	b.used += n
	b.peak = max(b.peak, b.used)
}

func (b *budget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *budget) stats() (used, peak int64, waits uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak, b.waits
}

// takeTCPFlow counts a TCP flow against MaxTCPFlows; false (counted in drops) when over.
func (f *Forwarder) takeTCPFlow(drops *atomic.Uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.tcpFlows >= f.cfg.MaxTCPFlows {
		drops.Add(1)
		return false
	}
	f.tcpFlows++
	return true
}

func (f *Forwarder) endTCPFlow() {
	f.mu.Lock()
	f.tcpFlows--
	f.mu.Unlock()
}

// hostTarget maps a destination the namespace asked for to the host's address: the
// gateways are the host's loopback, the DNS addresses its resolver; the namespace's own
// network is not forwarded.
func (f *Forwarder) hostTarget(dst netip.AddrPort) (netip.AddrPort, bool) {
	a := dst.Addr()
	switch {
	case a == f.cfg.Gateway4 || a == f.cfg.Gateway6:
		if f.cfg.NoHostLoopback {
			return netip.AddrPort{}, false
		}
		if a.Is4() {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port()), true
		}
		return netip.AddrPortFrom(netip.IPv6Loopback(), dst.Port()), true
	case a == f.cfg.DNS4 || a == f.cfg.DNS6:
		if dst.Port() != 53 || !f.cfg.DNSUpstream.IsValid() {
			return netip.AddrPort{}, false
		}
		return f.cfg.DNSUpstream, true
	case a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || a.IsLinkLocalUnicast():
		return netip.AddrPort{}, false
	case netip.PrefixFrom(f.cfg.NSAddr4, DefaultNSAddr4.Bits()).Masked().Contains(a),
		netip.PrefixFrom(f.cfg.NSAddr6, DefaultNSAddr6.Bits()).Masked().Contains(a):
		// The namespace's own network: there is nothing else on it.
		return netip.AddrPort{}, false
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.AddrPort{}, false
	}
	return dst, true
}

// nsSource is the source address the namespace sees for a host client: the client's own
// address, except that the host's loopback (which the namespace cannot route back to)
// appears as the gateway, as pasta does.
func (f *Forwarder) nsSource(client netip.AddrPort) netip.AddrPort {
	a := client.Addr().Unmap()
	if a.IsLoopback() || a.IsUnspecified() {
		if a.Is4() {
			a = f.cfg.Gateway4
		} else {
			a = f.cfg.Gateway6
		}
	}
	return netip.AddrPortFrom(a, client.Port())
}

// handle is the stack's unmatched-flow hook: seg (valid only during the call) came from
// the namespace for dst, which is not one of the stack's addresses (or is, and no socket
// wanted it), and for TCP no connection of berth's took it.
func (f *Forwarder) handle(proto uint8, src, dst netip.Addr, seg []byte, csumOK bool) bool {
	if (f.cfg.NoIPv6 && dst.Is6()) || f.s.IsLocal(dst) {
		// The stack's own addresses answer for themselves (port unreachable).
		return false
	}
	switch proto {
	case wire.ProtoTCP:
		return f.handleTCP(src, dst, seg, csumOK)
	case wire.ProtoUDP:
		return f.handleUDP(src, dst, seg)
	case wire.ProtoICMPv4, wire.ProtoICMPv6:
		return f.handleICMP(proto, src, dst, seg)
	}
	return false
}

// janitor expires idle UDP flows.
func (f *Forwarder) janitor() {
	defer f.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case now := <-t.C:
			f.expireUDP(now)
			f.expireSYNs(now)
			f.expirePings(now)
		}
	}
}

// output sends a transport packet built in pkt (with wire.NetworkHeadroom in front) into
// the namespace.
func (f *Forwarder) output(src, dst netip.Addr, proto uint8, pkt []byte) error {
	return f.s.Output(src, dst, proto, pkt)
}

// sendICMPUnreachable answers the namespace's packet (src to dst, transport segment seg)
// with a destination unreachable message quoting it (RFC 792, RFC 4443 §3.1): code is an
// ICMPv4 code (port, host, net unreachable), mapped for ICMPv6.
func (f *Forwarder) sendICMPUnreachable(src, dst netip.Addr, proto uint8, seg []byte, code4 uint8) {
	from := dst
	if code4 != wire.ICMPv4CodePortUnreachable {
		// A router reports host and network unreachability: the gateway.
		from = f.cfg.Gateway4
		if dst.Is6() {
			from = f.cfg.Gateway6
		}
	}
	if dst.Is4() {
		// RFC 1812 §4.3.2.3: quote as much as fits in 576 bytes.
		q := seg[:min(len(seg), 576-wire.IPv4MinHeaderLen*2-wire.ICMPv4HeaderLen)]
		b := make([]byte, wire.NetworkHeadroom+wire.ICMPv4HeaderLen+wire.IPv4MinHeaderLen+len(q))
		m := b[wire.NetworkHeadroom:]
		(&wire.ICMPv4Fields{Type: wire.ICMPv4DestUnreachable, Code: code4}).Encode(m)
		(&wire.IPv4Fields{TotalLen: wire.IPv4MinHeaderLen + len(seg), TTL: 64, Protocol: proto,
			Src: src, Dst: dst}).Encode(m[wire.ICMPv4HeaderLen:])
		copy(m[wire.ICMPv4HeaderLen+wire.IPv4MinHeaderLen:], q)
		wire.SetICMPv4Checksum(m)
		f.c.icmpSent.Add(1) // before sending: the namespace may react before Output returns
		f.output(from, src, wire.ProtoICMPv4, b)
		return
	}
	code6 := uint8(wire.ICMPv6CodePortUnreachable)
	switch code4 {
	case wire.ICMPv4CodeHostUnreachable:
		code6 = wire.ICMPv6CodeAddressUnreachable
	case wire.ICMPv4CodeNetUnreachable:
		code6 = wire.ICMPv6CodeNoRoute
	case wire.ICMPv4CodeAdminProhibited:
		code6 = wire.ICMPv6CodeAdminProhibited
	}
	// RFC 4443 §2.4(c): as much of the packet as fits in the minimum MTU.
	q := seg[:min(len(seg), 1280-wire.IPv6HeaderLen*2-wire.ICMPv6HeaderLen)]
	b := make([]byte, wire.NetworkHeadroom+wire.ICMPv6HeaderLen+wire.IPv6HeaderLen+len(q))
	m := b[wire.NetworkHeadroom:]
	(&wire.ICMPv6Fields{Type: wire.ICMPv6DestUnreachable, Code: code6}).Encode(m)
	(&wire.IPv6Fields{PayloadLen: len(seg), NextHeader: proto, HopLimit: 64, Src: src, Dst: dst}).Encode(m[wire.ICMPv6HeaderLen:])
	copy(m[wire.ICMPv6HeaderLen+wire.IPv6HeaderLen:], q)
	wire.SetICMPv6Checksum(m, from, src)
	f.c.icmpSent.Add(1)
	f.output(from, src, wire.ProtoICMPv6, b)
}

// unreachableCode picks the ICMP code for a failed host connect or send.
func unreachableCode(err error) uint8 {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return wire.ICMPv4CodePortUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return wire.ICMPv4CodeNetUnreachable
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return wire.ICMPv4CodeAdminProhibited
	}
	return wire.ICMPv4CodeHostUnreachable
}
