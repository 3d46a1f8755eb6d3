package wire

import (
	"encoding/binary"
	"net/netip"
)

// Neighbor Discovery message types (RFC 4861 §4), carried in ICMPv6.
const (
	ICMPv6RouterSolicitation    uint8 = 133
	ICMPv6RouterAdvertisement   uint8 = 134
	ICMPv6NeighborSolicitation  uint8 = 135
	ICMPv6NeighborAdvertisement uint8 = 136
	ICMPv6Redirect              uint8 = 137
)

// Neighbor Discovery option types (RFC 4861 §4.6, RFC 8106 §5.1).
const (
	NDPOptSourceLinkAddr uint8 = 1
	NDPOptTargetLinkAddr uint8 = 2
	NDPOptPrefixInfo     uint8 = 3
	NDPOptRedirected     uint8 = 4
	NDPOptMTU            uint8 = 5
	NDPOptRDNSS          uint8 = 25
)

// Neighbor advertisement flags (RFC 4861 §4.4), in the first byte after the checksum.
const (
	NDPFlagRouter    uint8 = 0x80
	NDPFlagSolicited uint8 = 0x40
	NDPFlagOverride  uint8 = 0x20
)

// Router advertisement flags (RFC 4861 §4.2) and prefix information flags (§4.6.2).
const (
	NDPFlagManaged    uint8 = 0x80 // addresses from DHCPv6
	NDPFlagOther      uint8 = 0x40 // other configuration from DHCPv6
	NDPPrefixOnLink   uint8 = 0x80 // L
	NDPPrefixAutonomy uint8 = 0x40 // A: usable for SLAAC (RFC 4862 §5.5.3)
)

// ndpHopLimit is the hop limit every ND message is sent with and must arrive with (RFC
// 4861 §6.1, §7.1): 255 proves it was not forwarded, so it came from the link itself.
const ndpHopLimit = 255

// NDPHopLimit is ndpHopLimit, for builders.
const NDPHopLimit = ndpHopLimit

var ndpErrors = newErrors("ndp")

// NDP is a view over a validated Neighbor Discovery message: the whole ICMPv6 message
// (type, code, checksum, the fixed body and the options).
type NDP []byte

// ndpFixed is each message's length before its options (RFC 4861 §4.1-4.5).
func ndpFixed(typ uint8) int {
	switch typ {
	case ICMPv6RouterSolicitation:
		return 8
	case ICMPv6RouterAdvertisement:
		return 16
	case ICMPv6NeighborSolicitation, ICMPv6NeighborAdvertisement:
		return 24
	case ICMPv6Redirect:
		return 40
	}
	return 0
}

// ParseNDP validates a Neighbor Discovery message b (the ICMPv6 payload of an IPv6 packet
// from src to dst that arrived with hopLimit) with every check RFC 4861 asks of a receiver
// (§6.1.1, §6.1.2, §7.1.1, §7.1.2, §8.1): hop limit 255, a checksum that verifies, code 0,
// the message at least its fixed length, every option with a non-zero length inside the
// message (§4.6), a target that is not multicast, no source link-layer address option
// from the unspecified address, an NS from the unspecified address only to a
// solicited-node group, no solicited NA to a multicast address, RAs and redirects only
// from link-local sources. Any failure is a *Error; the message is to be dropped.
func ParseNDP(b []byte, src, dst netip.Addr, hopLimit uint8) (NDP, error) {
	if len(b) < ICMPv6HeaderLen {
		return nil, ndpErrors[ErrTooShort]
	}
	fixed := ndpFixed(b[0])
	if fixed == 0 {
		return nil, ndpErrors[ErrBadField]
	}
	if hopLimit != ndpHopLimit || b[1] != 0 {
		return nil, ndpErrors[ErrBadField]
	}
	if len(b) < fixed {
		return nil, ndpErrors[ErrTooShort]
	}
	if Checksum(b, PseudoHeaderChecksum(ProtoICMPv6, src, dst, len(b))) != 0xffff {
		return nil, ndpErrors[ErrBadChecksum]
	}
	m := NDP(b)
	hasSLLA := false
	for o := b[fixed:]; len(o) > 0; {
		if len(o) < 2 || o[1] == 0 || int(o[1])*8 > len(o) {
			return nil, ndpErrors[ErrBadOption]
		}
		hasSLLA = hasSLLA || o[0] == NDPOptSourceLinkAddr
		o = o[int(o[1])*8:]
	}
	switch b[0] {
	case ICMPv6RouterSolicitation:
		if src.IsUnspecified() && hasSLLA {
			return nil, ndpErrors[ErrBadOption]
		}
	case ICMPv6RouterAdvertisement:
		if !src.IsLinkLocalUnicast() {
			return nil, ndpErrors[ErrBadField]
		}
	case ICMPv6NeighborSolicitation:
		if m.Target().IsMulticast() {
			return nil, ndpErrors[ErrBadField]
		}
		if src.IsUnspecified() && (hasSLLA || !IsSolicitedNode(dst)) {
			return nil, ndpErrors[ErrBadField]
		}
	case ICMPv6NeighborAdvertisement:
		if m.Target().IsMulticast() || dst.IsMulticast() && m.Flags()&NDPFlagSolicited != 0 {
			return nil, ndpErrors[ErrBadField]
		}
	case ICMPv6Redirect:
		if !src.IsLinkLocalUnicast() || m.Target().IsMulticast() {
			return nil, ndpErrors[ErrBadField]
		}
	}
	return m, nil
}

// Type is the ICMPv6 type: ICMPv6RouterSolicitation .. ICMPv6Redirect.
func (m NDP) Type() uint8 { return m[0] }

// Flags is the byte after the checksum: the R, S and O flags of an NA, the M and O flags
// of an RA (whose CurHopLimit comes first: use RAFlags), zero otherwise.
func (m NDP) Flags() uint8 {
	if m[0] == ICMPv6NeighborAdvertisement {
		return m[4]
	}
	return 0
}

// Target is the target address of an NS, NA or redirect (RFC 4861 §4.3-4.5); the zero
// Addr for other messages.
func (m NDP) Target() netip.Addr {
	if m[0] < ICMPv6NeighborSolicitation {
		return netip.Addr{}
	}
	return netip.AddrFrom16([16]byte(m[8:24]))
}

// CurHopLimit is an RA's hop limit for hosts to use (0: unspecified; RFC 4861 §4.2).
// It and the RA accessors below mean something only for a router advertisement.
func (m NDP) CurHopLimit() uint8 { return m[4] }

// RAFlags is an RA's M and O flags (NDPFlagManaged, NDPFlagOther).
func (m NDP) RAFlags() uint8 { return m[5] }

// RouterLifetime is an RA's default-router lifetime in seconds (0: not a default router).
func (m NDP) RouterLifetime() uint16 { return binary.BigEndian.Uint16(m[6:]) }

// ReachableTime is an RA's reachable time in milliseconds (0: unspecified).
func (m NDP) ReachableTime() uint32 { return binary.BigEndian.Uint32(m[8:]) }

// RetransTimer is an RA's retransmission timer in milliseconds (0: unspecified).
func (m NDP) RetransTimer() uint32 { return binary.BigEndian.Uint32(m[12:]) }

// OptionBytes is the options after the message's fixed part, walked with Next.
func (m NDP) OptionBytes() NDPOptions { return NDPOptions(m[ndpFixed(m[0]):]) }

// Option returns the first option of type typ (type, length and body), or nil.
func (m NDP) Option(typ uint8) []byte {
	for o := m.OptionBytes(); len(o) > 0; {
		opt, rest := o.Next()
		if opt[0] == typ {
			return opt
		}
		o = rest
	}
	return nil
}

// LinkAddr returns the MAC of the first source (NDPOptSourceLinkAddr) or target
// (NDPOptTargetLinkAddr) link-layer address option, which for Ethernet is 8 bytes long
// (RFC 2464 §6); ok is false if there is none of that length.
func (m NDP) LinkAddr(typ uint8) (mac MAC, ok bool) {
	o := m.Option(typ)
	if len(o) != 8 {
		return mac, false
	}
	return MAC(o[2:8]), true
}

// NDPOptions is a well-formed run of ND options, as NDP.OptionBytes returns it.
type NDPOptions []byte

// Next splits off the first option (its type, length and body) from the rest. Only for a
// non-empty NDPOptions from a validated NDP.
func (o NDPOptions) Next() (opt []byte, rest NDPOptions) {
	n := int(o[1]) * 8
	return o[:n], o[n:]
}

// IsSolicitedNode reports whether a is in ff02::1:ff00:0/104 (RFC 4291 §2.7.1).
func IsSolicitedNode(a netip.Addr) bool {
	b := a.As16()
	return a.Is6() && b[0] == 0xff && b[1] == 0x02 && b[11] == 1 && b[12] == 0xff &&
		[10]byte(b[2:12]) == [10]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
}

// SolicitedNode is the solicited-node multicast address of a: ff02::1:ff and a's low 24
// bits (RFC 4291 §2.7.1).
func SolicitedNode(a netip.Addr) netip.Addr {
	s := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: s[13], 14: s[14], 15: s[15]})
}

// NDPFields describes the fixed part of an ND message, for Encode. Which fields are
// written depends on Type.
type NDPFields struct {
	Type   uint8      // ICMPv6RouterSolicitation .. ICMPv6Redirect
	Flags  uint8      // NA: NDPFlagRouter|Solicited|Override; RA: NDPFlagManaged|Other
	Target netip.Addr // NS, NA
	// RA (RFC 4861 §4.2).
	CurHopLimit    uint8
	RouterLifetime uint16 // seconds; 0: not a default router
	ReachableTime  uint32 // milliseconds; 0: unspecified
	RetransTimer   uint32 // milliseconds; 0: unspecified
}

// Encode writes the ICMPv6 header and the fixed body, with a zero checksum, into b and
// returns its length. Append options (PutNDP...) and call SetICMPv6Checksum.
func (f *NDPFields) Encode(b []byte) int {
	n := ndpFixed(f.Type)
	clear(b[:n])
	b[0] = f.Type
	switch f.Type {
	case ICMPv6RouterAdvertisement:
		b[4], b[5] = f.CurHopLimit, f.Flags
		binary.BigEndian.PutUint16(b[6:], f.RouterLifetime)
		binary.BigEndian.PutUint32(b[8:], f.ReachableTime)
		binary.BigEndian.PutUint32(b[12:], f.RetransTimer)
	case ICMPv6NeighborAdvertisement:
		b[4] = f.Flags
		fallthrough
	case ICMPv6NeighborSolicitation:
		t := f.Target.As16()
		copy(b[8:24], t[:])
	}
	return n
}

// PutNDPLinkAddr writes a source or target link-layer address option for an Ethernet
// MAC (RFC 4861 §4.6.1, RFC 2464 §6) into b and returns 8.
func PutNDPLinkAddr(b []byte, typ uint8, mac MAC) int {
	_ = b[7]
	b[0], b[1] = typ, 1
	copy(b[2:8], mac[:])
	return 8
}

// NDPPrefix is a prefix information option (RFC 4861 §4.6.2).
type NDPPrefix struct {
	Prefix    netip.Prefix // the prefix and its length (/64 for SLAAC on Ethernet)
	Flags     uint8        // NDPPrefixOnLink, NDPPrefixAutonomy
	Valid     uint32       // seconds; 0xffffffff: infinity
	Preferred uint32       // seconds, at most Valid
}

// PutNDPPrefix writes p into b and returns 32.
func PutNDPPrefix(b []byte, p NDPPrefix) int {
	_ = b[31]
	b[0], b[1], b[2], b[3] = NDPOptPrefixInfo, 4, uint8(p.Prefix.Bits()), p.Flags
	binary.BigEndian.PutUint32(b[4:], p.Valid)
	binary.BigEndian.PutUint32(b[8:], p.Preferred)
	clear(b[12:16])
	a := p.Prefix.Masked().Addr().As16()
	copy(b[16:32], a[:])
	return 32
}

// ParseNDPPrefix reads a prefix information option (as NDP.Option returns it); ok is
// false if it is not 32 bytes or its prefix length exceeds 128.
func ParseNDPPrefix(o []byte) (p NDPPrefix, ok bool) {
	if len(o) != 32 || o[0] != NDPOptPrefixInfo || o[2] > 128 {
		return p, false
	}
	pfx := netip.PrefixFrom(netip.AddrFrom16([16]byte(o[16:32])), int(o[2]))
	return NDPPrefix{Prefix: pfx, Flags: o[3], Valid: binary.BigEndian.Uint32(o[4:]),
		Preferred: binary.BigEndian.Uint32(o[8:])}, true
}

// PutNDPMTU writes an MTU option (RFC 4861 §4.6.4) into b and returns 8.
func PutNDPMTU(b []byte, mtu uint32) int {
	_ = b[7]
	b[0], b[1], b[2], b[3] = NDPOptMTU, 1, 0, 0
	binary.BigEndian.PutUint32(b[4:], mtu)
	return 8
}

// PutNDPRDNSS writes a recursive DNS server option (RFC 8106 §5.1) for servers, with
// lifetime in seconds, into b and returns its length, 8+16*len(servers). It writes
// nothing for no servers (the option needs at least one).
func PutNDPRDNSS(b []byte, lifetime uint32, servers []netip.Addr) int {
	if len(servers) == 0 {
		return 0
	}
	n := 8 + 16*len(servers)
	_ = b[n-1]
	b[0], b[1], b[2], b[3] = NDPOptRDNSS, uint8(n/8), 0, 0
	binary.BigEndian.PutUint32(b[4:], lifetime)
	for i, s := range servers {
		a := s.As16()
		copy(b[8+16*i:], a[:])
	}
	return n
}
