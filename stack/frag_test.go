package stack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/wire"
)

// ip6fragAfter builds an IPv6 fragment whose Fragment header follows an 8-byte extension
// header of type ext (hop-by-hop or destination options, padded with PadN).
func ip6fragAfter(ext uint8, src, dst netip.Addr, proto uint8, id uint32, off int, more bool, payload []byte) []byte {
	b := make([]byte, 56+len(payload))
	f := wire.IPv6Fields{PayloadLen: 16 + len(payload), NextHeader: ext, HopLimit: 64, Src: src, Dst: dst}
	f.Encode(b)
	b[40], b[41] = wire.ProtoFragment, 0
	b[42], b[43] = 1, 4 // PadN, 4 bytes (RFC 8200 §4.2)
	b[48] = proto
	w := uint16(off)
	if more {
		w |= 1
	}
	binary.BigEndian.PutUint16(b[50:], w)
	binary.BigEndian.PutUint32(b[52:], id)
	copy(b[56:], payload)
	return b
}

type hookCall struct {
	proto    uint8
	src, dst netip.Addr
	seg      []byte
}

// A fragmented datagram to a non-local address is reassembled by the stack and offered
// whole, once, to the unmatched-flow hook (the forwarder of `berth run` terminates flows
// to every destination), wherever the IPv6 Fragment header sits in the chain.
func TestTransitFragmentsReachUnmatchedHook(t *testing.T) {
	s, ifc, c, _ := newTestStack(t, Options{Forwarding: true})
	var calls []hookCall
	take := true
	s.SetUnmatchedHandler(func(proto uint8, src, dst netip.Addr, seg []byte, _ bool) bool {
		calls = append(calls, hookCall{proto, src, dst, bytes.Clone(seg)})
		return take
	})
	other4 := netip.MustParseAddr("198.51.100.7")
	other6 := netip.MustParseAddr("2001:db8::7")
	// A UDP datagram (8-byte header + 3000 bytes), fragmented at 1480-byte boundaries.
	udp := make([]byte, 3008)
	for i := range udp {
		udp[i] = byte(i * 7)
	}
	binary.BigEndian.PutUint16(udp[0:], 5000)
	binary.BigEndian.PutUint16(udp[2:], 53)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	check := func(name string, src, dst netip.Addr) {
		t.Helper()
		if len(calls) != 1 {
			t.Fatalf("%s: hook called %d times, want 1", name, len(calls))
		}
		g := calls[0]
		if g.proto != wire.ProtoUDP || g.src != src || g.dst != dst || !bytes.Equal(g.seg, udp) {
			t.Errorf("%s: hook got proto %d %v -> %v, %d bytes (whole: %v)", name, g.proto, g.src, g.dst,
				len(g.seg), bytes.Equal(g.seg, udp))
		}
		if out := c.take(); len(out) != 0 {
			t.Errorf("%s: %d packets sent (forwarded or ICMP), want none", name, len(out))
		}
		if n, b := s.PendingReassembly(); n != 0 || b != 0 {
			t.Errorf("%s: %d datagrams, %d bytes left in reassembly", name, n, b)
		}
		calls = nil
	}

	// IPv4, out of order.
	ifc.DeliverPackets([][]byte{
		ip4(peer4, other4, wire.ProtoUDP, 1, 0, 2960, udp[2960:]),
		ip4(peer4, other4, wire.ProtoUDP, 1, wire.IPv4FlagMF, 0, udp[:1480]),
		ip4(peer4, other4, wire.ProtoUDP, 1, wire.IPv4FlagMF, 1480, udp[1480:2960]),
	})
	check("ipv4", peer4, other4)

	// IPv6: Fragment header right after the fixed header, after hop-by-hop options, and
	// after destination options (RFC 8200 §4.1 order).
	ifc.DeliverPackets([][]byte{
		ip6frag(peer6, other6, wire.ProtoUDP, 1, 1480, false, udp[1480:]),
		ip6frag(peer6, other6, wire.ProtoUDP, 1, 0, true, udp[:1480]),
	})
	check("ipv6", peer6, other6)
	for ext, name := range map[uint8]string{wire.ProtoHopByHop: "hop-by-hop", wire.ProtoDestOpts: "destination options"} {
		ifc.DeliverPackets([][]byte{
			ip6fragAfter(ext, peer6, other6, wire.ProtoUDP, 2+uint32(ext), 0, true, udp[:1480]),
			ip6fragAfter(ext, peer6, other6, wire.ProtoUDP, 2+uint32(ext), 1480, false, udp[1480:]),
		})
		check("ipv6 after "+name, peer6, other6)
	}
	ct := s.Counters()
	if ct.Get("IpReasmOKs") != 1 || ct.Get("Ip6ReasmOKs") != 3 {
		t.Errorf("ReasmOKs v4 %d v6 %d, want 1 and 3", ct.Get("IpReasmOKs"), ct.Get("Ip6ReasmOKs"))
	}
	if ct.Get("IpForwDatagrams") != 0 || ct.Get("Ip6ForwDatagrams") != 0 {
		t.Error("transit fragments were forwarded")
	}

	// RFC 5722: the same overlap rule as for local datagrams.
	ifc.DeliverPackets([][]byte{
		ip4(peer4, other4, wire.ProtoUDP, 3, wire.IPv4FlagMF, 0, udp[:1480]),
		ip4(peer4, other4, wire.ProtoUDP, 3, wire.IPv4FlagMF, 8, udp[8:1488]),
		ip4(peer4, other4, wire.ProtoUDP, 3, 0, 1480, udp[1480:]),
	})
	if len(calls) != 0 || ct.Get("IpReasmOverlaps") != 1 {
		t.Errorf("overlapping transit fragments: %d hook calls, %d overlaps", len(calls), ct.Get("IpReasmOverlaps"))
	}

	// A reassembled datagram the hook leaves is dropped and counted, not forwarded (even
	// with forwarding on).
	take = false
	ifc.DeliverPackets([][]byte{
		ip4(peer4, other4, wire.ProtoUDP, 4, wire.IPv4FlagMF, 0, udp[:1480]),
		ip4(peer4, other4, wire.ProtoUDP, 4, 0, 1480, udp[1480:]),
		ip6frag(peer6, other6, wire.ProtoUDP, 4, 0, true, udp[:1480]),
		ip6frag(peer6, other6, wire.ProtoUDP, 4, 1480, false, udp[1480:]),
	})
	if len(calls) != 2 {
		t.Errorf("hook called %d times, want 2", len(calls))
	}
	if out := c.take(); len(out) != 0 {
		t.Errorf("a datagram the hook left: %d packets sent, want none", len(out))
	}
	if ct.Get("IpInDiscards") != 1 || ct.Get("Ip6InDiscards") != 1 {
		t.Errorf("InDiscards v4 %d v6 %d, want 1 each", ct.Get("IpInDiscards"), ct.Get("Ip6InDiscards"))
	}
}

// Incomplete transit datagrams time out under the stack's timer and memory cap, and no
// ICMP time-exceeded is sent from our address for a datagram that was not sent to us.
func TestTransitFragmentsTimeout(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	s, ifc, c, _ := newTestStack(t, Options{Clock: clk, FragHighThresh: 64 << 10})
	s.SetUnmatchedHandler(func(uint8, netip.Addr, netip.Addr, []byte, bool) bool {
		t.Error("hook called for an incomplete datagram")
		return true
	})
	other4 := netip.MustParseAddr("198.51.100.7")
	other6 := netip.MustParseAddr("2001:db8::7")
	data := make([]byte, 16)
	ifc.DeliverPackets([][]byte{
		ip4(peer4, other4, wire.ProtoUDP, 1, wire.IPv4FlagMF, 0, data),
		ip6fragAfter(wire.ProtoDestOpts, peer6, other6, wire.ProtoUDP, 1, 0, true, data),
	})
	if n, _ := s.PendingReassembly(); n != 2 {
		t.Fatalf("pending %d, want 2", n)
	}
	big := make([]byte, 1400)
	for i := range 200 {
		ifc.DeliverPackets([][]byte{ip4(peer4, other4, wire.ProtoUDP, uint16(100+i), wire.IPv4FlagMF, 0, big)})
	}
	if _, b := s.PendingReassembly(); b > 64<<10 {
		t.Errorf("reassembly holds %d bytes, cap %d", b, 64<<10)
	}
	clk.Advance(DefaultFragTimeout)
	if n, b := s.PendingReassembly(); n != 0 || b != 0 {
		t.Errorf("after timeout: %d datagrams, %d bytes pending", n, b)
	}
	if out := c.take(); len(out) != 0 {
		t.Errorf("%d packets sent, want none", len(out))
	}
	if s.Counters().Get("IpReasmTimeout") == 0 || s.Counters().Get("Ip6ReasmTimeout") != 1 {
		t.Error("timeouts not counted")
	}
}

// FuzzTransitReassembly feeds fragments for other hosts to a stack with an unmatched-flow
// hook (as the forwarder installs one): no panic, the hook sees only well-formed
// addresses, and nothing is held past the reassembly timeout.
func FuzzTransitReassembly(f *testing.F) {
	other4 := netip.MustParseAddr("198.51.100.7")
	other6 := netip.MustParseAddr("2001:db8::7")
	f.Add(ip4(peer4, other4, wire.ProtoUDP, 1, wire.IPv4FlagMF, 0, make([]byte, 16)),
		ip4(peer4, other4, wire.ProtoUDP, 1, 0, 16, make([]byte, 5)))
	f.Add(ip6frag(peer6, other6, wire.ProtoUDP, 1, 0, true, make([]byte, 16)),
		ip6frag(peer6, other6, wire.ProtoUDP, 1, 16, false, make([]byte, 5)))
	f.Add(ip6fragAfter(wire.ProtoHopByHop, peer6, other6, wire.ProtoUDP, 1, 0, true, make([]byte, 16)),
		ip6fragAfter(wire.ProtoHopByHop, peer6, other6, wire.ProtoUDP, 1, 16, false, make([]byte, 5)))
	clk := clock.NewManual(time.Unix(1e9, 0))
	s := New(Options{Clock: clk, Forwarding: true})
	defer s.Close()
	c := &capture{mtu: 1500}
	ifc, _ := s.AddInterface("eth0", c)
	s.AddAddress("eth0", netip.MustParsePrefix("10.0.0.1/24"))
	s.AddAddress("eth0", netip.MustParsePrefix("fd00::1/64"))
	var bad bool
	s.SetUnmatchedHandler(func(proto uint8, src, dst netip.Addr, seg []byte, _ bool) bool {
		bad = bad || !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() || len(seg) > 0xffff
		return len(seg)%2 == 0
	})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ifc.DeliverPackets([][]byte{a, b, a})
		c.take()
		clk.Advance(DefaultFragTimeout)
		if bad {
			t.Fatal("hook got a malformed offer")
		}
		if n, by := s.PendingReassembly(); n != 0 || by != 0 {
			t.Fatalf("reassembly leaked %d datagrams, %d bytes", n, by)
		}
	})
}

// Issue 19 (4): a flood of incomplete fragments from many spoofed sources (100k IPv4,
// 50k IPv6, the figures seen on the wire) used to fill the one shared 4 MiB table in
// about 2,800 fragments and block all fragmented traffic until the 30 s timeout. Now the
// least recently used datagrams are evicted (Linux's high/low thresholds), each family has
// its own budget, and legitimate datagrams keep reassembling throughout.
func TestReassemblyFloodKeepsServing(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	s, ifc, _, k := newTestStack(t, Options{Clock: clk})
	data := make([]byte, 2960)
	for i := range data {
		data[i] = byte(i * 13)
	}
	junk := make([]byte, 64)
	flood4 := func(i int) []byte {
		src := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)})
		return ip4(src, us4, 200, uint16(i), wire.IPv4FlagMF, 0, junk)
	}
	flood6 := func(i int) []byte {
		a := netip.MustParseAddr("2001:db8::1").As16()
		binary.BigEndian.PutUint32(a[4:], uint32(i)) // a /64 of its own each
		return ip6frag(netip.AddrFrom16(a), us6, 200, uint32(i), 0, true, junk)
	}
	maxBytes, legit := 0, 0
	for i := range 100_000 {
		ifc.DeliverPackets([][]byte{flood4(i)})
		if i%2 == 0 {
			ifc.DeliverPackets([][]byte{flood6(i / 2)})
		}
		if i%10_000 == 5_000 {
			// A legitimate datagram per family, its fragments a thousand flood packets
			// apart.
			id := uint16(i)
			ifc.DeliverPackets([][]byte{
				ip4(peer4, us4, 200, id, wire.IPv4FlagMF, 0, data[:1480]),
				ip6frag(peer6, us6, 200, uint32(i), 0, true, data[:1480]),
			})
			for j := range 1000 {
				ifc.DeliverPackets([][]byte{flood4(i + 200_000 + j), flood6(i + 200_000 + j)})
			}
			ifc.DeliverPackets([][]byte{
				ip4(peer4, us4, 200, id, 0, 1480, data[1480:]),
				ip6frag(peer6, us6, 200, uint32(i), 1480, false, data[1480:]),
			})
			legit += 2
		}
		if i%1000 == 0 {
			_, b := s.PendingReassembly()
			maxBytes = max(maxBytes, b)
		}
	}
	if len(k.segs) != legit {
		t.Errorf("%d of %d legitimate datagrams reassembled during the flood", len(k.segs), legit)
	}
	for i, seg := range k.segs {
		if !bytes.Equal(seg, data) {
			t.Errorf("datagram %d: %d bytes, not the ones sent", i, len(seg))
		}
	}
	if lim := 2 * DefaultFragHighThresh; maxBytes > lim {
		t.Errorf("reassembly held %d bytes, over the two budgets' %d", maxBytes, lim)
	}
	ct := s.Counters()
	if ct.Get("IpReasmEvictions") == 0 || ct.Get("Ip6ReasmEvictions") == 0 {
		t.Errorf("evictions not counted: v4 %d, v6 %d", ct.Get("IpReasmEvictions"), ct.Get("Ip6ReasmEvictions"))
	}
	if f, e := ct.Get("IpReasmFails"), ct.Get("IpReasmEvictions"); f < e {
		t.Errorf("IpReasmFails %d < IpReasmEvictions %d: evictions are failures too", f, e)
	}
	clk.Advance(DefaultFragTimeout)
	if n, b := s.PendingReassembly(); n != 0 || b != 0 {
		t.Errorf("after the timeout: %d datagrams, %d bytes pending", n, b)
	}
}

// One source (an IPv4 address, an IPv6 /64) holds at most a quarter of its family's
// budget: its flood evicts its own datagrams, not an older one from someone else.
func TestReassemblyPerSourceShare(t *testing.T) {
	const high = 256 << 10
	s, ifc, _, k := newTestStack(t, Options{FragHighThresh: high})
	data := make([]byte, 2960)
	flooder4 := netip.MustParseAddr("10.0.0.3")
	ifc.DeliverPackets([][]byte{
		ip4(peer4, us4, 200, 1, wire.IPv4FlagMF, 0, data[:1480]),
		ip6frag(peer6, us6, 200, 1, 0, true, data[:1480]),
	})
	junk := make([]byte, 1024)
	for i := range 2000 {
		a := netip.MustParseAddr("fd00:0:0:1::3:0:0").As16()
		binary.BigEndian.PutUint16(a[14:], uint16(i)) // one /64, any host part
		ifc.DeliverPackets([][]byte{
			ip4(flooder4, us4, 200, uint16(i+10), wire.IPv4FlagMF, 0, junk),
			ip6frag(netip.AddrFrom16(a), us6, 200, uint32(i+10), 0, true, junk),
		})
		for _, tb := range []*fragTable{&s.reasm.v4, &s.reasm.v6} {
			tb.mu.Lock()
			src := tb.srcs[sourceKey(netip.AddrFrom16(a).Unmap())]
			if tb == &s.reasm.v4 {
				src = tb.srcs[sourceKey(flooder4)]
			}
			held := 0
			if src != nil {
				held = src.bytes
			}
			tb.mu.Unlock()
			if held > high/4 {
				t.Fatalf("after %d fragments one source holds %d bytes, over %d", i, held, high/4)
			}
		}
	}
	ifc.DeliverPackets([][]byte{
		ip4(peer4, us4, 200, 1, 0, 1480, data[1480:]),
		ip6frag(peer6, us6, 200, 1, 1480, false, data[1480:]),
	})
	if len(k.segs) != 2 {
		t.Errorf("%d of 2 datagrams from a quiet source survived another's flood", len(k.segs))
	}
}

// BenchmarkReassembly is the fragment path: a 2-fragment IPv4 datagram and a 2-fragment
// IPv6 one, reassembled and delivered.
func BenchmarkReassembly(b *testing.B) {
	s, ifc, _, k := newTestStack(b, Options{})
	k.closed = false
	data := make([]byte, 2960)
	p4a := ip4(peer4, us4, 200, 1, wire.IPv4FlagMF, 0, data[:1480])
	p4b := ip4(peer4, us4, 200, 1, 0, 1480, data[1480:])
	p6a := ip6frag(peer6, us6, 200, 1, 0, true, data[:1480])
	p6b := ip6frag(peer6, us6, 200, 1, 1480, false, data[1480:])
	s.RegisterTransport(200, discard{})
	pkts := [][]byte{p4a, p4b, p6a, p6b}
	b.ReportAllocs()
	b.SetBytes(2 * int64(len(data)))
	for b.Loop() {
		ifc.DeliverPackets(pkts)
	}
	if n, _ := s.PendingReassembly(); n != 0 {
		b.Fatalf("%d datagrams left incomplete", n)
	}
}

type discard struct{}

func (discard) HandlePacket(src, dst netip.Addr, seg []byte) bool                  { return false }
func (discard) HandleICMPError(netip.Addr, netip.Addr, []byte, syscall.Errno, int) {}

// checkFragTable verifies a table's bookkeeping: every datagram is on both lists once,
// the charges add up, no source is over its share and the table is within its budget.
func checkFragTable(t *testing.T, tb *fragTable, high int) {
	t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	n, sum := 0, 0
	for d := tb.lru.head; d != nil; d = d.next {
		if tb.m[d.key] != d {
			t.Fatalf("datagram %v on the list but not in the map", d.key)
		}
		n++
		sum += d.mem
	}
	if n != len(tb.m) || sum != tb.bytes {
		t.Fatalf("list holds %d datagrams, %d bytes; map %d, table %d bytes", n, sum, len(tb.m), tb.bytes)
	}
	srcSum := 0
	for k, src := range tb.srcs {
		b := 0
		for d := src.lru.head; d != nil; d = d.snext {
			if d.src != src {
				t.Fatalf("datagram on the wrong source's list")
			}
			b += d.mem
		}
		if b != src.bytes || src.lru.head == nil {
			t.Fatalf("source %v: list %d bytes, counted %d (empty %v)", k, b, src.bytes, src.lru.head == nil)
		}
		if src.bytes > high/4 {
			t.Fatalf("source %v holds %d bytes, over a quarter of %d", k, src.bytes, high)
		}
		srcSum += b
	}
	if srcSum != tb.bytes || tb.bytes > high {
		t.Fatalf("sources hold %d bytes, table %d, budget %d", srcSum, tb.bytes, high)
	}
}

// pattern is the fragment data FuzzReassemblyManySources sends: byte i of every datagram
// is byte(i), so a reassembled datagram shows any piece put in the wrong place.
var pattern = func() []byte {
	b := make([]byte, 0x10000)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

type patternSink struct{ bad, got int }

func (p *patternSink) HandlePacket(src, dst netip.Addr, seg []byte) bool {
	p.got++
	if !bytes.Equal(seg, pattern[:len(seg)]) {
		p.bad++
	}
	return false
}
func (p *patternSink) HandleICMPError(netip.Addr, netip.Addr, []byte, syscall.Errno, int) {}

// FuzzReassemblyManySources drives both fragment tables with fragments from many sources
// (each 5-byte record: family and M flag, source, ID, offset, length), under a small
// budget so that eviction and per-source shares are exercised: the bookkeeping stays
// consistent, no table or source goes over its bound, every datagram delivered is the one
// sent, and nothing is left after the timeout.
func FuzzReassemblyManySources(f *testing.F) {
	f.Add([]byte{0, 1, 1, 0, 4, 1, 1, 1, 4, 4})
	f.Add([]byte{2, 1, 1, 0, 4, 3, 1, 1, 4, 4})
	seed := make([]byte, 0, 5*400)
	for i := range 400 {
		seed = append(seed, byte(i&3)|0x80, byte(i), byte(i>>2), byte(i), 180)
	}
	f.Add(seed)
	const high = 32 << 10
	clk := clock.NewManual(time.Unix(1e9, 0))
	s := New(Options{Clock: clk, FragHighThresh: high})
	defer s.Close()
	c := &capture{mtu: 1500}
	ifc, _ := s.AddInterface("eth0", c)
	s.AddAddress("eth0", netip.MustParsePrefix("10.0.0.1/24"))
	s.AddAddress("eth0", netip.MustParsePrefix("fd00::1/64"))
	ps := &patternSink{}
	s.RegisterTransport(200, ps)
	f.Fuzz(func(t *testing.T, data []byte) {
		for ; len(data) >= 5; data = data[5:] {
			v6, more := data[0]&1 != 0, data[0]&2 != 0
			src := int(data[1] & 0x3f)
			if data[0]&0x80 != 0 {
				src = 0 // one source's flood
			}
			id := data[2] & 7
			off, n := int(data[3])*64, int(data[4])*8
			pl := pattern[off : off+n]
			var p []byte
			if v6 {
				a := netip.MustParseAddr("2001:db8::1").As16()
				a[5] = byte(src)
				p = ip6frag(netip.AddrFrom16(a), us6, 200, uint32(id), off, more, pl)
			} else {
				p = ip4(netip.AddrFrom4([4]byte{198, 18, 0, byte(src)}), us4, 200, uint16(id), 0, off, pl)
				if more {
					p = ip4(netip.AddrFrom4([4]byte{198, 18, 0, byte(src)}), us4, 200, uint16(id), wire.IPv4FlagMF, off, pl)
				}
			}
			ifc.DeliverPackets([][]byte{p})
			checkFragTable(t, &s.reasm.v4, high)
			checkFragTable(t, &s.reasm.v6, high)
		}
		c.take()
		if ps.bad != 0 {
			t.Fatalf("%d of %d reassembled datagrams differ from what was sent", ps.bad, ps.got)
		}
		clk.Advance(DefaultFragTimeout)
		if n, by := s.PendingReassembly(); n != 0 || by != 0 {
			t.Fatalf("reassembly left %d datagrams, %d bytes", n, by)
		}
	})
}
