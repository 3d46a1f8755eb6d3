package wire_test

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/berthnet/berth/wire"
)

var (
	src4 = netip.MustParseAddr("192.0.2.1")
	dst4 = netip.MustParseAddr("198.51.100.7")
	src6 = netip.MustParseAddr("2001:db8::1")
	dst6 = netip.MustParseAddr("2001:db8:ffff::2")
)

// refChecksum is the RFC 1071 §4.1 reference loop: 16 bits at a time, folded at the end.
func refChecksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

func TestChecksumRFC1071Example(t *testing.T) {
	// RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
	if got := wire.Checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != 0xddf2 {
		t.Fatalf("sum = %#04x, want 0xddf2", got)
	}
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 70000)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	// All-ones bytes stress the carries.
	ones := make([]byte, 65536)
	for i := range ones {
		ones[i] = 0xff
	}
	for n := 0; n < 300; n++ {
		for _, off := range []int{0, 1, 3} {
			b := buf[off : off+n]
			if got, want := wire.Checksum(b, 0), refChecksum(b); got != want {
				t.Fatalf("len %d off %d: %#04x, want %#04x", n, off, got, want)
			}
			if got, want := wire.Checksum(ones[:n], 0), refChecksum(ones[:n]); got != want {
				t.Fatalf("ones len %d: %#04x, want %#04x", n, got, want)
			}
		}
	}
	for _, n := range []int{1500, 9000, 65535, 65536, 70000} {
		if got, want := wire.Checksum(buf[:n], 0), refChecksum(buf[:n]); got != want {
			t.Fatalf("len %d: %#04x, want %#04x", n, got, want)
		}
	}
	if got, want := wire.Checksum(ones, 0), refChecksum(ones); got != want {
		t.Fatalf("64 KiB of ones: %#04x, want %#04x", got, want)
	}
	// Chaining: an even-length prefix, then the rest, with initial.
	for i := 0; i < 100; i++ {
		n := r.IntN(2000)
		k := r.IntN(n+1) &^ 1
		if got, want := wire.Checksum(buf[k:n], wire.Checksum(buf[:k], 0)), refChecksum(buf[:n]); got != want {
			t.Fatalf("chain %d+%d: %#04x, want %#04x", k, n-k, got, want)
		}
		a, b := wire.Checksum(buf[:k], 0), wire.Checksum(buf[k:n], 0)
		if got, want := wire.Combine(a, b), refChecksum(buf[:n]); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("combine: %#04x, want %#04x", got, want)
		}
	}
}

func TestPseudoHeaderChecksum(t *testing.T) {
	// Build the pseudo-headers byte by byte (RFC 793 §3.1, RFC 8200 §8.1) and compare.
	p4 := make([]byte, 12)
	s, d := src4.As4(), dst4.As4()
	copy(p4, s[:])
	copy(p4[4:], d[:])
	p4[9] = wire.ProtoTCP
	binary.BigEndian.PutUint16(p4[10:], 1234)
	if got, want := wire.PseudoHeaderChecksum(wire.ProtoTCP, src4, dst4, 1234), refChecksum(p4); got != want {
		t.Fatalf("v4: %#04x, want %#04x", got, want)
	}
	mapped := netip.AddrFrom16(src4.As16())
	if got, want := wire.PseudoHeaderChecksum(wire.ProtoTCP, mapped, netip.AddrFrom16(dst4.As16()), 1234), refChecksum(p4); got != want {
		t.Fatalf("v4-mapped: %#04x, want %#04x", got, want)
	}
	p6 := make([]byte, 40)
	s6, d6 := src6.As16(), dst6.As16()
	copy(p6, s6[:])
	copy(p6[16:], d6[:])
	binary.BigEndian.PutUint32(p6[32:], 70000)
	p6[39] = wire.ProtoUDP
	if got, want := wire.PseudoHeaderChecksum(wire.ProtoUDP, src6, dst6, 70000), refChecksum(p6); got != want {
		t.Fatalf("v6: %#04x, want %#04x", got, want)
	}
}

func TestChecksumIncrementalUpdate(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 40)
	for i := 0; i < 2000; i++ {
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if i%7 == 0 { // RFC 1624 §3: the case where eqn. 2 goes wrong (sum of ones)
			for j := range b {
				b[j] = 0
			}
			b[0] = byte(r.Uint32())
		}
		hc := ^wire.Checksum(b, 0)
		off := 2 * r.IntN(len(b)/2-1)
		if i%2 == 0 {
			old := binary.BigEndian.Uint16(b[off:])
			nv := uint16(r.Uint32())
			binary.BigEndian.PutUint16(b[off:], nv)
			hc = wire.ChecksumUpdate16(hc, old, nv)
		} else {
			old := binary.BigEndian.Uint32(b[off:])
			nv := r.Uint32()
			binary.BigEndian.PutUint32(b[off:], nv)
			hc = wire.ChecksumUpdate32(hc, old, nv)
		}
		// Verification: the data plus the updated checksum must sum to 0xffff (or 0,
		// the other zero of ones' complement).
		if s := wire.Combine(wire.Checksum(b, 0), hc); s != 0xffff && s != 0 {
			t.Fatalf("iteration %d: updated checksum %#04x does not verify (sum %#04x)", i, hc, s)
		}
	}
}

func TestIPv4SettersKeepChecksum(t *testing.T) {
	b := make([]byte, 28)
	(&wire.IPv4Fields{TotalLen: 28, ID: 9, TTL: 64, Protocol: wire.ProtoUDP, Src: src4, Dst: dst4}).Encode(b)
	h, err := wire.ParseIPv4(b)
	if err != nil {
		t.Fatal(err)
	}
	h.SetTTL(3)
	h.SetSrc(netip.MustParseAddr("10.1.2.3"))
	h.SetDst(netip.MustParseAddr("10.255.0.1"))
	h2, err := wire.ParseIPv4(b)
	if err != nil {
		t.Fatalf("after setters: %v", err)
	}
	if h2.TTL() != 3 || h2.Src() != netip.MustParseAddr("10.1.2.3") || h2.Dst() != netip.MustParseAddr("10.255.0.1") {
		t.Fatalf("setters: ttl %d src %v dst %v", h2.TTL(), h2.Src(), h2.Dst())
	}
}

func TestIPv4RoundTripAndOptions(t *testing.T) {
	b := make([]byte, 100)
	f := wire.IPv4Fields{TOS: 0xb8, TotalLen: 60, ID: 0xbeef, Flags: wire.IPv4FlagMF, FragmentOffset: 1480, TTL: 17, Protocol: wire.ProtoUDP, Src: src4, Dst: dst4}
	f.Encode(b)
	h, err := wire.ParseIPv4(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.TOS() != 0xb8 || h.TotalLen() != 60 || len(h) != 60 || h.ID() != 0xbeef || !h.MoreFragments() || h.DontFragment() ||
		h.FragmentOffset() != 1480 || !h.IsFragment() || h.TTL() != 17 || h.Protocol() != wire.ProtoUDP ||
		h.Src() != src4 || h.Dst() != dst4 || h.HeaderLen() != 20 || len(h.Payload()) != 40 || len(h.Options()) != 0 ||
		h.Flags() != wire.IPv4FlagMF {
		t.Fatalf("round trip mismatch: % x", b[:20])
	}

	// A header with options (RFC 791 §3.1): NOP, record route (7) with room for 2
	// addresses, end of list. IHL 8; the payload starts after the options.
	opt := []byte{1, 7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0}
	pkt := make([]byte, 20+len(opt)+4)
	f = wire.IPv4Fields{TotalLen: len(pkt), TTL: 64, Protocol: wire.ProtoICMPv4, Src: src4, Dst: dst4, Flags: wire.IPv4FlagDF}
	f.Encode(pkt)
	copy(pkt[20:], opt)
	copy(pkt[32:], "data")
	pkt[0] = 0x40 | byte((20+len(opt))/4)
	binary.BigEndian.PutUint16(pkt[10:], 0)
	binary.BigEndian.PutUint16(pkt[10:], ^wire.Checksum(pkt[:32], 0))
	h, err = wire.ParseIPv4(append(pkt, 0, 0, 0)) // and link padding, cut off
	if err != nil {
		t.Fatal(err)
	}
	if h.HeaderLen() != 32 || string(h.Options()) != string(opt) || string(h.Payload()) != "data" || !h.DontFragment() || h.IsFragment() {
		t.Fatalf("options: hl %d opts % x payload %q", h.HeaderLen(), h.Options(), h.Payload())
	}
}

func TestIPv6RoundTrip(t *testing.T) {
	b := make([]byte, 48)
	(&wire.IPv6Fields{TrafficClass: 0xa5, FlowLabel: 0xabcde, PayloadLen: 8, NextHeader: wire.ProtoUDP, HopLimit: 255, Src: src6, Dst: dst6}).Encode(b)
	h, err := wire.ParseIPv6(append(b, 1, 2)) // trailing bytes cut off
	if err != nil {
		t.Fatal(err)
	}
	if h.TrafficClass() != 0xa5 || h.FlowLabel() != 0xabcde || h.PayloadLen() != 8 || len(h) != 48 || h.NextHeader() != wire.ProtoUDP ||
		h.HopLimit() != 255 || h.Src() != src6 || h.Dst() != dst6 || len(h.Payload()) != 8 {
		t.Fatalf("mismatch % x", b[:40])
	}
	h.SetHopLimit(1)
	if h.HopLimit() != 1 {
		t.Fatal("SetHopLimit")
	}
}

// ipv6Chain builds an IPv6 packet with the given extension headers (type, then raw bytes
// whose first byte, the next header, is patched here) and an upper-layer payload.
func ipv6Chain(t testing.TB, upper uint8, payload []byte, exts ...[]byte) []byte {
	t.Helper()
	pkt := make([]byte, 40)
	for _, e := range exts {
		pkt = append(pkt, e...)
	}
	pkt = append(pkt, payload...)
	(&wire.IPv6Fields{PayloadLen: len(pkt) - 40, NextHeader: upper, HopLimit: 64, Src: src6, Dst: dst6}).Encode(pkt)
	return pkt
}

// chain links headers: types[i] is the type of exts[i]; returns the bytes with next-header
// fields set and the first type to put in the fixed header.
func chain(types []uint8, upper uint8, exts ...[]byte) (first uint8, out [][]byte) {
	for i := range exts {
		e := append([]byte(nil), exts[i]...)
		if i+1 < len(exts) {
			e[0] = types[i+1]
		} else {
			e[0] = upper
		}
		out = append(out, e)
	}
	if len(types) == 0 {
		return upper, out
	}
	return types[0], out
}

func fragHdr(off int, more bool, id uint32) []byte {
	b := make([]byte, 8)
	(&wire.IPv6FragmentFields{Offset: off, More: more, ID: id}).Encode(b)
	return b
}

var (
	hbh8     = []byte{0, 0, 1, 4, 0, 0, 0, 0}                                  // PadN of 4
	dst16    = []byte{0, 1, 0x1e, 2, 0xaa, 0xbb, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0} // unknown opt, PadN 8
	routing8 = []byte{0, 0, 4, 0, 0, 0, 0, 0}                                  // type 4 (SRH-like), segments left 0
)

func TestIPv6ExtensionChain(t *testing.T) {
	payload := []byte("12345678upper")
	tests := []struct {
		name      string
		types     []uint8
		exts      [][]byte
		upper     uint8
		wantOff   int
		wantFrag  bool
		fragOff   int
		fragMore  bool
		wantProto uint8
		wantErr   wire.ErrorKind
		wantPtr   int
	}{
		{name: "none", upper: wire.ProtoUDP, wantOff: 40, wantProto: wire.ProtoUDP},
		{name: "all", types: []uint8{wire.ProtoHopByHop, wire.ProtoDestOpts, wire.ProtoRouting, wire.ProtoFragment, wire.ProtoDestOpts},
			exts: [][]byte{hbh8, dst16, routing8, fragHdr(0, true, 7), dst16}, upper: wire.ProtoTCP,
			wantOff: 40 + 8 + 16 + 8 + 8 + 16, wantFrag: true, fragMore: true, wantProto: wire.ProtoTCP},
		{name: "later fragment stops walk", types: []uint8{wire.ProtoHopByHop, wire.ProtoFragment},
			exts: [][]byte{hbh8, fragHdr(1232, false, 9)}, upper: wire.ProtoDestOpts,
			wantOff: 56, wantFrag: true, fragOff: 1232, wantProto: wire.ProtoDestOpts},
		{name: "no next header", types: []uint8{wire.ProtoDestOpts}, exts: [][]byte{dst16}, upper: wire.ProtoNoNext, wantOff: 56, wantProto: wire.ProtoNoNext},
		{name: "hop-by-hop not first", types: []uint8{wire.ProtoDestOpts, wire.ProtoHopByHop}, exts: [][]byte{dst16, hbh8}, upper: wire.ProtoUDP, wantErr: wire.ErrBadOption, wantPtr: 40},
		{name: "two fragment headers", types: []uint8{wire.ProtoFragment, wire.ProtoFragment}, exts: [][]byte{fragHdr(0, true, 1), fragHdr(0, true, 1)}, upper: wire.ProtoUDP, wantErr: wire.ErrBadOption, wantPtr: 40},
		{name: "bad TLV", types: []uint8{wire.ProtoHopByHop}, exts: [][]byte{{0, 0, 1, 5, 0, 0, 0, 0}}, upper: wire.ProtoUDP, wantErr: wire.ErrBadOption, wantPtr: 42},
		{name: "TLV missing length", types: []uint8{wire.ProtoDestOpts}, exts: [][]byte{{0, 0, 0, 0, 0, 0, 0, 7}}, upper: wire.ProtoUDP, wantErr: wire.ErrBadOption, wantPtr: 47},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first, exts := chain(tc.types, tc.upper, tc.exts...)
			h, err := wire.ParseIPv6(ipv6Chain(t, first, payload, exts...))
			if err != nil {
				t.Fatal(err)
			}
			proto, off, frag, hasFrag, err := h.Upper()
			if tc.wantErr != 0 {
				if !errors.Is(err, &wire.Error{Layer: "ipv6", Kind: tc.wantErr}) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				it := h.Extensions()
				for it.Next() {
				}
				if it.Err() != err || it.ErrPointer() != tc.wantPtr {
					t.Fatalf("iterator: err %v pointer %d, want pointer %d", it.Err(), it.ErrPointer(), tc.wantPtr)
				}
				return
			}
			if err != nil || proto != tc.wantProto || off != tc.wantOff || hasFrag != tc.wantFrag {
				t.Fatalf("Upper = %d, %d, %v, %v; want %d, %d, %v", proto, off, hasFrag, err, tc.wantProto, tc.wantOff, tc.wantFrag)
			}
			if hasFrag && (frag.Offset() != tc.fragOff || frag.More() != tc.fragMore) {
				t.Fatalf("frag offset %d more %v", frag.Offset(), frag.More())
			}
			if tc.fragOff == 0 && string(h[off:]) != string(payload) {
				t.Fatalf("upper payload %q", h[off:])
			}
			// The iterator reports each header with its offset and where it was named.
			it := h.Extensions()
			n, prevByte, at := 0, 6, 40
			for it.Next() {
				e := it.Header()
				if e.Type != tc.types[n] || e.Offset != at || e.NextHeaderByte != prevByte || h[e.NextHeaderByte] != e.Type {
					t.Fatalf("header %d: %+v", n, e)
				}
				prevByte, at = e.Offset, e.Offset+len(e.Bytes)
				n++
			}
			if n != len(tc.types) || it.Err() != nil {
				t.Fatalf("iterated %d headers, err %v", n, it.Err())
			}
		})
	}
}

func TestIPv6ChainTruncatedAndBounded(t *testing.T) {
	// Every truncation of a valid chain either parses or fails with a typed error.
	first, exts := chain([]uint8{wire.ProtoHopByHop, wire.ProtoRouting, wire.ProtoFragment}, wire.ProtoUDP, hbh8, routing8, fragHdr(0, false, 3))
	pkt := ipv6Chain(t, first, nil, exts...)
	for n := 40; n < len(pkt); n++ {
		p := append([]byte(nil), pkt[:n]...)
		binary.BigEndian.PutUint16(p[4:], uint16(n-40))
		h, err := wire.ParseIPv6(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, _, err := h.Upper(); err == nil {
			t.Fatalf("truncated to %d: no error", n)
		} else if !errors.Is(err, &wire.Error{Kind: wire.ErrTooShort}) && !errors.Is(err, &wire.Error{Kind: wire.ErrBadLength}) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	// A routing header claiming more bytes than there are.
	first, exts = chain([]uint8{wire.ProtoRouting}, wire.ProtoUDP, []byte{0, 3, 0, 0, 0, 0, 0, 0})
	h, _ := wire.ParseIPv6(ipv6Chain(t, first, nil, exts...))
	if _, _, _, _, err := h.Upper(); !errors.Is(err, &wire.Error{Layer: "ipv6", Kind: wire.ErrBadLength}) {
		t.Fatalf("long routing header: %v", err)
	}
	// 17 destination-options headers: over the bound.
	var types []uint8
	var raw [][]byte
	for i := 0; i < 17; i++ {
		types = append(types, wire.ProtoDestOpts)
		raw = append(raw, []byte{0, 0, 1, 4, 0, 0, 0, 0})
	}
	first, exts = chain(types, wire.ProtoUDP, raw...)
	h, _ = wire.ParseIPv6(ipv6Chain(t, first, nil, exts...))
	if _, _, _, _, err := h.Upper(); !errors.Is(err, &wire.Error{Kind: wire.ErrBadOption}) {
		t.Fatalf("17 headers: %v", err)
	}
}

func TestIPv6FragmentRoundTrip(t *testing.T) {
	b := make([]byte, 8)
	f := wire.IPv6FragmentFields{NextHeader: wire.ProtoUDP, Offset: 65528, More: true, ID: 0xdeadbeef}
	if n := f.Encode(b); n != 8 {
		t.Fatal(n)
	}
	v := wire.IPv6Fragment(b)
	if v.NextHeader() != wire.ProtoUDP || v.Offset() != 65528 || !v.More() || v.ID() != 0xdeadbeef || v.IsAtomic() || b[1] != 0 {
		t.Fatalf("% x", b)
	}
	(&wire.IPv6FragmentFields{NextHeader: wire.ProtoTCP, ID: 1}).Encode(b)
	if !v.IsAtomic() || v.More() || v.Offset() != 0 {
		t.Fatalf("atomic: % x", b)
	}
}

func TestTCPRoundTrip(t *testing.T) {
	for _, opts := range []*wire.TCPOptions{
		nil,
		{HasMSS: true, MSS: 1460, HasWindowScale: true, WindowScale: 7, SACKPermitted: true, HasTimestamps: true, TSVal: 5, TSEcr: 6},
		{SACKPermitted: true},
		{HasTimestamps: true, TSVal: 1, TSEcr: 2, NumSACK: 3, SACK: [4]wire.SACKBlock{{1, 2}, {3, 4}, {5, 6}}},
		{NumSACK: 4, SACK: [4]wire.SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}},
	} {
		b := make([]byte, 80)
		f := wire.TCPFields{SrcPort: 443, DstPort: 50000, Seq: 0xfffffff0, Ack: 17, Flags: wire.TCPFlagSYN | wire.TCPFlagACK | wire.TCPFlagECE, Window: 65535, Urgent: 3, Options: opts}
		n := f.Encode(b)
		if n != f.HeaderLen() || n%4 != 0 {
			t.Fatalf("Encode = %d, HeaderLen %d", n, f.HeaderLen())
		}
		copy(b[n:], "xyz")
		seg := b[:n+3]
		wire.SetTCPChecksum(seg, src6, dst6)
		h, err := wire.ParseTCP(seg)
		if err != nil {
			t.Fatal(err)
		}
		if !h.VerifyChecksum(src6, dst6) || h.VerifyChecksum(src6, dst4.Prev()) {
			t.Fatal("checksum")
		}
		if h.SrcPort() != 443 || h.DstPort() != 50000 || h.Seq() != 0xfffffff0 || h.Ack() != 17 || h.Flags() != f.Flags ||
			h.Window() != 65535 || h.Urgent() != 3 || h.DataOffset() != n || string(h.Payload()) != "xyz" || len(h.Options()) != n-20 {
			t.Fatalf("fields: % x", seg)
		}
		var got wire.TCPOptions
		if err := h.ParseOptions(&got); err != nil {
			t.Fatal(err)
		}
		want := wire.TCPOptions{}
		if opts != nil {
			want = *opts
		}
		if got != want {
			t.Fatalf("options: got %+v, want %+v", got, want)
		}
	}
}

func TestTCPOptionsSkipUnknown(t *testing.T) {
	// Unknown kind 30 (MPTCP) with a 6-byte length, then MSS; the End option stops parsing.
	b := []byte{1, 30, 6, 0, 0, 0, 0, 2, 4, 0x05, 0xb4, 0, 99, 99}
	var o wire.TCPOptions
	if err := wire.ParseTCPOptions(b, &o); err != nil || !o.HasMSS || o.MSS != 1460 {
		t.Fatalf("%v %+v", err, o)
	}
}

func TestUDPRoundTrip(t *testing.T) {
	for _, pair := range [][2]netip.Addr{{src4, dst4}, {src6, dst6}} {
		b := make([]byte, 13)
		(&wire.UDPFields{SrcPort: 53, DstPort: 5353, Length: 13}).Encode(b)
		copy(b[8:], "hello")
		wire.SetUDPChecksum(b, pair[0], pair[1])
		h, err := wire.ParseUDP(append(b, 0)) // padding cut off
		if err != nil {
			t.Fatal(err)
		}
		if h.SrcPort() != 53 || h.DstPort() != 5353 || h.Length() != 13 || string(h.Payload()) != "hello" || h.Checksum() == 0 {
			t.Fatalf("% x", h)
		}
		if !h.VerifyChecksum(pair[0], pair[1]) || h.VerifyChecksum(pair[1], pair[1]) {
			t.Fatal("checksum")
		}
		// A zero checksum means "none" on IPv4 only (RFC 768, RFC 8200 §8.1).
		h[6], h[7] = 0, 0
		if h.VerifyChecksum(pair[0], pair[1]) != pair[0].Is4() {
			t.Fatal("zero checksum")
		}
	}
	// A datagram whose sum is 0 is sent with 0xffff (RFC 768).
	b := make([]byte, 10)
	(&wire.UDPFields{Length: 10}).Encode(b)
	src := netip.AddrFrom4([4]byte{0, 0, 0, 0})
	// Choose the payload so that the complemented sum is 0.
	s := wire.Checksum(b[:8], wire.PseudoHeaderChecksum(wire.ProtoUDP, src, src, 10))
	binary.BigEndian.PutUint16(b[8:], 0xffff-s)
	wire.SetUDPChecksum(b, src, src)
	if binary.BigEndian.Uint16(b[6:]) != 0xffff || !wire.UDP(b).VerifyChecksum(src, src) {
		t.Fatalf("zero sum: checksum field %#04x", binary.BigEndian.Uint16(b[6:]))
	}
}

func TestICMPv4RoundTrip(t *testing.T) {
	tests := []struct {
		f    wire.ICMPv4Fields
		word [4]byte
	}{
		{wire.ICMPv4Fields{Type: wire.ICMPv4EchoRequest, ID: 0x1234, Seq: 0x5678, MTU: 9}, [4]byte{0x12, 0x34, 0x56, 0x78}},
		{wire.ICMPv4Fields{Type: wire.ICMPv4EchoReply, ID: 1, Seq: 2}, [4]byte{0, 1, 0, 2}},
		{wire.ICMPv4Fields{Type: wire.ICMPv4DestUnreachable, Code: wire.ICMPv4CodeFragNeeded, MTU: 1280, ID: 5}, [4]byte{0, 0, 5, 0}},
		{wire.ICMPv4Fields{Type: wire.ICMPv4DestUnreachable, Code: wire.ICMPv4CodePortUnreachable, MTU: 1280}, [4]byte{}},
		{wire.ICMPv4Fields{Type: wire.ICMPv4TimeExceeded, Code: wire.ICMPv4CodeTTLExceeded, Seq: 3}, [4]byte{}},
		{wire.ICMPv4Fields{Type: wire.ICMPv4ParamProblem, Pointer: 9}, [4]byte{9, 0, 0, 0}},
	}
	for _, tc := range tests {
		b := make([]byte, 8+5)
		if n := tc.f.Encode(b); n != 8 {
			t.Fatal(n)
		}
		if [4]byte(b[4:8]) != tc.word {
			t.Fatalf("%+v: word % x, want % x", tc.f, b[4:8], tc.word)
		}
		copy(b[8:], "odd!!")
		wire.SetICMPv4Checksum(b)
		m, err := wire.ParseICMPv4(b)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type() != tc.f.Type || m.Code() != tc.f.Code || string(m.Payload()) != "odd!!" || m.Checksum() == 0 {
			t.Fatalf("% x", m)
		}
		switch tc.f.Type {
		case wire.ICMPv4EchoRequest, wire.ICMPv4EchoReply:
			if m.ID() != tc.f.ID || m.Seq() != tc.f.Seq || m.IsError() {
				t.Fatal("echo fields")
			}
		case wire.ICMPv4DestUnreachable:
			if tc.f.Code == wire.ICMPv4CodeFragNeeded && m.MTU() != tc.f.MTU || !m.IsError() {
				t.Fatal("mtu")
			}
		case wire.ICMPv4ParamProblem:
			if m.Pointer() != tc.f.Pointer {
				t.Fatal("pointer")
			}
		}
	}
}

func TestICMPv6RoundTrip(t *testing.T) {
	tests := []struct {
		f    wire.ICMPv6Fields
		word uint32
	}{
		{wire.ICMPv6Fields{Type: wire.ICMPv6EchoRequest, ID: 0x1234, Seq: 0x5678, MTU: 7}, 0x12345678},
		{wire.ICMPv6Fields{Type: wire.ICMPv6EchoReply, ID: 1, Seq: 2}, 0x00010002},
		{wire.ICMPv6Fields{Type: wire.ICMPv6PacketTooBig, MTU: 1280, ID: 3}, 1280},
		{wire.ICMPv6Fields{Type: wire.ICMPv6DestUnreachable, Code: wire.ICMPv6CodePortUnreachable, MTU: 1}, 0},
		{wire.ICMPv6Fields{Type: wire.ICMPv6TimeExceeded, Code: wire.ICMPv6CodeHopLimitExceeded}, 0},
		{wire.ICMPv6Fields{Type: wire.ICMPv6ParamProblem, Code: wire.ICMPv6CodeUnrecognizedNextHeader, Pointer: 40}, 40},
	}
	for _, tc := range tests {
		b := make([]byte, 8+3)
		tc.f.Encode(b)
		if binary.BigEndian.Uint32(b[4:]) != tc.word {
			t.Fatalf("%+v: word % x", tc.f, b[4:8])
		}
		copy(b[8:], "abc")
		wire.SetICMPv6Checksum(b, src6, dst6)
		m, err := wire.ParseICMPv6(b, src6, dst6)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wire.ParseICMPv6(b, dst6, src6.Next()); !errors.Is(err, &wire.Error{Kind: wire.ErrBadChecksum}) {
			t.Fatalf("wrong pseudo-header accepted: %v", err)
		}
		if m.Type() != tc.f.Type || m.Code() != tc.f.Code || string(m.Payload()) != "abc" || m.IsError() != (tc.f.Type < 128) {
			t.Fatalf("% x", m)
		}
		switch tc.f.Type {
		case wire.ICMPv6EchoRequest, wire.ICMPv6EchoReply:
			if m.ID() != tc.f.ID || m.Seq() != tc.f.Seq {
				t.Fatal("echo")
			}
		case wire.ICMPv6PacketTooBig:
			if m.MTU() != tc.f.MTU {
				t.Fatal("mtu")
			}
		case wire.ICMPv6ParamProblem:
			if m.Pointer() != tc.f.Pointer {
				t.Fatal("pointer")
			}
		}
	}
}

func TestParseIPv4Quote(t *testing.T) {
	// An ICMP error quotes the header and the first 8 bytes of a 1000-byte datagram.
	orig := make([]byte, 1000)
	(&wire.IPv4Fields{TotalLen: 1000, TTL: 1, Protocol: wire.ProtoUDP, Src: src4, Dst: dst4}).Encode(orig)
	(&wire.UDPFields{SrcPort: 1, DstPort: 33434, Length: 980}).Encode(orig[20:])
	if _, err := wire.ParseIPv4(orig[:28]); !errors.Is(err, &wire.Error{Kind: wire.ErrBadLength}) {
		t.Fatalf("ParseIPv4 on a quote: %v", err)
	}
	q, err := wire.ParseIPv4Quote(orig[:28])
	if err != nil {
		t.Fatal(err)
	}
	if q.TotalLen() != 1000 || len(q.Payload()) != 8 || binary.BigEndian.Uint16(q.Payload()[2:]) != 33434 {
		t.Fatalf("quote % x", q)
	}
	// A quote with a stale header checksum (rewritten on the way) is still read, as Linux
	// reads it.
	orig[10] ^= 0xff
	if _, err := wire.ParseIPv4Quote(orig[:28]); err != nil {
		t.Fatalf("quote with a stale checksum: %v", err)
	}
}
