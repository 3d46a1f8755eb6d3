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
	DefaultMTU         = 65520            // MTU of the forwarder's interface
	DefaultMaxFlows    = 4096             // flows tracked at once
	DefaultMaxBuffered = 256 << 20        // bytes buffered across all flows
	DefaultDialTimeout = 10 * time.Second // how long a host-side dial may take
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
	MaxFlows           int   // concurrent TCP and UDP flows, both directions
	MaxBuffered        int64 // bytes of splice buffers and queued datagrams
	DialTimeout        time.Duration
	UDPTimeout         time.Duration // idle UDP flow without replies
	UDPStreamTimeout   time.Duration // idle UDP flow that has seen replies
	Dialer             *net.Dialer   // host connections; nil: a zero net.Dialer
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
	if c.MaxFlows <= 0 {
		c.MaxFlows = DefaultMaxFlows
	}
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

// Stats counts the Forwarder's work.
type Stats struct {
	TCPOutbound, TCPInbound     uint64 // connections opened: from the namespace, by port forwards
	TCPRefused, TCPUnreachable  uint64 // host connects that failed: RST / ICMP sent back
	UDPOutbound, UDPInbound     uint64 // UDP flows opened
	UDPExpired                  uint64
	ICMPErrorsSent              uint64
	FlowsRefused                uint64 // over MaxFlows or MaxBuffered
	ActiveFlows, BufferedBytes  int64
	BytesToHost, BytesToNS      uint64
	PingsForwarded, PingsFailed uint64
}

type counters struct {
	tcpOut, tcpIn, tcpRefused, tcpUnreach atomic.Uint64
	udpOut, udpIn, udpExpired, icmpSent   atomic.Uint64
	refused, toHost, toNS                 atomic.Uint64
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

	mu       sync.Mutex
	closed   bool
	flows    int
	buffered int64
	pending  map[flowKey]struct{}    // TCP SYNs whose host connect is under way
	active   map[*spliced]struct{}   // live TCP flows, closed by Close
	udp      map[flowKey]*udpFlow    // outbound UDP flows by namespace 4-tuple
	udpRev   map[flowKey]*udpFlow    // port-forwarded UDP flows by (ns side, client side)
	fwds     map[string]*portForward // by PortMapping.String()
	pings    map[pingKey]*pingFlow   // echo sessions
	c        counters
}

type flowKey struct{ src, dst netip.AddrPort }

// New installs a Forwarder on s (through its network layer's unmatched-flow hook); it
// terminates TCP flows with s's TCP. Close removes it; s stays the caller's to close.
func New(s *berth.Stack, cfg Config) *Forwarder {
	cfg.setDefaults()
	f := &Forwarder{s: s.Net(), tcp: s.TCP(), cfg: cfg,
		pending: map[flowKey]struct{}{}, active: map[*spliced]struct{}{},
		udp: map[flowKey]*udpFlow{}, udpRev: map[flowKey]*udpFlow{},
		fwds: map[string]*portForward{}, pings: map[pingKey]*pingFlow{}}
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
	active, buf := f.flows, f.buffered
	f.mu.Unlock()
	return Stats{
		TCPOutbound: f.c.tcpOut.Load(), TCPInbound: f.c.tcpIn.Load(),
		TCPRefused: f.c.tcpRefused.Load(), TCPUnreachable: f.c.tcpUnreach.Load(),
		UDPOutbound: f.c.udpOut.Load(), UDPInbound: f.c.udpIn.Load(), UDPExpired: f.c.udpExpired.Load(),
		ICMPErrorsSent: f.c.icmpSent.Load(), FlowsRefused: f.c.refused.Load(),
		ActiveFlows: int64(active), BufferedBytes: buf,
		BytesToHost: f.c.toHost.Load(), BytesToNS: f.c.toNS.Load(),
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
	for _, c := range closers {
		c()
	}
	f.wg.Wait()
	return nil
}

// reserve takes one flow and buf bytes from the limits; false (and counted) when over.
func (f *Forwarder) reserve(buf int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.flows >= f.cfg.MaxFlows || f.buffered+buf > f.cfg.MaxBuffered {
		f.c.refused.Add(1)
		return false
	}
	f.flows++
	f.buffered += buf
	return true
}

// grow adds buf bytes to an existing flow's reservation, if MaxBuffered allows.
func (f *Forwarder) grow(buf int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.buffered+buf > f.cfg.MaxBuffered {
		return false
	}
	f.buffered += buf
	return true
}

// shrink gives back what grow added.
func (f *Forwarder) shrink(buf int64) {
	f.mu.Lock()
	f.buffered -= buf
	f.mu.Unlock()
}

func (f *Forwarder) unreserve(buf int64) {
	f.mu.Lock()
	f.flows--
	f.buffered -= buf
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
