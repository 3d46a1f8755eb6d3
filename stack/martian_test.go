package stack

import (
	"net/netip"
	"testing"

	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/tcp"
	"github.com/berthnet/berth/udp"
	"github.com/berthnet/berth/wire"
)

// ip6 builds an IPv6 packet with a transport payload whose checksum (if any) is valid for
// the addresses given.
func ip6(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	b := make([]byte, wire.IPv6HeaderLen+len(payload))
	f := wire.IPv6Fields{PayloadLen: len(payload), NextHeader: proto, HopLimit: 64, Src: src, Dst: dst}
	f.Encode(b)
	copy(b[wire.IPv6HeaderLen:], payload)
	seg := b[wire.IPv6HeaderLen:]
	sum := ^wire.Checksum(seg, wire.PseudoHeaderChecksum(proto, src, dst, len(seg)))
	switch proto {
	case wire.ProtoICMPv6:
		seg[2], seg[3] = byte(sum>>8), byte(sum)
	case wire.ProtoUDP:
		seg[6], seg[7] = byte(sum>>8), byte(sum)
	case wire.ProtoTCP:
		seg[16], seg[17] = byte(sum>>8), byte(sum)
	}
	return b
}

// Issue 19 (1): one IPv6 packet with an IPv4-mapped source, carrying ICMPv6, UDP or a TCP
// SYN, killed the stack (As4 on an IPv6 address in the pseudo-header sum). Such packets
// are martians (RFC 4291 §2.5.5.2, RFC 4942 §2.1.4) and are dropped and counted before any
// transport sees them, as are the other addresses Linux's ip6_rcv_core refuses.
func TestIPv6MartianAddresses(t *testing.T) {
	s, ifc, c, _ := newTestStack(t, Options{})
	tp := tcp.New(s, tcp.Config{})
	s.RegisterTransport(wire.ProtoTCP, tp)
	t.Cleanup(tp.Close)
	ln, err := tp.Listen(netip.AddrPortFrom(netip.IPv6Unspecified(), 8080), 8, ports.BindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u := udp.New(s, udp.Config{})
	s.RegisterTransport(wire.ProtoUDP, u)
	t.Cleanup(u.Close)
	ep, _ := u.NewEndpoint(udp.Dual)
	if err := ep.Bind(netip.AddrPortFrom(netip.Addr{}, 5353), ports.BindOptions{}); err != nil {
		t.Fatal(err)
	}
	defer ep.Close()

	echo := []byte{wire.ICMPv6EchoRequest, 0, 0, 0, 0, 1, 0, 1, 'x'}
	udpSeg := []byte{0x30, 0x39, 0x14, 0xe9, 0, 9, 0, 0, 'x'}
	syn := make([]byte, 20)
	syn[0], syn[1], syn[2], syn[3] = 0x30, 0x39, 0x1f, 0x90
	syn[7] = 1
	syn[12], syn[13], syn[14] = 5<<4, 0x02, 0xff

	mapped := netip.MustParseAddr("::ffff:10.0.0.2")
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
	}{
		{"v4-mapped source", mapped, us6},
		{"v4-mapped destination", peer6, netip.MustParseAddr("::ffff:10.0.0.1")},
		{"interface-local multicast destination", peer6, netip.MustParseAddr("ff01::1")},
		{"multicast scope 0 destination", peer6, netip.MustParseAddr("ff00::1")},
		{"loopback source", netip.IPv6Loopback(), us6},
	} {
		for _, p := range []struct {
			proto uint8
			seg   []byte
		}{{wire.ProtoICMPv6, echo}, {wire.ProtoUDP, udpSeg}, {wire.ProtoTCP, syn}} {
			before := s.Counters().Get("Ip6InAddrErrors")
			ifc.DeliverPackets([][]byte{ip6(tc.src, tc.dst, p.proto, append([]byte(nil), p.seg...))})
			if out := c.take(); len(out) != 0 {
				t.Errorf("%s, protocol %d: %d replies, want a silent drop", tc.name, p.proto, len(out))
			}
			if got := s.Counters().Get("Ip6InAddrErrors"); got != before+1 {
				t.Errorf("%s, protocol %d: Ip6InAddrErrors %d, want %d", tc.name, p.proto, got, before+1)
			}
		}
	}
	if n := ep.Info().Queued; n != 0 {
		t.Errorf("%d datagrams reached the UDP socket", n)
	}

	// The same segments from a real source are answered: the checks above are not
	// dropping everything.
	ifc.DeliverPackets([][]byte{ip6(peer6, us6, wire.ProtoICMPv6, append([]byte(nil), echo...))})
	if out := c.take(); len(out) != 1 {
		t.Errorf("echo from %v: %d replies, want 1", peer6, len(out))
	}
	ifc.DeliverPackets([][]byte{ip6(peer6, us6, wire.ProtoTCP, append([]byte(nil), syn...))})
	if out := c.take(); len(out) != 1 {
		t.Errorf("SYN from %v: %d replies, want a SYN-ACK", peer6, len(out))
	}
}

// IPv4 packets to 0/8 are martian destinations (RFC 1122 §3.2.1.3), dropped and counted.
func TestIPv4ZeroNetDestination(t *testing.T) {
	s, ifc, c, k := newTestStack(t, Options{Forwarding: true})
	ifc.DeliverPackets([][]byte{ip4(peer4, netip.MustParseAddr("0.1.2.3"), 200, 1, 0, 0, []byte("x"))})
	if len(c.take()) != 0 || len(k.segs) != 0 {
		t.Error("a packet to 0.1.2.3 was answered, forwarded or delivered")
	}
	if got := s.Counters().Get("IpInMartians"); got != 1 {
		t.Errorf("IpInMartians = %d, want 1", got)
	}
}
