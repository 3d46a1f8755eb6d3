package wire

import (
	"encoding/binary"
	"net/netip"
)

// IPv6HeaderLen is the fixed IPv6 header's length (RFC 8200 §3).
const IPv6HeaderLen = 40

var ipv6Errors = newErrors("ipv6")

// IPv6 is a view over an IPv6 fixed header and what follows it.
type IPv6 []byte

// ParseIPv6 validates the fixed header: version 6 and a payload length within b. Bytes past
// the payload length are cut off. A zero payload length (a jumbogram, RFC 2675) is rejected:
// berth's links carry at most 65535-byte packets.
func ParseIPv6(b []byte) (IPv6, error) {
	if len(b) < IPv6HeaderLen {
		return nil, ipv6Errors[ErrTooShort]
	}
	if b[0]>>4 != 6 {
		return nil, ipv6Errors[ErrBadVersion]
	}
	pl := int(binary.BigEndian.Uint16(b[4:]))
	if IPv6HeaderLen+pl > len(b) || (pl == 0 && len(b) > IPv6HeaderLen) {
		return nil, ipv6Errors[ErrBadLength]
	}
	return IPv6(b[:IPv6HeaderLen+pl]), nil
}

// TrafficClass is the traffic class byte (DSCP and ECN).
func (h IPv6) TrafficClass() uint8 { return uint8(binary.BigEndian.Uint16(h[0:]) >> 4) }

// FlowLabel is the 20-bit flow label (RFC 6437).
func (h IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(h[0:]) & 0xfffff }

// PayloadLen is the payload-length field: bytes after the fixed header, extension headers included.
func (h IPv6) PayloadLen() int { return int(binary.BigEndian.Uint16(h[4:])) }

// NextHeader is the protocol number of the header after the fixed header.
func (h IPv6) NextHeader() uint8 { return h[6] }

// HopLimit is the hop-limit field.
func (h IPv6) HopLimit() uint8 { return h[7] }

// Src is the source address.
func (h IPv6) Src() netip.Addr { return netip.AddrFrom16([16]byte(h[8:24])) }

// Dst is the destination address.
func (h IPv6) Dst() netip.Addr { return netip.AddrFrom16([16]byte(h[24:40])) }

// Payload returns the bytes after the fixed header (extension headers included).
func (h IPv6) Payload() []byte { return h[IPv6HeaderLen:] }

// SetHopLimit rewrites the hop limit (IPv6 has no header checksum to update).
func (h IPv6) SetHopLimit(v uint8) { h[7] = v }

// IPv6Fields describes an IPv6 fixed header, for Encode.
type IPv6Fields struct {
	TrafficClass uint8      // DSCP and ECN
	FlowLabel    uint32     // 20 bits (RFC 6437)
	PayloadLen   int        // bytes after the fixed header
	NextHeader   uint8      // protocol number of the next header
	HopLimit     uint8      // hop limit
	Src, Dst     netip.Addr // source and destination addresses (IPv6)
}

// Encode writes the 40-byte fixed header into b[:40].
func (f *IPv6Fields) Encode(b []byte) {
	_ = b[IPv6HeaderLen-1]
	binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(f.TrafficClass)<<20|f.FlowLabel&0xfffff)
	binary.BigEndian.PutUint16(b[4:], uint16(f.PayloadLen))
	b[6] = f.NextHeader
	b[7] = f.HopLimit
	s, d := f.Src.As16(), f.Dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
}
