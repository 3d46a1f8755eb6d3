package stack

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/tcp"
	"github.com/berthnet/berth/udp"
	"github.com/berthnet/berth/wire"
)

// capture is a link that records what the stack writes.
type capture struct {
	mtu  int
	mu   sync.Mutex
	pkts [][]byte
	d    link.Dispatcher
}

func (c *capture) MTU() int { return c.mtu }
func (c *capture) Attach(d link.Dispatcher) {
	c.mu.Lock()
	c.d = d
	c.mu.Unlock()
}
func (c *capture) WritePackets(p [][]byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range p {
		c.pkts = append(c.pkts, append([]byte(nil), b...))
	}
	return len(p), nil
}
func (c *capture) Close() error { return nil }
func (c *capture) take() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pkts
	c.pkts = nil
	return p
}

// sink is a transport that records deliveries and claims every port.
type sink struct {
	mu     sync.Mutex
	segs   [][]byte
	errs   []syscall.Errno
	closed bool // answer "unreachable"
}

func (s *sink) HandlePacket(src, dst netip.Addr, seg []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return true
	}
	s.segs = append(s.segs, append([]byte(nil), seg...))
	return false
}
func (s *sink) HandleICMPError(local, remote netip.Addr, quoted []byte, errno syscall.Errno, mtu int) {
	s.mu.Lock()
	s.errs = append(s.errs, errno)
	s.mu.Unlock()
}

var (
	us4   = netip.MustParseAddr("10.0.0.1")
	peer4 = netip.MustParseAddr("10.0.0.2")
	us6   = netip.MustParseAddr("fd00::1")
	peer6 = netip.MustParseAddr("fd00::2")
)

func newTestStack(t testing.TB, opts Options) (*Stack, *Interface, *capture, *sink) {
	t.Helper()
	s := New(opts)
	t.Cleanup(func() { s.Close() })
	c := &capture{mtu: 1500}
	ifc, err := s.AddInterface("eth0", c)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddAddress("eth0", netip.MustParsePrefix("10.0.0.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAddress("eth0", netip.MustParsePrefix("fd00::1/64")); err != nil {
		t.Fatal(err)
	}
	k := &sink{}
	s.RegisterTransport(200, k)
	return s, ifc, c, k
}

// ip4 builds an IPv4 packet.
func ip4(src, dst netip.Addr, proto uint8, id uint16, flags uint16, off int, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	f := wire.IPv4Fields{TotalLen: len(b), ID: id, Flags: flags, FragmentOffset: off, TTL: 64, Protocol: proto, Src: src, Dst: dst}
	f.Encode(b)
	copy(b[20:], payload)
	return b
}

func ip6frag(src, dst netip.Addr, proto uint8, id uint32, off int, more bool, payload []byte) []byte {
	b := make([]byte, 48+len(payload))
	f := wire.IPv6Fields{PayloadLen: 8 + len(payload), NextHeader: wire.ProtoFragment, HopLimit: 64, Src: src, Dst: dst}
	f.Encode(b)
	b[40] = proto
	w := uint16(off)
	if more {
		w |= 1
	}
	binary.BigEndian.PutUint16(b[42:], w)
	binary.BigEndian.PutUint32(b[44:], id)
	copy(b[48:], payload)
	return b
}

func TestRoutesLongestPrefix(t *testing.T) {
	s, _, _, _ := newTestStack(t, Options{})
	c2 := &capture{mtu: 9000}
	if _, err := s.AddInterface("eth1", c2); err != nil {
		t.Fatal(err)
	}
	s.AddAddress("eth1", netip.MustParsePrefix("192.168.1.1/24"))
	if err := s.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.0.0.254"), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.AddRoute(netip.MustParsePrefix("172.16.0.0/12"), netip.MustParseAddr("192.168.1.254"), ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dst, src string
		mtu      int
	}{
		{"10.0.0.7", "10.0.0.1", 1500},
		{"192.168.1.9", "192.168.1.1", 9000},
		{"172.20.1.1", "192.168.1.1", 9000},
		{"8.8.8.8", "10.0.0.1", 1500},
		{"10.0.0.1", "10.0.0.1", LoopbackMTU},
		{"127.3.4.5", "127.0.0.1", LoopbackMTU},
		{"::1", "::1", LoopbackMTU},
		{"fd00::99", "fd00::1", 1500},
	} {
		src, mtu, err := s.Route(netip.MustParseAddr(tc.dst))
		if err != nil || src.String() != tc.src || mtu != tc.mtu {
			t.Errorf("Route(%s) = %v, %d, %v; want %s, %d", tc.dst, src, mtu, err, tc.src, tc.mtu)
		}
	}
	if _, _, err := s.Route(netip.MustParseAddr("2001:db8::1")); err != syscall.ENETUNREACH {
		t.Errorf("no IPv6 default route: %v, want ENETUNREACH", err)
	}
	if !s.IsLocal(netip.MustParseAddr("127.9.9.9")) || s.IsLocal(peer4) {
		t.Error("IsLocal wrong")
	}
}

func TestInputDropsCounted(t *testing.T) {
	s, ifc, _, k := newTestStack(t, Options{})
	good := ip4(peer4, us4, 200, 1, 0, 0, []byte("hello"))
	badSum := append([]byte(nil), good...)
	badSum[10] ^= 0xff
	badVer := append([]byte(nil), good...)
	badVer[0] = 0x55
	short := good[:10]
	notUs := ip4(peer4, netip.MustParseAddr("10.0.0.3"), 200, 1, 0, 0, nil)
	loSrc := ip4(netip.MustParseAddr("127.0.0.1"), us4, 200, 1, 0, 0, nil)
	badLen := append([]byte(nil), good...)
	binary.BigEndian.PutUint16(badLen[2:], 200)
	ifc.DeliverPackets([][]byte{good, badSum, badVer, short, notUs, loSrc, badLen})
	want := map[string]uint64{"IpInReceives": 7, "IpInHdrErrors": 4, "IpInCsumErrors": 1,
		"IpInTruncatedPkts": 2, "IpInAddrErrors": 2, "IpInMartians": 1, "IpInDelivers": 1}
	for name, v := range want {
		if got := s.Counters().Get(name); got != v {
			t.Errorf("%s = %d, want %d", name, got, v)
		}
	}
	if len(k.segs) != 1 || string(k.segs[0]) != "hello" {
		t.Errorf("delivered %q", k.segs)
	}
}

func TestUnknownProtocolAndPortUnreachable(t *testing.T) {
	s, ifc, c, k := newTestStack(t, Options{})
	ifc.DeliverPackets([][]byte{ip4(peer4, us4, 99, 1, 0, 0, []byte("12345678"))})
	k.closed = true
	ifc.DeliverPackets([][]byte{ip4(peer4, us4, 200, 2, 0, 0, []byte("12345678"))})
	out := c.take()
	if len(out) != 2 {
		t.Fatalf("%d packets sent, want 2 ICMP errors", len(out))
	}
	for i, code := range []uint8{wire.ICMPv4CodeProtocolUnreachable, wire.ICMPv4CodePortUnreachable} {
		h, err := wire.ParseIPv4(out[i])
		if err != nil {
			t.Fatal(err)
		}
		m, err := wire.ParseICMPv4(h.Payload())
		if err != nil || m.Type() != wire.ICMPv4DestUnreachable || m.Code() != code || h.Dst() != peer4 || h.Src() != us4 {
			t.Errorf("reply %d: %v type %d code %d", i, err, m.Type(), m.Code())
		}
	}
	if s.Counters().Get("IpInUnknownProtos") != 1 || s.Counters().Get("IcmpOutDestUnreachs") != 2 {
		t.Error("counters")
	}
}

func TestICMPRateLimit(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	s, ifc, c, k := newTestStack(t, Options{Clock: clk})
	k.closed = true
	for range 20 {
		ifc.DeliverPackets([][]byte{ip4(peer4, us4, 200, 2, 0, 0, []byte("12345678"))})
	}
	// Linux's inet_peer_xrlim_allow: a burst of 6, then one per icmp_ratelimit.
	if n := len(c.take()); n != 6 {
		t.Errorf("%d errors in a burst, want 6", n)
	}
	clk.Advance(time.Second)
	for range 5 {
		ifc.DeliverPackets([][]byte{ip4(peer4, us4, 200, 2, 0, 0, []byte("12345678"))})
	}
	if n := len(c.take()); n != 1 {
		t.Errorf("%d errors a second later, want 1", n)
	}
	if s.Counters().Get("IcmpOutRateLimitHost") != 18 {
		t.Errorf("IcmpOutRateLimitHost = %d", s.Counters().Get("IcmpOutRateLimitHost"))
	}
	// Another host has its own bucket.
	ifc.DeliverPackets([][]byte{ip4(netip.MustParseAddr("10.0.0.9"), us4, 200, 2, 0, 0, []byte("12345678"))})
	if n := len(c.take()); n != 1 {
		t.Errorf("other host: %d errors, want 1", n)
	}
}

func TestReassemblyOverlapDrops(t *testing.T) {
	s, ifc, _, k := newTestStack(t, Options{})
	data := make([]byte, 32)
	for i := range data {
		data[i] = byte(i)
	}
	// In order and out of order, reassembly works (IPv4 and IPv6).
	ifc.DeliverPackets([][]byte{
		ip4(peer4, us4, 200, 7, wire.IPv4FlagMF, 0, data[:16]),
		ip4(peer4, us4, 200, 7, 0, 16, data[16:]),
		ip6frag(peer6, us6, 200, 7, 16, false, data[16:]),
		ip6frag(peer6, us6, 200, 7, 0, true, data[:16]),
	})
	if len(k.segs) != 2 || string(k.segs[0]) != string(data) || string(k.segs[1]) != string(data) {
		t.Fatalf("reassembled %x", k.segs)
	}
	// RFC 5722: an overlapping fragment discards the datagram, and later fragments too.
	ifc.DeliverPackets([][]byte{
		ip4(peer4, us4, 200, 8, wire.IPv4FlagMF, 0, data[:16]),
		ip4(peer4, us4, 200, 8, wire.IPv4FlagMF, 8, data[8:24]),
		ip4(peer4, us4, 200, 8, 0, 16, data[16:]),
		ip6frag(peer6, us6, 200, 8, 0, true, data[:16]),
		ip6frag(peer6, us6, 200, 8, 8, true, data[8:24]),
		ip6frag(peer6, us6, 200, 8, 16, false, data[16:]),
	})
	if len(k.segs) != 2 {
		t.Errorf("overlapping fragments delivered: %d", len(k.segs))
	}
	if s.Counters().Get("IpReasmOverlaps") != 1 || s.Counters().Get("Ip6ReasmOverlaps") != 1 {
		t.Error("overlaps not counted")
	}
	// An exact duplicate is harmless.
	ifc.DeliverPackets([][]byte{
		ip4(peer4, us4, 200, 9, wire.IPv4FlagMF, 0, data[:16]),
		ip4(peer4, us4, 200, 9, wire.IPv4FlagMF, 0, data[:16]),
		ip4(peer4, us4, 200, 9, 0, 16, data[16:]),
	})
	if len(k.segs) != 3 {
		t.Errorf("duplicate fragment broke reassembly")
	}
}

func TestReassemblyTimeoutAndMemoryCap(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	s, ifc, c, _ := newTestStack(t, Options{Clock: clk, FragHighThresh: 64 << 10})
	data := make([]byte, 16)
	ifc.DeliverPackets([][]byte{
		ip4(peer4, us4, 200, 1, wire.IPv4FlagMF, 0, data),
		ip6frag(peer6, us6, 200, 1, 0, true, data),
	})
	if n, _ := s.PendingReassembly(); n != 2 {
		t.Fatalf("pending %d", n)
	}
	clk.Advance(DefaultFragTimeout)
	if n, b := s.PendingReassembly(); n != 0 || b != 0 {
		t.Errorf("after timeout: %d datagrams, %d bytes pending", n, b)
	}
	out := c.take()
	if len(out) != 2 {
		t.Fatalf("%d packets, want 2 time-exceeded errors", len(out))
	}
	if m := wire.ICMPv4(wire.IPv4(out[0]).Payload()); m.Type() != wire.ICMPv4TimeExceeded || m.Code() != 1 {
		t.Errorf("v4: type %d code %d", m.Type(), m.Code())
	}
	if m := wire.ICMPv6(out[1][40:]); m.Type() != wire.ICMPv6TimeExceeded || m.Code() != 1 {
		t.Errorf("v6: type %d code %d", m.Type(), m.Code())
	}
	if s.Counters().Get("IpReasmTimeout") != 1 || s.Counters().Get("Ip6ReasmTimeout") != 1 {
		t.Error("timeouts not counted")
	}
	// The memory cap refuses datagrams beyond ipfrag_high_thresh.
	big := make([]byte, 1400)
	for i := range 200 {
		ifc.DeliverPackets([][]byte{ip4(peer4, us4, 200, uint16(100+i), wire.IPv4FlagMF, 0, big)})
	}
	if _, b := s.PendingReassembly(); b > 64<<10 {
		t.Errorf("reassembly holds %d bytes, cap %d", b, 64<<10)
	}
	clk.Advance(DefaultFragTimeout)
	if n, b := s.PendingReassembly(); n != 0 || b != 0 {
		t.Errorf("after timeout: %d, %d", n, b)
	}
}

func TestOutputFragmentsAndDF(t *testing.T) {
	s, _, c, _ := newTestStack(t, Options{})
	pkt := make([]byte, wire.NetworkHeadroom+4000)
	if err := s.Output(us4, peer4, 200, pkt); err != nil {
		t.Fatal(err)
	}
	frags := c.take()
	if len(frags) != 3 {
		t.Fatalf("%d fragments, want 3", len(frags))
	}
	total := 0
	for _, f := range frags {
		h, err := wire.ParseIPv4(f)
		if err != nil || len(f) > 1500 {
			t.Fatal(err, len(f))
		}
		if h.FragmentOffset() != total {
			t.Errorf("offset %d, want %d", h.FragmentOffset(), total)
		}
		total += len(h.Payload())
	}
	if total != 4000 {
		t.Errorf("fragments carry %d bytes", total)
	}
	// TCP is sent with DF: too big is EMSGSIZE.
	if err := s.Output(us4, peer4, wire.ProtoTCP, pkt); err != syscall.EMSGSIZE {
		t.Errorf("TCP too big: %v", err)
	}
	if err := s.Output(us6, peer6, 200, pkt); err != nil {
		t.Fatal(err)
	}
	if n := len(c.take()); n != 3 {
		t.Errorf("IPv6: %d fragments", n)
	}
}

func TestForwardingAndPacketTooBig(t *testing.T) {
	s, ifc, c, _ := newTestStack(t, Options{Forwarding: true})
	c2 := &capture{mtu: 1280}
	s.AddInterface("eth1", c2)
	s.AddAddress("eth1", netip.MustParsePrefix("192.168.0.1/24"))
	s.AddAddress("eth1", netip.MustParsePrefix("fd01::1/64"))
	ifc.DeliverPackets([][]byte{ip4(peer4, netip.MustParseAddr("192.168.0.2"), 200, 1, 0, 0, []byte("fwd"))})
	out := c2.take()
	if len(out) != 1 || wire.IPv4(out[0]).TTL() != 63 {
		t.Fatalf("forwarded %x", out)
	}
	big := make([]byte, 1400)
	p := make([]byte, 40+len(big))
	f := wire.IPv6Fields{PayloadLen: len(big), NextHeader: 200, HopLimit: 64, Src: peer6, Dst: netip.MustParseAddr("fd01::2")}
	f.Encode(p)
	ifc.DeliverPackets([][]byte{p})
	back := c.take()
	if len(back) != 1 {
		t.Fatalf("%d replies", len(back))
	}
	m := wire.ICMPv6(back[0][40:])
	if m.Type() != wire.ICMPv6PacketTooBig || m.MTU() != 1280 {
		t.Errorf("type %d mtu %d, want packet too big 1280", m.Type(), m.MTU())
	}
	// TTL 1: time exceeded.
	p4 := ip4(peer4, netip.MustParseAddr("192.168.0.2"), 200, 1, 0, 0, nil)
	wire.IPv4(p4).SetTTL(1)
	ifc.DeliverPackets([][]byte{p4})
	back = c.take()
	if len(back) != 1 || wire.ICMPv4(wire.IPv4(back[0]).Payload()).Type() != wire.ICMPv4TimeExceeded {
		t.Errorf("TTL 1 not answered with time exceeded")
	}
}

func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s := New(Options{})
	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if runtime.NumGoroutine() > before {
		t.Errorf("goroutines %d > %d", runtime.NumGoroutine(), before)
	}
}

// FuzzStackInput feeds arbitrary bytes to the stack: no panic, nothing held forever.
func FuzzStackInput(f *testing.F) {
	f.Add(ip4(peer4, us4, 200, 1, 0, 0, []byte("hello")))
	f.Add(ip4(peer4, us4, wire.ProtoICMPv4, 1, 0, 0, []byte{8, 0, 0xf7, 0xff, 0, 0, 0, 0}))
	f.Add(ip4(peer4, us4, wire.ProtoUDP, 1, wire.IPv4FlagMF, 0, make([]byte, 16)))
	f.Add(ip6frag(peer6, us6, wire.ProtoUDP, 1, 0, true, make([]byte, 16)))
	f.Add(ip6frag(peer6, us6, wire.ProtoICMPv6, 1, 0, false, []byte{128, 0, 0, 0, 0, 0, 0, 0}))
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 0, 64})
	// Issue 19 (1): IPv4-mapped addresses in an IPv6 header, for each transport.
	mapped := netip.MustParseAddr("::ffff:10.0.0.2")
	syn := []byte{0x30, 0x39, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 5 << 4, 0x02, 0xff, 0xff, 0, 0, 0, 0}
	f.Add(ip6(mapped, us6, wire.ProtoICMPv6, []byte{wire.ICMPv6EchoRequest, 0, 0, 0, 0, 1, 0, 1}))
	f.Add(ip6(mapped, us6, wire.ProtoUDP, []byte{0x30, 0x39, 0, 53, 0, 8, 0, 0}))
	f.Add(ip6(mapped, us6, wire.ProtoTCP, syn))
	f.Add(ip6(peer6, us6, wire.ProtoTCP, syn))
	f.Add(ip6(mapped, netip.MustParseAddr("fd00::9"), wire.ProtoTCP, syn)) // forwarded
	// Issue 19 (5): IPv4 options, IPv6 options with each action, options after a Fragment
	// header (first, later and atomic fragments).
	f.Add(ip4opts([]byte{0x44, 0, 0, 0}, []byte("data")))
	f.Add(ip4opts([]byte{1, 0x07, 7, 4, 0, 0, 0, 0}, []byte("data")))
	for _, typ := range []uint8{0x1e, 0x5e, 0x9e, 0xde} {
		f.Add(ip6ext(wire.ProtoHopByHop, append(optsHeader(wire.ProtoDestOpts, typ), optsHeader(200, typ)...)))
		f.Add(ip6frag(peer6, us6, wire.ProtoDestOpts, 5, 0, false, append(optsHeader(200, typ), "x"...)))
	}
	f.Add(ip6frag(peer6, us6, wire.ProtoDestOpts, 6, 0, true, optsHeader(wire.ProtoUDP, 0x9e)))
	f.Add(ip6frag(peer6, us6, wire.ProtoDestOpts, 6, 8, false, []byte{0, 53, 0, 53, 0, 8, 0, 0}))
	// RFC 7112: a first fragment whose chain stops short.
	f.Add(ip6frag(peer6, us6, wire.ProtoTCP, 7, 0, true, make([]byte, 8)))
	// Issue 19 (2, 3): ICMP errors with tiny MTUs quoting our TCP.
	f.Add(icmpAbout(false, wire.ICMPv4DestUnreachable, wire.ICMPv4CodeFragNeeded, 68))
	f.Add(icmpAbout(true, wire.ICMPv6PacketTooBig, 0, 1000))
	clk := clock.NewManual(time.Unix(1e9, 0))
	s := New(Options{Clock: clk, Forwarding: true})
	defer s.Close()
	c := &capture{mtu: 1500}
	ifc, _ := s.AddInterface("eth0", c)
	s.AddAddress("eth0", netip.MustParsePrefix("10.0.0.1/24"))
	s.AddAddress("eth0", netip.MustParsePrefix("fd00::1/64"))
	s.RegisterTransport(200, &sink{})
	u := udp.New(s, udp.Config{RecvBuf: 4096})
	s.RegisterTransport(wire.ProtoUDP, u)
	tp := tcp.New(s, tcp.Config{})
	s.RegisterTransport(wire.ProtoTCP, tp)
	defer tp.Close()
	if ln, err := tp.Listen(netip.AddrPortFrom(netip.IPv6Unspecified(), 8080), 8, ports.BindOptions{}); err == nil {
		defer ln.Close()
	}
	for _, fam := range []udp.Family{udp.V4, udp.Dual} {
		ep, _ := u.NewEndpoint(fam)
		ep.Bind(netip.AddrPortFrom(netip.Addr{}, 53), ports.BindOptions{ReuseAddr: true})
		defer ep.Close()
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ifc.DeliverPackets([][]byte{data})
		c.take()
		clk.Advance(DefaultFragTimeout)
		if n, b := s.PendingReassembly(); n != 0 || b != 0 {
			t.Fatalf("reassembly leaked %d datagrams, %d bytes", n, b)
		}
	})
}

// The unmatched-flow hook sees segments no socket wants (and, in transparent mode,
// packets for other hosts) before the stack answers or drops them.
func TestUnmatchedHook(t *testing.T) {
	s, ifc, c, k := newTestStack(t, Options{})
	k.closed = true
	var got []netip.Addr
	s.SetUnmatchedHandler(func(proto uint8, src, dst netip.Addr, seg []byte, _ bool) bool {
		got = append(got, dst)
		return string(seg) == "take"
	})
	other := netip.MustParseAddr("198.51.100.7")
	ifc.DeliverPackets([][]byte{
		ip4(peer4, us4, 200, 1, 0, 0, []byte("take")),  // closed port, taken: no ICMP
		ip4(peer4, us4, 200, 2, 0, 0, []byte("leave")), // closed port, left: ICMP
		ip4(peer4, other, 200, 3, 0, 0, []byte("take")),
	})
	if len(got) != 3 || got[2] != other {
		t.Errorf("hook saw %v", got)
	}
	if n := len(c.take()); n != 1 {
		t.Errorf("%d ICMP errors, want 1 (for the segment the hook left)", n)
	}
	if s.Counters().Get("IpInAddrErrors") != 0 {
		t.Error("a packet the hook took was counted as a drop")
	}
}

// transparentSink is a transport.TransparentHandler that holds the "flows" whose segments
// start with "mine".
type transparentSink struct {
	sink
	foreign, batched []string
	ends             int
}

func (s *transparentSink) HandleBatched(src, dst netip.Addr, seg []byte, _ bool) bool {
	s.batched = append(s.batched, string(seg))
	return false
}

func (s *transparentSink) EndBatch() { s.ends++ }

func (s *transparentSink) HandleForeign(src, dst netip.Addr, seg []byte, _ bool) bool {
	s.foreign = append(s.foreign, string(seg))
	return strings.HasPrefix(string(seg), "mine")
}

// In transparent mode, segments for other hosts go to their transport's HandleForeign
// first, in the link batch (EndBatch follows), and only those it leaves reach the hook;
// without a hook the transport is not asked.
func TestForeignToTransportFirst(t *testing.T) {
	s, ifc, _, _ := newTestStack(t, Options{})
	ts := &transparentSink{}
	s.RegisterTransport(201, ts)
	other4, other6 := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8::7")
	ifc.DeliverPackets([][]byte{ip4(peer4, other4, 201, 1, 0, 0, []byte("mine0"))})
	if len(ts.foreign) != 0 || ts.ends != 1 {
		t.Fatalf("without a hook: HandleForeign saw %q, %d EndBatch", ts.foreign, ts.ends)
	}
	var hooked []string
	s.SetUnmatchedHandler(func(proto uint8, src, dst netip.Addr, seg []byte, _ bool) bool {
		hooked = append(hooked, string(seg))
		return true
	})
	ip6 := make([]byte, wire.IPv6HeaderLen+5)
	(&wire.IPv6Fields{PayloadLen: 5, NextHeader: 201, HopLimit: 64, Src: peer6, Dst: other6}).Encode(ip6)
	copy(ip6[wire.IPv6HeaderLen:], "mine6")
	whole := []byte("mine-reassembled")
	ifc.DeliverPackets([][]byte{
		ip4(peer4, other4, 201, 2, 0, 0, []byte("mine1")),
		ip4(peer4, other4, 201, 3, 0, 0, []byte("new1")),
		ip6,
		ip4(peer4, other4, 201, 4, wire.IPv4FlagMF, 0, whole[:8]),
		ip4(peer4, other4, 201, 4, 0, 8, whole[8:]),
		ip4(peer4, us4, 201, 5, 0, 0, []byte("local")),
	})
	if want := []string{"mine1", "new1", "mine6", "mine-reassembled"}; !slices.Equal(ts.foreign, want) {
		t.Errorf("HandleForeign saw %q, want %q", ts.foreign, want)
	}
	if want := []string{"new1"}; !slices.Equal(hooked, want) {
		t.Errorf("the hook saw %q, want %q", hooked, want)
	}
	if want := []string{"local"}; !slices.Equal(ts.batched, want) {
		t.Errorf("HandleBatched saw %q, want %q", ts.batched, want)
	}
	if ts.ends != 2 {
		t.Errorf("%d EndBatch calls after two batches", ts.ends)
	}
}

func TestIPv6UnknownNextHeader(t *testing.T) {
	_, ifc, c, _ := newTestStack(t, Options{})
	p := make([]byte, 48)
	f := wire.IPv6Fields{PayloadLen: 8, NextHeader: wire.ProtoDestOpts, HopLimit: 64, Src: peer6, Dst: us6}
	f.Encode(p)
	p[40] = 99 // destination options header (8 bytes, empty) naming protocol 99
	ifc.DeliverPackets([][]byte{p})
	out := c.take()
	if len(out) != 1 {
		t.Fatalf("%d replies, want a parameter problem", len(out))
	}
	m := wire.ICMPv6(out[0][40:])
	if m.Type() != wire.ICMPv6ParamProblem || m.Code() != wire.ICMPv6CodeUnrecognizedNextHeader || m.Pointer() != 40 {
		t.Errorf("type %d code %d pointer %d, want 4/1/40", m.Type(), m.Code(), m.Pointer())
	}
}

// Configuration changes while packets flow are race-free (run with -race).
func TestConfigureWhileSending(t *testing.T) {
	s, _, _, _ := newTestStack(t, Options{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(100 + i%50)}), 24)
			s.AddAddress("eth0", p)
			s.RemoveAddress("eth0", p.Addr())
		}
	}()
	pkt := make([]byte, wire.NetworkHeadroom+8)
	for {
		select {
		case <-done:
			return
		default:
		}
		if _, _, err := s.Route(peer4); err != nil {
			t.Fatal(err)
		}
		s.Output(netip.Addr{}, peer4, 200, pkt)
	}
}
