package wire

import (
	"net/netip"
	"testing"
)

// The checksum and header helpers are total: no netip.Addr a caller (or a forged packet)
// hands them makes them panic. Issue 19: an IPv6 packet whose source was IPv4-mapped made
// PseudoHeaderChecksum call As4 on an IPv6 address.
func TestAddressHelpersTotal(t *testing.T) {
	addrs := []netip.Addr{
		{},
		netip.MustParseAddr("10.0.0.1"),
		netip.MustParseAddr("::ffff:10.0.0.2"),
		netip.MustParseAddr("fd00::1"),
		netip.MustParseAddr("fe80::1%eth0"),
		netip.IPv6Unspecified(),
	}
	seg := make([]byte, 40)
	tcp := TCP(seg)
	tcp[12] = 5 << 4
	for _, a := range addrs {
		for _, b := range addrs {
			_ = PseudoHeaderChecksum(ProtoTCP, a, b, 20)
			_ = tcp.VerifyChecksum(a, b)
			_ = UDP(seg[:8]).VerifyChecksum(a, b)
			h := make([]byte, IPv4MinHeaderLen)
			f := IPv4Fields{TotalLen: 20, TTL: 1, Src: a, Dst: b}
			f.Encode(h)
			IPv4(h).SetSrc(b)
			IPv4(h).SetDst(a)
			f6 := IPv6Fields{Src: a, Dst: b}
			f6.Encode(make([]byte, IPv6HeaderLen))
		}
	}
	// A mixed pair is summed in the 16-byte form: the v4-mapped source counts as the
	// IPv6 address it is on the wire.
	m, v6 := netip.MustParseAddr("::ffff:10.0.0.2"), netip.MustParseAddr("fd00::1")
	want := Checksum(append(m.AsSlice(), v6.AsSlice()...), 0)
	want = Combine(want, uint16(ProtoTCP))
	want = Combine(want, 20)
	if got := PseudoHeaderChecksum(ProtoTCP, m, v6, 20); got != want {
		t.Errorf("mixed pair: sum %#04x, want the IPv6 form %#04x", got, want)
	}
}

// fuzzAddr makes an address of any form from fuzz input: the zero Addr, IPv4,
// IPv4-mapped, IPv6 with or without a zone.
func fuzzAddr(kind byte, b []byte) netip.Addr {
	var a16 [16]byte
	copy(a16[:], b)
	switch kind % 5 {
	case 0:
		return netip.Addr{}
	case 1:
		return netip.AddrFrom4([4]byte(a16[:4]))
	case 2:
		return netip.AddrFrom16(netip.AddrFrom4([4]byte(a16[:4])).As16())
	case 3:
		return netip.AddrFrom16(a16).WithZone("eth0")
	}
	return netip.AddrFrom16(a16)
}

// FuzzAddressHelpers: no address pair, of any families, makes a checksum or header
// helper panic.
func FuzzAddressHelpers(f *testing.F) {
	f.Add(byte(2), []byte{10, 0, 0, 1}, byte(4), []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, []byte("segment"))
	f.Fuzz(func(t *testing.T, ka byte, a []byte, kb byte, b []byte, seg []byte) {
		src, dst := fuzzAddr(ka, a), fuzzAddr(kb, b)
		_ = PseudoHeaderChecksum(ProtoUDP, src, dst, len(seg))
		if h, err := ParseTCP(seg); err == nil {
			_ = h.VerifyChecksum(src, dst)
		}
		if h, err := ParseUDP(seg); err == nil {
			_ = h.VerifyChecksum(src, dst)
		}
		_, _ = ParseICMPv6(seg, src, dst)
		if len(seg) >= 8 {
			SetICMPv6Checksum(append([]byte(nil), seg...), src, dst)
			SetUDPChecksum(append([]byte(nil), seg...), src, dst)
		}
		h := make([]byte, IPv4MinHeaderLen)
		(&IPv4Fields{TotalLen: 20, Src: src, Dst: dst}).Encode(h)
		IPv4(h).SetSrc(dst)
		(&IPv6Fields{Src: src, Dst: dst}).Encode(make([]byte, IPv6HeaderLen))
	})
}
