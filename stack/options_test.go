package stack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/berthnet/berth/wire"
)

// fragments4 cuts an IPv4 payload into fragments of at most 1480 bytes.
func fragments4(src, dst netip.Addr, proto uint8, id uint16, payload []byte) [][]byte {
	var out [][]byte
	for off := 0; off < len(payload); off += 1480 {
		end := min(off+1480, len(payload))
		var fl uint16
		if end < len(payload) {
			fl = wire.IPv4FlagMF
		}
		out = append(out, ip4(src, dst, proto, id, fl, off, payload[off:end]))
	}
	return out
}

// fragments6 cuts an IPv6 fragmentable part into fragments of at most 1448 bytes.
func fragments6(src, dst netip.Addr, next uint8, id uint32, part []byte) [][]byte {
	var out [][]byte
	for off := 0; off < len(part); off += 1448 {
		end := min(off+1448, len(part))
		out = append(out, ip6frag(src, dst, next, id, off, end < len(part), part[off:end]))
	}
	return out
}

// reassembled puts the fragments the stack sent back together: the payload after the
// IPv4 header, or the fragmentable part after the IPv6 Fragment header.
func reassembled(t *testing.T, pkts [][]byte, v6 bool) []byte {
	t.Helper()
	var whole []byte
	for _, p := range pkts {
		var off int
		var data []byte
		if v6 {
			if len(p) < 48 || p[6] != wire.ProtoFragment {
				t.Fatalf("not a fragment: %x", p[:min(len(p), 48)])
			}
			off, data = wire.IPv6Fragment(p[40:48]).Offset(), p[48:]
		} else {
			h, err := wire.ParseIPv4(p)
			if err != nil {
				t.Fatal(err)
			}
			off, data = h.FragmentOffset(), h.Payload()
		}
		if len(whole) < off+len(data) {
			whole = append(whole, make([]byte, off+len(data)-len(whole))...)
		}
		copy(whole[off:], data)
	}
	return whole
}

// Issue 19 (5): the largest echo requests (Linux's `ping -s 65507`: an IPv4 datagram of
// 65535 bytes; `ping -6 -s 65527`: an IPv6 payload of 65535) are answered, as Linux
// answers them. sendEcho refused any echo data over 65487 bytes (an IPv6 limit applied to
// both families, and a header too many for IPv6).
func TestLargestPingAnswered(t *testing.T) {
	s, ifc, c, _ := newTestStack(t, Options{})
	for _, v6 := range []bool{false, true} {
		n := 65507
		if v6 {
			n = 65527
		}
		msg := make([]byte, 8+n)
		for i := range msg {
			msg[i] = byte(i * 31)
		}
		var pkts [][]byte
		if v6 {
			f := wire.ICMPv6Fields{Type: wire.ICMPv6EchoRequest, ID: 7, Seq: 1}
			f.Encode(msg)
			wire.SetICMPv6Checksum(msg, peer6, us6)
			pkts = fragments6(peer6, us6, wire.ProtoICMPv6, 9, msg)
		} else {
			f := wire.ICMPv4Fields{Type: wire.ICMPv4EchoRequest, ID: 7, Seq: 1}
			f.Encode(msg)
			wire.SetICMPv4Checksum(msg)
			pkts = fragments4(peer4, us4, wire.ProtoICMPv4, 9, msg)
		}
		ifc.DeliverPackets(pkts)
		out := c.take()
		if len(out) == 0 {
			t.Errorf("v6 %v: a %d-byte echo request got no answer", v6, n)
			continue
		}
		rep := reassembled(t, out, v6)
		if len(rep) != 8+n {
			t.Errorf("v6 %v: reply of %d bytes, want %d", v6, len(rep), 8+n)
			continue
		}
		want := wire.ICMPv4EchoReply
		if v6 {
			want = wire.ICMPv6EchoReply
		}
		if rep[0] != want || !bytes.Equal(rep[4:], msg[4:]) {
			t.Errorf("v6 %v: reply type %d, identifier/sequence/data equal: %v", v6, rep[0], bytes.Equal(rep[4:], msg[4:]))
		}
	}
	if n, b := s.PendingReassembly(); n != 0 || b != 0 {
		t.Errorf("%d datagrams, %d bytes left in reassembly", n, b)
	}
}

// optsHeader is an 8-byte hop-by-hop or destination options header naming next, holding
// one 4-byte option of type typ (RFC 8200 §4.2).
func optsHeader(next, typ uint8) []byte {
	return []byte{next, 0, typ, 2, 0, 0, 1, 0} // the option, then PadN of 0 bytes
}

// ip6ext builds an IPv6 packet to us6 whose chain starts with first and continues with
// the bytes of rest (extension headers and payload).
func ip6ext(first uint8, rest []byte) []byte {
	b := make([]byte, 40+len(rest))
	f := wire.IPv6Fields{PayloadLen: len(rest), NextHeader: first, HopLimit: 64, Src: peer6, Dst: us6}
	f.Encode(b)
	copy(b[40:], rest)
	return b
}

// Issue 19 (5), RFC 8200 §4.2: an option berth does not recognize is skipped only when
// its type's two high bits are 00; 01 discards the packet, 10 and 11 discard it and send
// a Parameter Problem code 2 pointing at the option (11 only to a unicast destination,
// which every locally delivered packet here has). berth accepted all of them.
func TestIPv6UnrecognizedOptions(t *testing.T) {
	s, ifc, c, k := newTestStack(t, Options{})
	for _, ext := range []uint8{wire.ProtoHopByHop, wire.ProtoDestOpts} {
		for _, tc := range []struct {
			typ     uint8
			deliver bool
			icmp    bool
		}{
			{0x1e, true, false},  // 00: skip
			{0x5e, false, false}, // 01: discard
			{0x9e, false, true},  // 10: discard, Parameter Problem
			{0xde, false, true},  // 11: discard, Parameter Problem (unicast)
			{0xc2, false, true},  // Jumbo Payload (RFC 2675): not supported, action 11
		} {
			k.segs = nil
			before := s.Counters().Get("Ip6InHdrErrors")
			ifc.DeliverPackets([][]byte{ip6ext(ext, append(optsHeader(200, tc.typ), "payload"...))})
			out := c.take()
			if got := len(k.segs) == 1; got != tc.deliver {
				t.Errorf("header %d option %#x: delivered %v, want %v", ext, tc.typ, got, tc.deliver)
			}
			if !tc.deliver && s.Counters().Get("Ip6InHdrErrors") != before+1 {
				t.Errorf("header %d option %#x: drop not counted in Ip6InHdrErrors", ext, tc.typ)
			}
			if !tc.icmp {
				if len(out) != 0 {
					t.Errorf("header %d option %#x: %d replies, want none", ext, tc.typ, len(out))
				}
				continue
			}
			if len(out) != 1 {
				t.Errorf("header %d option %#x: %d replies, want a parameter problem", ext, tc.typ, len(out))
				continue
			}
			m := wire.ICMPv6(out[0][40:])
			if m.Type() != wire.ICMPv6ParamProblem || m.Code() != wire.ICMPv6CodeUnrecognizedOption || m.Pointer() != 42 {
				t.Errorf("header %d option %#x: type %d code %d pointer %d, want 4/2/42", ext, tc.typ, m.Type(), m.Code(), m.Pointer())
			}
		}
	}
}

// Issue 19 (5): destination options that follow a Fragment header are part of the
// fragmentable part (RFC 8200 §4.5) and are processed after reassembly; in an atomic
// fragment (RFC 6946) right away. Both used to reach the upper-layer dispatch as protocol
// 60 and be refused.
func TestIPv6DestOptsAfterFragmentHeader(t *testing.T) {
	_, ifc, c, k := newTestStack(t, Options{})
	payload := make([]byte, 3000)
	for i := range payload {
		payload[i] = byte(i * 11)
	}
	part := append(optsHeader(200, 0x1e), payload...)
	ifc.DeliverPackets(fragments6(peer6, us6, wire.ProtoDestOpts, 1, part))
	if len(k.segs) != 1 || !bytes.Equal(k.segs[0], payload) {
		t.Errorf("fragmented: %d deliveries, want the payload once", len(k.segs))
	}
	k.segs = nil
	ifc.DeliverPackets([][]byte{ip6frag(peer6, us6, wire.ProtoDestOpts, 2, 0, false, part)})
	if len(k.segs) != 1 || !bytes.Equal(k.segs[0], payload) {
		t.Errorf("atomic fragment: %d deliveries, want the payload once", len(k.segs))
	}
	if out := c.take(); len(out) != 0 {
		t.Errorf("%d replies, want none", len(out))
	}
	// The options after the Fragment header are interpreted, not just skipped.
	k.segs = nil
	bad := append(optsHeader(200, 0x9e), payload...)
	ifc.DeliverPackets(fragments6(peer6, us6, wire.ProtoDestOpts, 3, bad))
	ifc.DeliverPackets([][]byte{ip6frag(peer6, us6, wire.ProtoDestOpts, 4, 0, false, bad)})
	out := c.take()
	if len(k.segs) != 0 || len(out) != 2 {
		t.Fatalf("unrecognized option after the Fragment header: %d deliveries, %d replies; want 0, 2", len(k.segs), len(out))
	}
	// Reassembled: the option sits at 40 + 2 in the packet rebuilt without the Fragment
	// header; atomic: after it, at 48 + 2.
	for i, ptr := range []uint32{42, 50} {
		m := wire.ICMPv6(out[i][40:])
		if m.Type() != wire.ICMPv6ParamProblem || m.Code() != wire.ICMPv6CodeUnrecognizedOption || m.Pointer() != ptr {
			t.Errorf("reply %d: type %d code %d pointer %d, want 4/2/%d", i, m.Type(), m.Code(), m.Pointer(), ptr)
		}
	}
}

// ip4opts builds an IPv4 packet to us4 with the given options (a multiple of 4 bytes).
func ip4opts(opts, payload []byte) []byte {
	hl := 20 + len(opts)
	b := make([]byte, hl+len(payload))
	f := wire.IPv4Fields{TotalLen: len(b), ID: 1, TTL: 64, Protocol: 200, Src: peer4, Dst: us4}
	f.Encode(b)
	b[0] = 0x40 | byte(hl/4)
	copy(b[20:], opts)
	copy(b[hl:], payload)
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:], ^wire.Checksum(b[:hl], 0))
	return b
}

// Issue 19 (5): an IPv4 option whose length is 0 or 1, or runs past the header, is
// malformed (RFC 791 §3.1); Linux (ip_options_compile) drops the datagram and sends a
// parameter problem pointing at the option. berth accepted it.
func TestIPv4MalformedOptions(t *testing.T) {
	s, ifc, c, k := newTestStack(t, Options{})
	for _, tc := range []struct {
		name string
		opts []byte
		ptr  int // -1: accepted
	}{
		{"length 0", []byte{0x44, 0, 0, 0}, 20},
		{"length 1", []byte{0x07, 1, 0, 0}, 20},
		{"past the header", []byte{0x07, 8, 4, 0}, 20},
		{"after a NOP", []byte{1, 0x83, 0, 0}, 21},
		{"type byte last", []byte{1, 1, 1, 0x07}, 23},
		{"NOPs and EOL", []byte{1, 1, 1, 0}, -1},
		{"EOL then anything", []byte{0, 0x44, 0, 0}, -1},
		{"well formed record route", []byte{0x07, 3, 4, 0}, -1},
	} {
		k.segs = nil
		before := s.Counters().Get("IpInHdrErrors")
		ifc.DeliverPackets([][]byte{ip4opts(tc.opts, []byte("data"))})
		out := c.take()
		if tc.ptr < 0 {
			if len(k.segs) != 1 || len(out) != 0 {
				t.Errorf("%s: %d deliveries, %d replies; want 1, 0", tc.name, len(k.segs), len(out))
			}
			continue
		}
		if len(k.segs) != 0 || s.Counters().Get("IpInHdrErrors") != before+1 {
			t.Errorf("%s: delivered %d, InHdrErrors +%d; want a counted drop", tc.name, len(k.segs), s.Counters().Get("IpInHdrErrors")-before)
		}
		if len(out) != 1 {
			t.Errorf("%s: %d replies, want a parameter problem", tc.name, len(out))
			continue
		}
		m := wire.ICMPv4(wire.IPv4(out[0]).Payload())
		if m.Type() != wire.ICMPv4ParamProblem || m.Code() != 0 || int(m.Pointer()) != tc.ptr {
			t.Errorf("%s: type %d code %d pointer %d, want 12/0/%d", tc.name, m.Type(), m.Code(), m.Pointer(), tc.ptr)
		}
	}
}

// The same for fragments to other hosts reassembled for the unmatched-flow hook (the
// forwarder of `berth run`): destination options after the Fragment header are stepped
// over, and the hook gets the upper-layer segment, not protocol 60.
func TestTransitDestOptsAfterFragmentHeader(t *testing.T) {
	s, ifc, _, _ := newTestStack(t, Options{})
	var calls []hookCall
	s.SetUnmatchedHandler(func(proto uint8, src, dst netip.Addr, seg []byte, _ bool) bool {
		calls = append(calls, hookCall{proto, src, dst, bytes.Clone(seg)})
		return true
	})
	other6 := netip.MustParseAddr("2001:db8::7")
	udp := make([]byte, 3008)
	for i := range udp {
		udp[i] = byte(i * 5)
	}
	part := append(optsHeader(wire.ProtoUDP, 0x1e), udp...)
	ifc.DeliverPackets(fragments6(peer6, other6, wire.ProtoDestOpts, 1, part))
	ifc.DeliverPackets([][]byte{ip6frag(peer6, other6, wire.ProtoDestOpts, 2, 0, false, part)})
	if len(calls) != 2 {
		t.Fatalf("hook called %d times, want 2", len(calls))
	}
	for i, g := range calls {
		if g.proto != wire.ProtoUDP || g.dst != other6 || !bytes.Equal(g.seg, udp) {
			t.Errorf("call %d: proto %d to %v, %d bytes (the segment: %v)", i, g.proto, g.dst, len(g.seg), bytes.Equal(g.seg, udp))
		}
	}
}

// RFC 8200 §4.5, RFC 7112 §5: a first fragment that does not hold the whole header chain
// through the upper-layer header is discarded with a Parameter Problem code 3, pointer 0,
// as Linux does; the datagram is not reassembled from its later fragments.
func TestIPv6FirstFragmentIncompleteChain(t *testing.T) {
	s, ifc, c, k := newTestStack(t, Options{})
	tcpHdr := make([]byte, 24)
	for i, tc := range []struct {
		name  string
		next  uint8
		first []byte // the first fragment's data (8 bytes)
		rest  []byte
	}{
		{"destination options, then nothing", wire.ProtoDestOpts, optsHeader(wire.ProtoUDP, 0x1e), make([]byte, 16)},
		{"a TCP header cut at 8 bytes", wire.ProtoTCP, tcpHdr[:8], tcpHdr[8:]},
	} {
		k.segs = nil
		id := uint32(i + 1)
		ifc.DeliverPackets([][]byte{
			ip6frag(peer6, us6, tc.next, id, 0, true, tc.first),
			ip6frag(peer6, us6, tc.next, id, 8, false, tc.rest),
		})
		out := c.take()
		if len(out) != 1 {
			t.Errorf("%s: %d replies, want a parameter problem", tc.name, len(out))
			continue
		}
		m := wire.ICMPv6(out[0][40:])
		if m.Type() != wire.ICMPv6ParamProblem || m.Code() != wire.ICMPv6CodeIncompleteChain || m.Pointer() != 0 {
			t.Errorf("%s: type %d code %d pointer %d, want 4/3/0", tc.name, m.Type(), m.Code(), m.Pointer())
		}
		if n, _ := s.PendingReassembly(); n != i+1 || len(k.segs) != 0 {
			// Each later fragment waits alone (until the timeout): nothing completes.
			t.Errorf("%s: %d datagrams pending, %d delivered; want %d, 0", tc.name, n, len(k.segs), i+1)
		}
	}
	if s.Counters().Get("Ip6InUnknownProtos") != 2 {
		t.Errorf("Ip6InUnknownProtos %d, want 2", s.Counters().Get("Ip6InUnknownProtos"))
	}
}
