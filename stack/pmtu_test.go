package stack

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/tcp"
	"github.com/berthnet/berth/wire"
)

// mtuRecorder is a transport that records the errno and MTU of every ICMP error.
type mtuRecorder struct {
	mu   sync.Mutex
	errs []syscall.Errno
	mtus []int
}

func (r *mtuRecorder) HandlePacket(netip.Addr, netip.Addr, []byte) bool { return false }
func (r *mtuRecorder) HandleICMPError(local, remote netip.Addr, quoted []byte, errno syscall.Errno, mtu int) {
	r.mu.Lock()
	r.errs = append(r.errs, errno)
	r.mtus = append(r.mtus, mtu)
	r.mu.Unlock()
}

// icmpAbout builds an ICMP error from the peer quoting a TCP segment we sent it.
func icmpAbout(v6 bool, typ, code uint8, mtu int) []byte {
	seg := make([]byte, 20)
	seg[0], seg[1], seg[2], seg[3] = 0x1f, 0x90, 0x30, 0x39
	seg[12] = 5 << 4
	if v6 {
		q := ip6(us6, peer6, wire.ProtoTCP, seg)
		msg := make([]byte, 8+len(q))
		f := wire.ICMPv6Fields{Type: typ, Code: code, MTU: uint32(mtu)}
		f.Encode(msg)
		copy(msg[8:], q)
		return ip6(peer6, us6, wire.ProtoICMPv6, msg) // ip6 fills the checksum
	}
	q := ip4(us4, peer4, wire.ProtoTCP, 1, wire.IPv4FlagDF, 0, seg)
	msg := make([]byte, 8+len(q))
	f := wire.ICMPv4Fields{Type: typ, Code: code}
	f.Encode(msg)
	binary.BigEndian.PutUint16(msg[6:], uint16(mtu)) // whatever the code
	copy(msg[8:], q)
	wire.SetICMPv4Checksum(msg)
	return ip4(peer4, us4, wire.ProtoICMPv4, 2, 0, 0, msg)
}

// Issue 19 (2, 3): a forged "fragmentation needed" with a tiny next-hop MTU (0, 68, 104,
// 200 were tried on the wire) drove TCP's segments down to 64 bytes, and a Packet Too
// Big of 1000 lowered an IPv6 MSS to 940. The stack now hands transports at least
// Linux's min_pmtu (552) for IPv4 and the IPv6 minimum MTU (1280, RFC 8201 §4); larger
// reports pass unchanged.
func TestPMTUFloors(t *testing.T) {
	s, ifc, _, _ := newTestStack(t, Options{})
	r := &mtuRecorder{}
	s.RegisterTransport(wire.ProtoTCP, r)
	for _, tc := range []struct {
		v6        bool
		mtu, want int
	}{
		{false, 0, 552}, {false, 68, 552}, {false, 104, 552}, {false, 200, 552},
		{false, 551, 552}, {false, 552, 552}, {false, 1000, 1000}, {false, 1492, 1492},
		{true, 0, 1280}, {true, 68, 1280}, {true, 1000, 1280}, {true, 1279, 1280},
		{true, 1280, 1280}, {true, 1400, 1400},
	} {
		r.mtus, r.errs = nil, nil
		var p []byte
		if tc.v6 {
			p = icmpAbout(true, wire.ICMPv6PacketTooBig, 0, tc.mtu)
		} else {
			p = icmpAbout(false, wire.ICMPv4DestUnreachable, wire.ICMPv4CodeFragNeeded, tc.mtu)
		}
		ifc.DeliverPackets([][]byte{p})
		if len(r.mtus) != 1 || r.errs[0] != syscall.EMSGSIZE || r.mtus[0] != tc.want {
			t.Errorf("v6 %v, reported MTU %d: transport got %v %v, want EMSGSIZE with %d", tc.v6, tc.mtu, r.errs, r.mtus, tc.want)
		}
	}
	// Only "fragmentation needed" carries an MTU: the field of another unreachable code
	// is not passed on.
	r.mtus, r.errs = nil, nil
	ifc.DeliverPackets([][]byte{icmpAbout(false, wire.ICMPv4DestUnreachable, wire.ICMPv4CodePortUnreachable, 1000)})
	if len(r.mtus) != 1 || r.errs[0] != syscall.ECONNREFUSED || r.mtus[0] != 0 {
		t.Errorf("port unreachable: transport got %v %v, want ECONNREFUSED with 0", r.errs, r.mtus)
	}
}

// A link smaller than the floor is its own floor: a report cannot raise the path MTU
// above the link's.
func TestPMTUFloorSmallLink(t *testing.T) {
	s, _, _, _ := newTestStack(t, Options{})
	c := &capture{mtu: 296}
	if _, err := s.AddInterface("slip0", c); err != nil {
		t.Fatal(err)
	}
	s.AddAddress("slip0", netip.MustParsePrefix("192.0.2.1/24"))
	if got := s.pmtuFloor(netip.MustParseAddr("192.0.2.9"), 68); got != 296 {
		t.Errorf("floor on a 296-byte link: %d, want 296", got)
	}
	if got := s.pmtuFloor(peer4, 68); got != 552 {
		t.Errorf("floor on a 1500-byte link: %d, want 552", got)
	}
}

// End to end through TCP: a forged "fragmentation needed" with next-hop MTU 104 quoting
// an outstanding segment of a live connection (the attack of issue 19 (2)) leaves the
// connection's MSS at what min_pmtu allows (552 less the IP and TCP headers, and 12
// bytes of timestamps when they are on), not 64 bytes.
func TestPMTUForgeryTCP(t *testing.T) {
	s, ifc, c, _ := newTestStack(t, Options{})
	tp := tcp.New(s, tcp.Config{})
	s.RegisterTransport(wire.ProtoTCP, tp)
	t.Cleanup(tp.Close)
	ln, err := tp.Listen(netip.AddrPortFrom(us4, 8080), 8, ports.BindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seg := func(seq, ack uint32, flags uint8, opts *wire.TCPOptions) []byte {
		f := wire.TCPFields{SrcPort: 12345, DstPort: 8080, Seq: seq, Ack: ack, Flags: flags, Window: 65535, Options: opts}
		b := make([]byte, f.HeaderLen())
		f.Encode(b)
		wire.SetTCPChecksum(b, peer4, us4)
		return ip4(peer4, us4, wire.ProtoTCP, 1, 0, 0, b)
	}
	ifc.DeliverPackets([][]byte{seg(1000, 0, wire.TCPFlagSYN, &wire.TCPOptions{HasMSS: true, MSS: 1460})})
	out := c.take()
	if len(out) != 1 {
		t.Fatalf("%d replies to a SYN", len(out))
	}
	synack := wire.TCP(wire.IPv4(out[0]).Payload())
	ifc.DeliverPackets([][]byte{seg(1001, synack.Seq()+1, wire.TCPFlagACK, nil)})
	conn, err := ln.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := conn.Info().MSS
	if _, err := conn.Write(make([]byte, 4000)); err != nil {
		t.Fatal(err)
	}
	out = c.take()
	if len(out) == 0 {
		t.Fatal("no data sent")
	}
	q := out[0][:wire.IPv4MinHeaderLen+8]
	msg := make([]byte, 8+len(q))
	f := wire.ICMPv4Fields{Type: wire.ICMPv4DestUnreachable, Code: wire.ICMPv4CodeFragNeeded, MTU: 104}
	f.Encode(msg)
	copy(msg[8:], q)
	wire.SetICMPv4Checksum(msg)
	ifc.DeliverPackets([][]byte{ip4(peer4, us4, wire.ProtoICMPv4, 2, 0, 0, msg)})
	after := conn.Info().MSS
	if after < minPMTU4-40-12 || after > before {
		t.Errorf("MSS %d after a forged MTU of 104 (was %d), want %d..%d", after, before, minPMTU4-40-12, before)
	}
	// What is resent fits the floor's MSS and is not cut to dozens of bytes.
	biggest := 0
	for _, p := range c.take() {
		biggest = max(biggest, len(wire.TCP(wire.IPv4(p).Payload()).Payload()))
	}
	if biggest > after || biggest < minPMTU4-40-12-40 {
		t.Errorf("largest data segment after the forgery: %d bytes (MSS %d)", biggest, after)
	}
	t.Logf("MSS %d -> %d; largest segment resent %d", before, after, biggest)
}

// A reported IPv4 MTU below min_pmtu locks the path at the floor and, as Linux does,
// TCP to that destination goes without DF for mtu_expires (600 s), so a path that truly
// is narrower still works by fragmentation; other destinations keep DF, and so does this
// one once the lock expires.
func TestPMTULockClearsDF(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	s, ifc, c, _ := newTestStack(t, Options{Clock: clk})
	s.RegisterTransport(wire.ProtoTCP, &mtuRecorder{})
	df := func(dst netip.Addr) bool {
		t.Helper()
		if err := s.Output(netip.Addr{}, dst, wire.ProtoTCP, make([]byte, wire.NetworkHeadroom+20)); err != nil {
			t.Fatal(err)
		}
		out := c.take()
		if len(out) != 1 {
			t.Fatalf("%d packets sent", len(out))
		}
		return wire.IPv4(out[0]).DontFragment()
	}
	other := netip.MustParseAddr("10.0.0.3")
	if !df(peer4) || !df(other) {
		t.Fatal("TCP sent without DF before any report")
	}
	ifc.DeliverPackets([][]byte{icmpAbout(false, wire.ICMPv4DestUnreachable, wire.ICMPv4CodeFragNeeded, 1000)})
	if !df(peer4) {
		t.Error("a report above min_pmtu cleared DF")
	}
	ifc.DeliverPackets([][]byte{icmpAbout(false, wire.ICMPv4DestUnreachable, wire.ICMPv4CodeFragNeeded, 68)})
	if df(peer4) {
		t.Error("DF still set towards a destination locked at min_pmtu")
	}
	if !df(other) {
		t.Error("DF cleared towards another destination")
	}
	clk.Advance(mtuExpires - time.Second)
	if df(peer4) {
		t.Error("the lock expired early")
	}
	clk.Advance(time.Second)
	if !df(peer4) {
		t.Error("DF not set again after mtu_expires")
	}
	// IPv6 has no DF to clear: a Packet Too Big below 1280 changes nothing on output.
	ifc.DeliverPackets([][]byte{icmpAbout(true, wire.ICMPv6PacketTooBig, 0, 68)})
	if err := s.Output(netip.Addr{}, peer6, wire.ProtoTCP, make([]byte, wire.NetworkHeadroom+20)); err != nil {
		t.Fatal(err)
	}
	if out := c.take(); len(out) != 1 || out[0][6] != wire.ProtoTCP {
		t.Errorf("IPv6 TCP after a Packet Too Big of 68: %d packets, not a plain TCP packet", len(out))
	}
}
