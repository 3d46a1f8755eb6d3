package wire_test

import (
	"testing"

	"github.com/berthnet/berth/wire"
)

// Parse benchmarks: every parser must run at 0 allocs/op (docs/architecture.md: nothing
// allocates per packet).

var sink int

func BenchmarkParseIPv4(b *testing.B) {
	pkt := build(b, src4, dst4, wire.ProtoUDP, udpDgram("payload"))
	b.ReportAllocs()
	for b.Loop() {
		h, err := wire.ParseIPv4(pkt)
		if err != nil {
			b.Fatal(err)
		}
		sink += int(h.TTL()) + h.HeaderLen()
	}
}

func BenchmarkParseIPv6(b *testing.B) {
	pkt := v6(b, wire.ProtoTCP, tcpSeg(nil, "data"), nil)
	b.ReportAllocs()
	for b.Loop() {
		h, err := wire.ParseIPv6(pkt)
		if err != nil {
			b.Fatal(err)
		}
		proto, off, _, _, err := h.Upper()
		if err != nil {
			b.Fatal(err)
		}
		sink += int(proto) + off
	}
}

// BenchmarkParseIPv6Chain walks hop-by-hop, destination options, routing and fragment headers.
func BenchmarkParseIPv6Chain(b *testing.B) {
	pkt := v6(b, wire.ProtoUDP, udpDgram("chained"),
		[]uint8{wire.ProtoHopByHop, wire.ProtoDestOpts, wire.ProtoRouting, wire.ProtoFragment}, hbh8, dst16, routing8, fragHdr(0, false, 99))
	b.ReportAllocs()
	for b.Loop() {
		h, err := wire.ParseIPv6(pkt)
		if err != nil {
			b.Fatal(err)
		}
		proto, off, _, _, err := h.Upper()
		if err != nil {
			b.Fatal(err)
		}
		sink += int(proto) + off
	}
}

func BenchmarkParseTCPOptions(b *testing.B) {
	opts := &wire.TCPOptions{HasMSS: true, MSS: 1460, HasWindowScale: true, WindowScale: 7, SACKPermitted: true, HasTimestamps: true, TSVal: 1, TSEcr: 2}
	seg := tcpSeg(opts, "data")
	b.ReportAllocs()
	var o wire.TCPOptions
	for b.Loop() {
		h, err := wire.ParseTCP(seg)
		if err != nil {
			b.Fatal(err)
		}
		if err := h.ParseOptions(&o); err != nil {
			b.Fatal(err)
		}
		sink += int(o.MSS)
	}
}

func BenchmarkParseUDP(b *testing.B) {
	d := udpDgram("payload")
	b.ReportAllocs()
	for b.Loop() {
		h, err := wire.ParseUDP(d)
		if err != nil {
			b.Fatal(err)
		}
		sink += int(h.DstPort())
	}
}

func BenchmarkParseICMPv4(b *testing.B) {
	m := icmp4(wire.ICMPv4Fields{Type: wire.ICMPv4EchoRequest, ID: 1, Seq: 2}, make([]byte, 56))
	wire.SetICMPv4Checksum(m)
	b.ReportAllocs()
	for b.Loop() {
		h, err := wire.ParseICMPv4(m)
		if err != nil {
			b.Fatal(err)
		}
		sink += int(h.Seq())
	}
}

func BenchmarkParseICMPv6(b *testing.B) {
	m := icmp6(wire.ICMPv6Fields{Type: wire.ICMPv6EchoRequest, ID: 1, Seq: 2}, make([]byte, 56))
	wire.SetICMPv6Checksum(m, src6, dst6)
	b.ReportAllocs()
	for b.Loop() {
		h, err := wire.ParseICMPv6(m, src6, dst6)
		if err != nil {
			b.Fatal(err)
		}
		sink += int(h.Seq())
	}
}

func BenchmarkEncodeTCPIPv4(b *testing.B) {
	opts := &wire.TCPOptions{HasTimestamps: true, TSVal: 1, TSEcr: 2}
	buf := make([]byte, 20+32+1448)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		n := (&wire.TCPFields{SrcPort: 1, DstPort: 2, Seq: 3, Ack: 4, Flags: wire.TCPFlagACK, Window: 5, Options: opts}).Encode(buf[20:])
		(&wire.IPv4Fields{TotalLen: len(buf), TTL: 64, Protocol: wire.ProtoTCP, Src: src4, Dst: dst4}).Encode(buf)
		wire.SetTCPChecksum(buf[20:], src4, dst4)
		sink += n
	}
}

func benchChecksum(b *testing.B, n int) {
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = byte(i*7 + 3)
	}
	b.ReportAllocs()
	b.SetBytes(int64(n))
	for b.Loop() {
		sink += int(wire.Checksum(buf, 0))
	}
}

func BenchmarkChecksum1500(b *testing.B) { benchChecksum(b, 1500) }
func BenchmarkChecksum64K(b *testing.B)  { benchChecksum(b, 65536) }

func BenchmarkPseudoHeaderChecksumIPv6(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sink += int(wire.PseudoHeaderChecksum(wire.ProtoTCP, src6, dst6, 1440))
	}
}
