package wire_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/berthnet/berth/wire"
)

func TestEthernetRoundTrip(t *testing.T) {
	f := make([]byte, 20)
	src := wire.MAC{2, 0, 0, 0, 0, 1}
	(&wire.EthernetFields{Dst: wire.BroadcastMAC, Src: src, EtherType: wire.EtherTypeARP}).Encode(f)
	want := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06}
	if !bytes.Equal(f[:14], want) {
		t.Fatalf("encoded % x, want % x", f[:14], want)
	}
	h, err := wire.ParseEthernet(f)
	if err != nil || h.Dst() != wire.BroadcastMAC || h.Src() != src || h.EtherType() != wire.EtherTypeARP || len(h.Payload()) != 6 {
		t.Fatalf("parsed %v %v %v %#x %d", err, h.Dst(), h.Src(), h.EtherType(), len(h.Payload()))
	}
	if !h.Dst().IsBroadcast() || !h.Dst().IsMulticast() || src.IsMulticast() || src.String() != "02:00:00:00:00:01" {
		t.Error("MAC predicates")
	}
	if _, err := wire.ParseEthernet(f[:13]); !errors.Is(err, &wire.Error{Layer: "ethernet", Kind: wire.ErrTooShort}) {
		t.Errorf("13 bytes: %v", err)
	}
	f[12], f[13] = 0x05, 0xdc // an 802.3 length (1500), not an EtherType
	if _, err := wire.ParseEthernet(f); !errors.Is(err, &wire.Error{Kind: wire.ErrBadField}) {
		t.Errorf("802.3 length: %v", err)
	}
}

func TestMulticastMACs(t *testing.T) {
	// RFC 1112 §6.4: 224.0.0.251 -> 01:00:5e:00:00:fb; the 24th bit is dropped.
	if m := wire.IPv4MulticastMAC([4]byte{239, 255, 0, 251}); m != (wire.MAC{1, 0, 0x5e, 0x7f, 0, 251}) {
		t.Errorf("239.255.0.251 -> %v", m)
	}
	// RFC 2464 §7: ff02::1:ff00:100 -> 33:33:ff:00:01:00.
	g := netip.MustParseAddr("ff02::1:ff00:100").As16()
	if m := wire.IPv6MulticastMAC(g); m != (wire.MAC{0x33, 0x33, 0xff, 0, 1, 0}) {
		t.Errorf("ff02::1:ff00:100 -> %v", m)
	}
}

func TestARPRoundTrip(t *testing.T) {
	b := make([]byte, 46) // padded to Ethernet's minimum payload
	f := wire.ARPFields{Op: wire.ARPRequest, SenderMAC: wire.MAC{2, 1, 2, 3, 4, 5},
		SenderIP: netip.MustParseAddr("10.0.2.2"), TargetIP: netip.MustParseAddr("10.0.2.100")}
	f.Encode(b)
	want := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 1, 2, 3, 4, 5, 10, 0, 2, 2, 0, 0, 0, 0, 0, 0, 10, 0, 2, 100}
	if !bytes.Equal(b[:28], want) {
		t.Fatalf("encoded % x\nwant    % x", b[:28], want)
	}
	a, err := wire.ParseARP(b)
	if err != nil || len(a) != 28 || a.Op() != wire.ARPRequest || a.SenderMAC() != f.SenderMAC ||
		a.SenderIP() != f.SenderIP || a.TargetIP() != f.TargetIP || !a.TargetMAC().IsZero() {
		t.Fatalf("parsed %v %d %v %v %v %v", err, len(a), a.Op(), a.SenderMAC(), a.SenderIP(), a.TargetIP())
	}
	for _, c := range []struct {
		name string
		off  int
		v    byte
		kind wire.ErrorKind
	}{
		{"hardware type", 1, 6, wire.ErrBadField},    // IEEE 802 (6), not Ethernet
		{"protocol type", 2, 0x86, wire.ErrBadField}, // 0x86dd: IPv6
		{"hlen", 4, 8, wire.ErrBadLength},
		{"plen", 5, 16, wire.ErrBadLength},
		{"op", 7, 3, wire.ErrBadField}, // RARP request
	} {
		bad := append([]byte(nil), b...)
		bad[c.off] = c.v
		if _, err := wire.ParseARP(bad); !errors.Is(err, &wire.Error{Layer: "arp", Kind: c.kind}) {
			t.Errorf("%s: %v, want %v", c.name, err, c.kind)
		}
	}
	if _, err := wire.ParseARP(b[:27]); !errors.Is(err, &wire.Error{Kind: wire.ErrTooShort}) {
		t.Errorf("27 bytes: %v", err)
	}
}

func FuzzEthernet(f *testing.F) {
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1})
	f.Add([]byte{1, 2, 3, 4, 5, 6, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0, 1, 0x08, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := wire.ParseEthernet(b)
		if rejected(t, err) {
			return
		}
		if len(h) < 14 || h.EtherType() < 0x600 || len(h.Payload()) != len(b)-14 {
			t.Fatalf("accepted % x", b)
		}
		_, _ = h.Dst().IsMulticast(), h.Src().String()
		var re [14]byte
		(&wire.EthernetFields{Dst: h.Dst(), Src: h.Src(), EtherType: h.EtherType()}).Encode(re[:])
		if !bytes.Equal(re[:], b[:14]) {
			t.Fatalf("re-encoded % x from % x", re, b[:14])
		}
	})
}

func FuzzARP(f *testing.F) {
	b := make([]byte, 28)
	(&wire.ARPFields{Op: wire.ARPReply, SenderMAC: wire.MAC{2, 1, 2, 3, 4, 5}, TargetMAC: wire.MAC{2, 9, 9, 9, 9, 9},
		SenderIP: netip.MustParseAddr("10.0.2.2"), TargetIP: netip.MustParseAddr("10.0.2.100")}).Encode(b)
	f.Add(b)
	f.Add(b[:20])
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := wire.ParseARP(b)
		if rejected(t, err) {
			return
		}
		if len(a) != wire.ARPLen || (a.Op() != wire.ARPRequest && a.Op() != wire.ARPReply) {
			t.Fatalf("accepted % x", b)
		}
		re := make([]byte, 28)
		(&wire.ARPFields{Op: a.Op(), SenderMAC: a.SenderMAC(), TargetMAC: a.TargetMAC(),
			SenderIP: a.SenderIP(), TargetIP: a.TargetIP()}).Encode(re)
		if !bytes.Equal(re, b[:28]) {
			t.Fatalf("re-encoded % x from % x", re, b[:28])
		}
	})
}

func FuzzNDP(f *testing.F) {
	src, dst := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::1:ff00:2")
	for _, typ := range []uint8{wire.ICMPv6RouterSolicitation, wire.ICMPv6RouterAdvertisement,
		wire.ICMPv6NeighborSolicitation, wire.ICMPv6NeighborAdvertisement, wire.ICMPv6Redirect} {
		b := make([]byte, 128)
		n := (&wire.NDPFields{Type: typ, Target: netip.MustParseAddr("fd00::2"), CurHopLimit: 64}).Encode(b)
		n += wire.PutNDPLinkAddr(b[n:], wire.NDPOptSourceLinkAddr, wire.MAC{2, 0, 0, 0, 0, 1})
		if typ == wire.ICMPv6RouterAdvertisement {
			n += wire.PutNDPPrefix(b[n:], wire.NDPPrefix{Prefix: netip.MustParsePrefix("fd00::/64"), Valid: 100, Preferred: 50})
			n += wire.PutNDPRDNSS(b[n:], 100, []netip.Addr{netip.MustParseAddr("fd00::3")})
		}
		wire.SetICMPv6Checksum(b[:n], src, dst)
		f.Add(b[:n], uint8(255))
	}
	f.Fuzz(func(t *testing.T, b []byte, hl uint8) {
		// Give every input a valid checksum, so the fuzzer explores the checks after it.
		if len(b) >= 4 {
			wire.SetICMPv6Checksum(b, src, dst)
		}
		m, err := wire.ParseNDP(b, src, dst, hl)
		if rejected(t, err) {
			return
		}
		if hl != 255 || m[1] != 0 {
			t.Fatalf("accepted hop limit %d code %d", hl, m[1])
		}
		_, _, _ = m.Target(), m.Flags(), m.RAFlags()
		for o := m.OptionBytes(); len(o) > 0; {
			opt, rest := o.Next()
			if len(opt) < 8 || len(opt)%8 != 0 {
				t.Fatalf("option of %d bytes", len(opt))
			}
			if opt[0] == wire.NDPOptPrefixInfo {
				wire.ParseNDPPrefix(opt)
			}
			o = rest
		}
		m.LinkAddr(wire.NDPOptSourceLinkAddr)
		m.LinkAddr(wire.NDPOptTargetLinkAddr)
	})
}

func FuzzDHCP(f *testing.F) {
	b := make([]byte, 300)
	n := (&wire.DHCPFields{Op: wire.BOOTPRequest, XID: 7, CHAddr: wire.MAC{2, 0, 0, 0, 0, 1}}).Encode(b)
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptMessageType, []byte{wire.DHCPDiscover})
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptRequestedIP, []byte{10, 0, 2, 15})
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptEnd, nil)
	f.Add(b)
	f.Add(b[:n])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := wire.ParseDHCP(b)
		if rejected(t, err) {
			return
		}
		_, _, _, _ = m.XID(), m.CIAddr(), m.YIAddr(), m.GIAddr()
		_, _ = m.CHAddr(), m.ClientMAC()
		_ = m.MessageType()
		for code := range 256 {
			m.Option(uint8(code))
			m.OptionAddr(uint8(code))
		}
	})
}

// rejected reports whether a parser refused its input, failing unless with a *wire.Error.
func rejected(t *testing.T, err error) bool {
	t.Helper()
	if err != nil && !isWireError(err) {
		t.Fatalf("untyped error %v", err)
	}
	return err != nil
}

func BenchmarkParseARP(b *testing.B) {
	f := make([]byte, 60)
	(&wire.EthernetFields{Dst: wire.BroadcastMAC, Src: wire.MAC{2, 0, 0, 0, 0, 1}, EtherType: wire.EtherTypeARP}).Encode(f)
	(&wire.ARPFields{Op: wire.ARPRequest, SenderMAC: wire.MAC{2, 0, 0, 0, 0, 1}, SenderIP: netip.MustParseAddr("10.0.2.100"),
		TargetIP: netip.MustParseAddr("10.0.2.2")}).Encode(f[14:])
	b.ReportAllocs()
	for b.Loop() {
		h, err := wire.ParseEthernet(f)
		if err != nil {
			b.Fatal(err)
		}
		a, err := wire.ParseARP(h.Payload())
		if err != nil {
			b.Fatal(err)
		}
		sink += int(a.Op()) + int(a.TargetIP().As4()[3])
	}
}

func BenchmarkParseNDP(b *testing.B) {
	src, dst := netip.MustParseAddr("fd00::100"), netip.MustParseAddr("ff02::1:ff00:2")
	msg := make([]byte, 32)
	n := (&wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: netip.MustParseAddr("fd00::2")}).Encode(msg)
	wire.PutNDPLinkAddr(msg[n:], wire.NDPOptSourceLinkAddr, wire.MAC{2, 0, 0, 0, 0, 1})
	wire.SetICMPv6Checksum(msg, src, dst)
	b.ReportAllocs()
	for b.Loop() {
		m, err := wire.ParseNDP(msg, src, dst, 255)
		if err != nil {
			b.Fatal(err)
		}
		mac, _ := m.LinkAddr(wire.NDPOptSourceLinkAddr)
		sink += int(mac[5])
	}
}

func FuzzDHCPv6(f *testing.F) {
	b := make([]byte, 64)
	n := wire.PutDHCPv6Header(b, wire.DHCPv6InformationRequest, 0x123456)
	n += wire.PutDHCPv6Option(b[n:], wire.DHCPv6OptClientID, []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1})
	n += wire.PutDHCPv6Option(b[n:], wire.DHCPv6OptORO, []byte{0, 23})
	f.Add(b[:n])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := wire.ParseDHCPv6(b)
		if rejected(t, err) {
			return
		}
		_, _ = m.MsgType(), m.XID()
		for _, code := range []uint16{0, 1, 2, 3, 6, 23, 24, 0xffff} {
			if v, ok := m.Option(code); ok && len(v) > len(m)-8 {
				t.Fatalf("option %d of %d bytes in a %d-byte message", code, len(v), len(m))
			}
		}
	})
}
