package wire_test

// Cross-checks against an independent decoder, github.com/gopacket/gopacket/layers (a
// test-only dependency): packets wire builds are decoded by gopacket, packets gopacket
// serializes are parsed by wire, and packets captured from the Linux kernel
// (testdata/kernel.pcap, see testdata/README.md) are parsed by both; every field must agree.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/berthnet/berth/wire"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	if a.Is4In6() {
		a = a.Unmap()
	}
	return a
}

// checkMode says how to treat transport checksums.
type checkMode int

const (
	sumValid   checkMode = iota // checksums must verify, in wire and in gopacket
	sumPartial                  // kernel loopback capture: the field holds the pseudo-header sum
)

// result summarises what crossCheck saw, so callers can assert that coverage happened.
type result struct {
	ipv        int
	proto      uint8
	extTypes   []uint8
	frag       bool
	fragOff    int
	fragMore   bool
	fragID     uint32
	fragData   []byte
	icmpType   uint8
	tcpOptions wire.TCPOptions
}

// crossCheck parses the IP packet pkt with wire and with gopacket and compares every field.
func crossCheck(t *testing.T, pkt []byte, mode checkMode) result {
	t.Helper()
	var r result
	var src, dst netip.Addr
	var proto uint8
	var upper []byte
	switch pkt[0] >> 4 {
	case 4:
		r.ipv = 4
		h, err := wire.ParseIPv4(pkt)
		if err != nil {
			t.Fatalf("wire: %v", err)
		}
		gp := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
		g, ok := gp.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !ok {
			t.Fatalf("gopacket: no IPv4 layer: %v", gp.ErrorLayer())
		}
		if int(g.IHL)*4 != h.HeaderLen() || g.TOS != h.TOS() || int(g.Length) != h.TotalLen() || g.Id != h.ID() ||
			uint16(g.Flags) != h.Flags()>>13 || int(g.FragOffset)*8 != h.FragmentOffset() || g.TTL != h.TTL() ||
			uint8(g.Protocol) != h.Protocol() || g.Checksum != h.Checksum() || addrOf(g.SrcIP) != h.Src() || addrOf(g.DstIP) != h.Dst() {
			t.Fatalf("IPv4 mismatch:\n gopacket %+v\n wire % x", g, []byte(h[:h.HeaderLen()]))
		}
		var optLen int
		for _, o := range g.Options {
			optLen += max(int(o.OptionLength), 1)
		}
		if optLen > len(h.Options()) || !bytes.Equal(g.Payload, h.Payload()) {
			t.Fatalf("IPv4 options (%d bytes in gopacket, %d in wire) or payload differ", optLen, len(h.Options()))
		}
		src, dst, proto, upper = h.Src(), h.Dst(), h.Protocol(), h.Payload()
		if h.IsFragment() {
			r.frag, r.fragOff, r.fragMore, r.fragID, r.fragData = true, h.FragmentOffset(), h.MoreFragments(), uint32(h.ID()), h.Payload()
			r.proto = proto
			return r
		}
	case 6:
		r.ipv = 6
		h, err := wire.ParseIPv6(pkt)
		if err != nil {
			t.Fatalf("wire: %v", err)
		}
		gp := gopacket.NewPacket(pkt, layers.LayerTypeIPv6, gopacket.Default)
		g, ok := gp.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if !ok {
			t.Fatalf("gopacket: no IPv6 layer: %v", gp.ErrorLayer())
		}
		if g.TrafficClass != h.TrafficClass() || g.FlowLabel != h.FlowLabel() || int(g.Length) != h.PayloadLen() ||
			uint8(g.NextHeader) != h.NextHeader() || g.HopLimit != h.HopLimit() || addrOf(g.SrcIP) != h.Src() || addrOf(g.DstIP) != h.Dst() {
			t.Fatalf("IPv6 mismatch:\n gopacket %+v\n wire % x", g, []byte(h[:40]))
		}
		p, off, frag, hasFrag, err := h.Upper()
		if err != nil {
			t.Fatalf("wire Upper: %v", err)
		}
		// gopacket's extension layers follow the IPv6 layer in chain order; a
		// hop-by-hop header it keeps inside the IPv6 layer (g.HopByHop).
		it := h.Extensions()
		ls := gp.Layers()[1:]
		if g.HopByHop != nil && len(ls) > 0 && ls[0].LayerType() == layers.LayerTypeIPv6HopByHop {
			// newer gopacket versions list it as a layer too; fine either way
		} else if g.HopByHop != nil {
			ls = append([]gopacket.Layer{g.HopByHop}, ls...)
		}
		i := 0
		for it.Next() {
			e := it.Header()
			r.extTypes = append(r.extTypes, e.Type)
			if i >= len(ls) {
				t.Fatalf("wire found extension header %d (type %d), gopacket did not", i, e.Type)
			}
			var next layers.IPProtocol
			var contents []byte
			switch gl := ls[i].(type) {
			case *layers.IPv6HopByHop:
				next, contents = gl.NextHeader, gl.Contents
				if e.Type != wire.ProtoHopByHop {
					t.Fatalf("ext %d: wire type %d, gopacket hop-by-hop", i, e.Type)
				}
			case *layers.IPv6Destination:
				next, contents = gl.NextHeader, gl.Contents
				if e.Type != wire.ProtoDestOpts {
					t.Fatalf("ext %d: wire type %d, gopacket destination", i, e.Type)
				}
			case *layers.IPv6Routing:
				next, contents = gl.NextHeader, gl.Contents
				if e.Type != wire.ProtoRouting {
					t.Fatalf("ext %d: wire type %d, gopacket routing", i, e.Type)
				}
			case *layers.IPv6Fragment:
				next, contents = gl.NextHeader, gl.Contents
				f := wire.IPv6Fragment(e.Bytes)
				if e.Type != wire.ProtoFragment || int(gl.FragmentOffset)*8 != f.Offset() || gl.MoreFragments != f.More() ||
					gl.Identification != f.ID() || uint8(gl.NextHeader) != f.NextHeader() {
					t.Fatalf("fragment header: gopacket %+v, wire % x", gl, e.Bytes)
				}
			default:
				t.Fatalf("ext %d: wire type %d, gopacket layer %v", i, e.Type, ls[i].LayerType())
			}
			if uint8(next) != e.Bytes[0] || !bytes.Equal(contents, e.Bytes) {
				t.Fatalf("ext %d: next header %d vs %d, contents % x vs % x", i, next, e.Bytes[0], contents, e.Bytes)
			}
			i++
		}
		src, dst, proto, upper = h.Src(), h.Dst(), p, h[off:]
		if hasFrag {
			r.frag, r.fragOff, r.fragMore, r.fragID = true, frag.Offset(), frag.More(), frag.ID()
			// gopacket v1.7.7 stops at every fragment header, atomic ones included
			// (RFC 6946), so the transport layer is not compared here; the data is
			// returned for reassembly.
			r.fragData = h[off:]
			if frag.Offset() == 0 && it.Header().Type != wire.ProtoFragment {
				t.Fatal("first fragment: the chain did not end after the fragment header")
			}
			r.proto = frag.NextHeader()
			return r
		}
		ls = ls[i:]
		if len(ls) == 0 && proto != wire.ProtoNoNext {
			t.Fatalf("gopacket has no layer for upper protocol %d", proto)
		}
	default:
		t.Fatalf("version %d", pkt[0]>>4)
	}
	r.proto = proto
	gp := gopacket.NewPacket(pkt, map[int]gopacket.LayerType{4: layers.LayerTypeIPv4, 6: layers.LayerTypeIPv6}[r.ipv], gopacket.Default)
	netLayer := gp.NetworkLayer()
	switch proto {
	case wire.ProtoTCP:
		h, err := wire.ParseTCP(upper)
		if err != nil {
			t.Fatalf("wire tcp: %v", err)
		}
		g, ok := gp.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			t.Fatalf("gopacket: no TCP layer: %v", gp.ErrorLayer())
		}
		fl := h.Flags()
		if uint16(g.SrcPort) != h.SrcPort() || uint16(g.DstPort) != h.DstPort() || g.Seq != h.Seq() || g.Ack != h.Ack() ||
			int(g.DataOffset)*4 != h.DataOffset() || g.Window != h.Window() || g.Checksum != h.Checksum() || g.Urgent != h.Urgent() ||
			g.FIN != (fl&wire.TCPFlagFIN != 0) || g.SYN != (fl&wire.TCPFlagSYN != 0) || g.RST != (fl&wire.TCPFlagRST != 0) ||
			g.PSH != (fl&wire.TCPFlagPSH != 0) || g.ACK != (fl&wire.TCPFlagACK != 0) || g.URG != (fl&wire.TCPFlagURG != 0) ||
			g.ECE != (fl&wire.TCPFlagECE != 0) || g.CWR != (fl&wire.TCPFlagCWR != 0) || !bytes.Equal(g.Payload, h.Payload()) {
			t.Fatalf("TCP mismatch:\n gopacket %+v\n wire % x", g, []byte(h[:h.DataOffset()]))
		}
		var o wire.TCPOptions
		if err := h.ParseOptions(&o); err != nil {
			t.Fatalf("wire options: %v", err)
		}
		var want wire.TCPOptions
		for _, opt := range g.Options {
			d := opt.OptionData
			switch opt.OptionType {
			case layers.TCPOptionKindMSS:
				want.HasMSS, want.MSS = true, binary.BigEndian.Uint16(d)
			case layers.TCPOptionKindWindowScale:
				want.HasWindowScale, want.WindowScale = true, d[0]
			case layers.TCPOptionKindSACKPermitted:
				want.SACKPermitted = true
			case layers.TCPOptionKindTimestamps:
				want.HasTimestamps, want.TSVal, want.TSEcr = true, binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:])
			case layers.TCPOptionKindSACK:
				for ; len(d) >= 8; d = d[8:] {
					want.SACK[want.NumSACK] = wire.SACKBlock{Left: binary.BigEndian.Uint32(d), Right: binary.BigEndian.Uint32(d[4:])}
					want.NumSACK++
				}
			}
		}
		if o != want {
			t.Fatalf("TCP options: wire %+v, gopacket %+v", o, want)
		}
		r.tcpOptions = o
		checkTransportSum(t, mode, h.VerifyChecksum(src, dst), h.Checksum(), wire.ProtoTCP, src, dst, len(h), g, netLayer)
	case wire.ProtoUDP:
		h, err := wire.ParseUDP(upper)
		if err != nil {
			t.Fatalf("wire udp: %v", err)
		}
		g, ok := gp.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok {
			t.Fatalf("gopacket: no UDP layer: %v", gp.ErrorLayer())
		}
		if uint16(g.SrcPort) != h.SrcPort() || uint16(g.DstPort) != h.DstPort() || int(g.Length) != h.Length() ||
			g.Checksum != h.Checksum() || !bytes.Equal(g.Payload, h.Payload()) {
			t.Fatalf("UDP mismatch:\n gopacket %+v\n wire % x", g, []byte(h[:8]))
		}
		checkTransportSum(t, mode, h.VerifyChecksum(src, dst), h.Checksum(), wire.ProtoUDP, src, dst, len(h), g, netLayer)
	case wire.ProtoICMPv4:
		h, err := wire.ParseICMPv4(upper)
		if err != nil {
			t.Fatalf("wire icmpv4: %v", err) // ICMP has no offload: always a full checksum
		}
		g, ok := gp.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if !ok {
			t.Fatalf("gopacket: no ICMPv4 layer: %v", gp.ErrorLayer())
		}
		if _, v := g.VerifyChecksum(); !v.Valid {
			t.Fatal("gopacket says the ICMPv4 checksum is wrong")
		}
		if g.TypeCode.Type() != h.Type() || g.TypeCode.Code() != h.Code() || g.Checksum != h.Checksum() ||
			g.Id != h.ID() || g.Seq != h.Seq() || !bytes.Equal(g.Payload, h.Payload()) {
			t.Fatalf("ICMPv4 mismatch:\n gopacket %+v\n wire % x", g, []byte(h[:8]))
		}
		if h.Type() == wire.ICMPv4DestUnreachable && h.Code() == wire.ICMPv4CodeFragNeeded && h.MTU() != g.Seq {
			t.Fatal("MTU")
		}
		r.icmpType = h.Type()
	case wire.ProtoICMPv6:
		h, err := wire.ParseICMPv6(upper, src, dst)
		if err != nil {
			t.Fatalf("wire icmpv6: %v", err)
		}
		g, ok := gp.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
		if !ok {
			t.Fatalf("gopacket: no ICMPv6 layer: %v", gp.ErrorLayer())
		}
		if nl, ok := netLayer.(*layers.IPv6); ok {
			_ = g.SetNetworkLayerForChecksum(nl)
		}
		if _, v := g.VerifyChecksum(); !v.Valid {
			t.Fatal("gopacket says the ICMPv6 checksum is wrong")
		}
		if g.TypeCode.Type() != h.Type() || g.TypeCode.Code() != h.Code() || g.Checksum != h.Checksum() ||
			!bytes.Equal(g.Payload, h[4:]) {
			t.Fatalf("ICMPv6 mismatch:\n gopacket %+v\n wire % x", g, []byte(h[:8]))
		}
		if e, ok := gp.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); ok {
			if e.Identifier != h.ID() || e.SeqNumber != h.Seq() || !bytes.Equal(e.Payload, h.Payload()) {
				t.Fatalf("ICMPv6 echo: gopacket %+v, wire id %d seq %d", e, h.ID(), h.Seq())
			}
		} else if h.Type() == wire.ICMPv6EchoRequest || h.Type() == wire.ICMPv6EchoReply {
			t.Fatal("gopacket found no echo layer")
		}
		if h.Type() == wire.ICMPv6PacketTooBig && h.MTU() != binary.BigEndian.Uint32(g.Payload) {
			t.Fatal("MTU")
		}
		r.icmpType = h.Type()
	}
	return r
}

type checksumLayer interface {
	SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
	VerifyChecksum() (error, gopacket.ChecksumVerificationResult)
}

func checkTransportSum(t *testing.T, mode checkMode, wireOK bool, field uint16, proto uint8, src, dst netip.Addr, n int, g checksumLayer, nl gopacket.NetworkLayer) {
	t.Helper()
	switch mode {
	case sumValid:
		if err := g.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		_, v := g.VerifyChecksum()
		if !wireOK || !v.Valid {
			t.Fatalf("checksum %#04x: wire ok %v, gopacket ok %v (correct %#04x)", field, wireOK, v.Valid, v.Correct)
		}
	case sumPartial:
		// Linux loopback leaves transport checksums to "hardware" (CHECKSUM_PARTIAL): the
		// field holds the folded pseudo-header sum, an independent check of ours.
		if want := wire.PseudoHeaderChecksum(proto, src, dst, n); field != want {
			t.Fatalf("partial checksum %#04x, pseudo-header sum %#04x", field, want)
		}
	}
}

// build assembles an IPv4 packet with wire's builders: the header, then the transport
// bytes, whose checksum it sets. (IPv6 packets: see v6.)
func build(t testing.TB, src, dst netip.Addr, proto uint8, transport []byte) []byte {
	t.Helper()
	pkt := make([]byte, 20, 20+len(transport))
	pkt = append(pkt, transport...)
	(&wire.IPv4Fields{TOS: 0x10, TotalLen: len(pkt), ID: 4242, Flags: wire.IPv4FlagDF, TTL: 61, Protocol: proto, Src: src, Dst: dst}).Encode(pkt)
	tr := pkt[20:]
	switch proto {
	case wire.ProtoTCP:
		wire.SetTCPChecksum(tr, src, dst)
	case wire.ProtoUDP:
		wire.SetUDPChecksum(tr, src, dst)
	case wire.ProtoICMPv4:
		wire.SetICMPv4Checksum(tr)
	}
	return pkt
}

func tcpSeg(opts *wire.TCPOptions, payload string) []byte {
	f := wire.TCPFields{SrcPort: 40000, DstPort: 80, Seq: 0x01020304, Ack: 0xa0b0c0d0, Flags: wire.TCPFlagACK | wire.TCPFlagPSH | wire.TCPFlagCWR, Window: 501, Urgent: 0, Options: opts}
	b := make([]byte, f.HeaderLen()+len(payload))
	f.Encode(b)
	copy(b[f.HeaderLen():], payload)
	return b
}

func udpDgram(payload string) []byte {
	b := make([]byte, 8+len(payload))
	(&wire.UDPFields{SrcPort: 5353, DstPort: 53, Length: len(b)}).Encode(b)
	copy(b[8:], payload)
	return b
}

func icmp4(f wire.ICMPv4Fields, body []byte) []byte {
	b := make([]byte, 8+len(body))
	f.Encode(b)
	copy(b[8:], body)
	return b
}

func icmp6(f wire.ICMPv6Fields, body []byte) []byte {
	b := make([]byte, 8+len(body))
	f.Encode(b)
	copy(b[8:], body)
	return b
}

// v6 builds an IPv6 packet whose extension headers are of the given types (raw bytes;
// next-header fields are set here), then proto's bytes with their checksum.
func v6(t testing.TB, proto uint8, transport []byte, types []uint8, exts ...[]byte) []byte {
	t.Helper()
	first, linked := chain(types, proto, exts...)
	pkt := ipv6Chain(t, first, transport, linked...)
	(&wire.IPv6Fields{TrafficClass: 0x2e, FlowLabel: 0x12345, PayloadLen: len(pkt) - 40, NextHeader: first, HopLimit: 3, Src: src6, Dst: dst6}).Encode(pkt)
	tr := pkt[len(pkt)-len(transport):]
	switch proto {
	case wire.ProtoTCP:
		wire.SetTCPChecksum(tr, src6, dst6)
	case wire.ProtoUDP:
		wire.SetUDPChecksum(tr, src6, dst6)
	case wire.ProtoICMPv6:
		wire.SetICMPv6Checksum(tr, src6, dst6)
	}
	return pkt
}

func TestWireToGopacket(t *testing.T) {
	full := &wire.TCPOptions{HasMSS: true, MSS: 1460, HasWindowScale: true, WindowScale: 14, SACKPermitted: true, HasTimestamps: true, TSVal: 0xdeadbeef, TSEcr: 7}
	sack := &wire.TCPOptions{HasTimestamps: true, TSVal: 1, TSEcr: 2, NumSACK: 3, SACK: [4]wire.SACKBlock{{100, 200}, {300, 400}, {0xfffffff0, 16}}}
	quote := validIPv4()
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"ipv4 tcp syn options", build(t, src4, dst4, wire.ProtoTCP, tcpSeg(full, ""))},
		{"ipv4 tcp sack", build(t, src4, dst4, wire.ProtoTCP, tcpSeg(sack, "payload"))},
		{"ipv4 tcp no options", build(t, src4, dst4, wire.ProtoTCP, tcpSeg(nil, "odd"))},
		{"ipv4 udp", build(t, src4, dst4, wire.ProtoUDP, udpDgram("hello"))},
		{"ipv4 echo", build(t, src4, dst4, wire.ProtoICMPv4, icmp4(wire.ICMPv4Fields{Type: wire.ICMPv4EchoRequest, ID: 77, Seq: 3}, []byte("ping")))},
		{"ipv4 port unreachable", build(t, src4, dst4, wire.ProtoICMPv4, icmp4(wire.ICMPv4Fields{Type: wire.ICMPv4DestUnreachable, Code: wire.ICMPv4CodePortUnreachable}, quote))},
		{"ipv4 frag needed", build(t, src4, dst4, wire.ProtoICMPv4, icmp4(wire.ICMPv4Fields{Type: wire.ICMPv4DestUnreachable, Code: wire.ICMPv4CodeFragNeeded, MTU: 1400}, quote))},
		{"ipv4 time exceeded", build(t, src4, dst4, wire.ProtoICMPv4, icmp4(wire.ICMPv4Fields{Type: wire.ICMPv4TimeExceeded}, quote))},
		{"ipv6 tcp sack", v6(t, wire.ProtoTCP, tcpSeg(sack, "x"), nil)},
		{"ipv6 tcp syn", v6(t, wire.ProtoTCP, tcpSeg(full, ""), nil)},
		{"ipv6 udp ext chain", v6(t, wire.ProtoUDP, udpDgram("chained"),
			[]uint8{wire.ProtoHopByHop, wire.ProtoDestOpts, wire.ProtoRouting, wire.ProtoFragment}, hbh8, dst16, routing8, fragHdr(0, false, 99))},
		{"ipv6 first fragment", v6(t, wire.ProtoUDP, udpDgram("first"), []uint8{wire.ProtoFragment}, fragHdr(0, true, 5))},
		{"ipv6 later fragment", v6(t, wire.ProtoUDP, []byte("more data"), []uint8{wire.ProtoDestOpts, wire.ProtoFragment}, dst16, fragHdr(1448, false, 5))},
		{"ipv6 echo", v6(t, wire.ProtoICMPv6, icmp6(wire.ICMPv6Fields{Type: wire.ICMPv6EchoReply, ID: 9, Seq: 10}, []byte("pong")), nil)},
		{"ipv6 packet too big", v6(t, wire.ProtoICMPv6, icmp6(wire.ICMPv6Fields{Type: wire.ICMPv6PacketTooBig, MTU: 1280}, make([]byte, 48)), nil)},
		{"ipv6 port unreachable", v6(t, wire.ProtoICMPv6, icmp6(wire.ICMPv6Fields{Type: wire.ICMPv6DestUnreachable, Code: wire.ICMPv6CodePortUnreachable}, make([]byte, 48)), nil)},
		{"ipv6 time exceeded", v6(t, wire.ProtoICMPv6, icmp6(wire.ICMPv6Fields{Type: wire.ICMPv6TimeExceeded}, make([]byte, 48)), []uint8{wire.ProtoDestOpts}, dst16)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := crossCheck(t, tc.pkt, sumValid)
			if r.proto == 0 {
				t.Fatal("no upper protocol seen")
			}
		})
	}
}

func TestGopacketToWire(t *testing.T) {
	ip4 := &layers.IPv4{Version: 4, TOS: 0x28, Id: 999, Flags: layers.IPv4DontFragment, TTL: 9, SrcIP: net.IP(src4.AsSlice()), DstIP: net.IP(dst4.AsSlice()),
		Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}}
	ip6 := func(next layers.IPProtocol) *layers.IPv6 {
		return &layers.IPv6{Version: 6, TrafficClass: 0xfe, FlowLabel: 0xfffff, NextHeader: next, HopLimit: 1, SrcIP: net.IP(src6.AsSlice()), DstIP: net.IP(dst6.AsSlice())}
	}
	tcp := func() *layers.TCP {
		return &layers.TCP{SrcPort: 1234, DstPort: 443, Seq: 1, Ack: 2, DataOffset: 0, SYN: true, ACK: true, ECE: true, Window: 65535,
			Options: []layers.TCPOption{
				{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
				{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
				{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
				{OptionType: 253, OptionLength: 2}, // experimental (RFC 6994), skipped
				{OptionType: layers.TCPOptionKindSACK, OptionLength: 18, OptionData: []byte{0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 1, 0, 0, 0, 2, 0}},
			}}
	}
	udp := func() *layers.UDP { return &layers.UDP{SrcPort: 9999, DstPort: 53} }
	ser := func(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
		t.Helper()
		for _, l := range ls {
			if c, ok := l.(interface {
				SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
			}); ok {
				if err := c.SetNetworkLayerForChecksum(ls[0].(gopacket.NetworkLayer)); err != nil {
					t.Fatal(err)
				}
			}
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	dstOpts := &layers.IPv6Destination{Options: []*layers.IPv6DestinationOption{{OptionType: 0x1e, OptionLength: 4, OptionData: []byte{1, 2, 3, 4}}}}
	dstOpts.NextHeader = layers.IPProtocolIPv6Fragment
	fragL := &layers.IPv6Fragment{NextHeader: layers.IPProtocolUDP, Identification: 0x01020304}
	icmp6Layer := func(typ, code uint8) *layers.ICMPv6 {
		return &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	}

	ip4tcp := *ip4
	ip4tcp.Protocol = layers.IPProtocolTCP
	ip4udp := *ip4
	ip4udp.Protocol = layers.IPProtocolUDP
	ip4icmp := *ip4
	ip4icmp.Protocol = layers.IPProtocolICMPv4

	cases := []struct {
		name string
		pkt  []byte
		want func(t *testing.T, r result)
	}{
		{"ipv4 options tcp", ser(t, &ip4tcp, tcp(), gopacket.Payload("data")), func(t *testing.T, r result) {
			o := r.tcpOptions
			if !o.HasMSS || o.MSS != 1460 || !o.HasWindowScale || o.WindowScale != 7 || !o.SACKPermitted || !o.HasTimestamps ||
				o.TSVal != 0x01020304 || o.NumSACK != 2 || o.SACK[1] != (wire.SACKBlock{Left: 256, Right: 512}) {
				t.Fatalf("options %+v", o)
			}
		}},
		{"ipv4 udp", ser(t, &ip4udp, udp(), gopacket.Payload("question")), nil},
		{"ipv4 echo", ser(t, &ip4icmp, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 5, Seq: 6}, gopacket.Payload("abcdefgh")), nil},
		{"ipv4 host unreachable", ser(t, &ip4icmp, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 1)}, gopacket.Payload(validIPv4())), nil},
		{"ipv4 frag needed", ser(t, &ip4icmp, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: 576}, gopacket.Payload(validIPv4())), nil},
		{"ipv6 tcp", ser(t, ip6(layers.IPProtocolTCP), tcp()), nil},
		{"ipv6 udp", ser(t, ip6(layers.IPProtocolUDP), udp(), gopacket.Payload("x")), nil},
		{"ipv6 dest opts + atomic fragment + udp", ser(t, ip6(layers.IPProtocolIPv6Destination), dstOpts, fragL, udp(), gopacket.Payload("yz")), func(t *testing.T, r result) {
			if len(r.extTypes) != 2 || r.extTypes[0] != wire.ProtoDestOpts || !r.frag || r.fragID != 0x01020304 || r.proto != wire.ProtoUDP {
				t.Fatalf("%+v", r)
			}
		}},
		{"ipv6 echo", ser(t, ip6(layers.IPProtocolICMPv6), icmp6Layer(128, 0), &layers.ICMPv6Echo{Identifier: 1, SeqNumber: 2}, gopacket.Payload("e")), nil},
		{"ipv6 port unreachable", ser(t, ip6(layers.IPProtocolICMPv6), icmp6Layer(1, 4), gopacket.Payload(make([]byte, 52))), nil},
		{"ipv6 packet too big", ser(t, ip6(layers.IPProtocolICMPv6), icmp6Layer(2, 0), gopacket.Payload(append([]byte{0, 0, 5, 0}, make([]byte, 48)...))), nil},
		{"ipv6 time exceeded", ser(t, ip6(layers.IPProtocolICMPv6), icmp6Layer(3, 1), gopacket.Payload(make([]byte, 52))), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := crossCheck(t, tc.pkt, sumValid)
			if r.proto == 0 {
				t.Fatal("no upper protocol seen")
			}
			if tc.want != nil {
				tc.want(t, r)
			}
		})
	}
}

// TestKernelFixtures parses every packet of testdata/kernel.pcap (captured from Linux, see
// testdata/README.md) with wire and gopacket, and reassembles the fragmented pings.
func TestKernelFixtures(t *testing.T) {
	pkts := kernelPackets(t)
	seen := map[string]int{}
	type fragKey struct {
		v  int
		id uint32
	}
	frags := map[fragKey][]result{}
	for i, pkt := range pkts {
		var r result
		t.Run("", func(t *testing.T) { r = crossCheck(t, pkt, sumPartial) })
		if t.Failed() {
			t.Fatalf("packet %d: % x", i, pkt)
		}
		key := map[uint8]string{wire.ProtoTCP: "tcp", wire.ProtoUDP: "udp", wire.ProtoICMPv4: "icmp", wire.ProtoICMPv6: "icmp"}[r.proto]
		if r.frag {
			frags[fragKey{r.ipv, r.fragID}] = append(frags[fragKey{r.ipv, r.fragID}], r)
			key = "fragment"
		} else if r.proto == wire.ProtoTCP && r.tcpOptions.HasMSS {
			key = "tcp syn options"
		} else if r.icmpType != 0 || r.proto == wire.ProtoICMPv4 {
			key = map[int]map[uint8]string{
				4: {wire.ICMPv4EchoRequest: "echo", wire.ICMPv4EchoReply: "echo", wire.ICMPv4DestUnreachable: "unreachable"},
				6: {wire.ICMPv6EchoRequest: "echo", wire.ICMPv6EchoReply: "echo", wire.ICMPv6DestUnreachable: "unreachable"},
			}[r.ipv][r.icmpType]
		}
		seen[fmt.Sprintf("v%d %s", r.ipv, key)]++
	}
	for _, k := range []string{"v4 tcp syn options", "v6 tcp syn options", "v4 tcp", "v6 tcp", "v4 udp", "v6 udp", "v4 echo", "v6 echo", "v4 unreachable", "v6 unreachable", "v4 fragment", "v6 fragment"} {
		if seen[k] == 0 {
			t.Errorf("fixtures have no %q packet (saw %v)", k, seen)
		}
	}
	// Reassemble each fragmented ping (RFC 791 §3.2, RFC 8200 §4.5) and check the ICMP
	// checksum of the whole message: offsets and lengths from wire must line up.
	for k, fs := range frags {
		var msg []byte
		last := false
		for len(fs) > 0 {
			found := false
			for i, f := range fs {
				if f.fragOff == len(msg) {
					msg = append(msg, f.fragData...)
					last = !f.fragMore
					fs = append(fs[:i], fs[i+1:]...)
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("fragments of %v: hole at %d", k, len(msg))
			}
		}
		if !last {
			t.Fatalf("fragments of %v: no last fragment", k)
		}
		var err error
		if k.v == 4 {
			_, err = wire.ParseICMPv4(msg)
		} else {
			lo := netip.IPv6Loopback()
			_, err = wire.ParseICMPv6(msg, lo, lo)
		}
		if err != nil || len(msg) != 1408 {
			t.Fatalf("reassembled %v: %d bytes, %v", k, len(msg), err)
		}
	}
	if len(frags) != 4 {
		t.Fatalf("%d fragmented datagrams, want 4", len(frags))
	}
}

// kernelPackets returns the IP packets of testdata/kernel.pcap (Ethernet framing on lo).
func kernelPackets(tb testing.TB) [][]byte {
	tb.Helper()
	f, err := os.Open("testdata/kernel.pcap")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	rd, err := pcapgo.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	if rd.LinkType() != layers.LinkTypeEthernet {
		tb.Fatalf("link type %v", rd.LinkType())
	}
	var pkts [][]byte
	for {
		data, ci, err := rd.ReadPacketData()
		if err != nil {
			break
		}
		if ci.CaptureLength != ci.Length || len(data) < 14 {
			tb.Fatalf("truncated capture")
		}
		pkts = append(pkts, data[14:])
	}
	if len(pkts) < 30 {
		tb.Fatalf("only %d packets", len(pkts))
	}
	return pkts
}
