package wire

import (
	"encoding/binary"
	"net/netip"
)

// UDPHeaderLen is the UDP header's length (RFC 768).
const UDPHeaderLen = 8

var udpErrors = newErrors("udp")

// UDP is a view over a UDP header and its payload.
type UDP []byte

// ParseUDP validates a UDP header: a length field of at least 8 and within b. Bytes past the
// length field are cut off. The checksum is checked separately (VerifyChecksum), since a zero
// checksum means "none" on IPv4 but is forbidden on IPv6 (RFC 8200 §8.1).
func ParseUDP(b []byte) (UDP, error) {
	if len(b) < UDPHeaderLen {
		return nil, udpErrors[ErrTooShort]
	}
	l := int(binary.BigEndian.Uint16(b[4:]))
	if l < UDPHeaderLen || l > len(b) {
		return nil, udpErrors[ErrBadLength]
	}
	return UDP(b[:l]), nil
}

// SrcPort is the source port (0: none, RFC 768).
func (h UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(h[0:]) }

// DstPort is the destination port.
func (h UDP) DstPort() uint16 { return binary.BigEndian.Uint16(h[2:]) }

// Length is the length field: header and payload in bytes.
func (h UDP) Length() int { return int(binary.BigEndian.Uint16(h[4:])) }

// Checksum is the checksum field (0 over IPv4: none computed).
func (h UDP) Checksum() uint16 { return binary.BigEndian.Uint16(h[6:]) }

// Payload returns the datagram's data, up to the length field.
func (h UDP) Payload() []byte { return h[UDPHeaderLen:] }

// VerifyChecksum reports whether the checksum is right for the addresses. A zero checksum
// field verifies only for IPv4 (RFC 768: no checksum was computed).
func (h UDP) VerifyChecksum(src, dst netip.Addr) bool {
	if h.Checksum() == 0 {
		return src.Is4() || src.Is4In6()
	}
	return Checksum(h, PseudoHeaderChecksum(ProtoUDP, src, dst, len(h))) == 0xffff
}

// UDPFields describes a UDP header, for Encode.
type UDPFields struct {
	SrcPort, DstPort uint16 // ports
	Length           int    // header + payload
}

// Encode writes the 8-byte header with a zero checksum field into b.
func (f *UDPFields) Encode(b []byte) {
	_ = b[UDPHeaderLen-1]
	binary.BigEndian.PutUint16(b[0:], f.SrcPort)
	binary.BigEndian.PutUint16(b[2:], f.DstPort)
	binary.BigEndian.PutUint16(b[4:], uint16(f.Length))
	b[6], b[7] = 0, 0
}

// SetUDPChecksum computes and stores the checksum of datagram (header and payload). A
// computed zero is sent as 0xffff (RFC 768).
func SetUDPChecksum(datagram []byte, src, dst netip.Addr) {
	datagram[6], datagram[7] = 0, 0
	c := ^Checksum(datagram, PseudoHeaderChecksum(ProtoUDP, src, dst, len(datagram)))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(datagram[6:], c)
}
