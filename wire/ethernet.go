package wire

import (
	"encoding/binary"
	"net"
)

// EthernetHeaderLen is the length of an Ethernet II header: destination and source MAC
// addresses and the EtherType (IEEE 802.3 §3.1.1; no preamble, no FCS).
const EthernetHeaderLen = 14

// EtherTypes berth speaks or recognises (IEEE "EtherType" registry).
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeVLAN uint16 = 0x8100 // IEEE 802.1Q tag
	EtherTypeQinQ uint16 = 0x88a8 // IEEE 802.1ad service tag
	EtherTypeIPv6 uint16 = 0x86dd
)

// MAC is an IEEE 802 48-bit MAC address, comparable and usable as a map key.
type MAC [6]byte

// BroadcastMAC is the all-ones address every station receives.
var BroadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// IsMulticast reports whether the group bit (the least significant bit of the first
// octet, IEEE 802 §8.2) is set; broadcast is a multicast address.
func (m MAC) IsMulticast() bool { return m[0]&1 != 0 }

// IsBroadcast reports whether m is ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == BroadcastMAC }

// IsZero reports whether m is 00:00:00:00:00:00 (no address: an ARP request's target).
func (m MAC) IsZero() bool { return m == MAC{} }

// String formats m as six colon-separated lower-case hex pairs, like net.HardwareAddr.
func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// IPv4MulticastMAC is the MAC address an IPv4 multicast group maps to: 01:00:5e and the
// group's low 23 bits (RFC 1112 §6.4).
func IPv4MulticastMAC(group [4]byte) MAC {
	return MAC{0x01, 0x00, 0x5e, group[1] & 0x7f, group[2], group[3]}
}

// IPv6MulticastMAC is the MAC address an IPv6 multicast group maps to: 33:33 and the
// group's low 32 bits (RFC 2464 §7).
func IPv6MulticastMAC(group [16]byte) MAC {
	return MAC{0x33, 0x33, group[12], group[13], group[14], group[15]}
}

var ethernetErrors = newErrors("ethernet")

// Ethernet is a view over an Ethernet II frame: the 14-byte header and its payload.
type Ethernet []byte

// ParseEthernet validates an Ethernet II frame: at least the 14-byte header and an
// EtherType of at least 0x0600 (smaller values are IEEE 802.3 lengths, LLC frames berth
// does not speak: IEEE 802.3 §3.2.6). Padding after a short payload is kept; the upper
// layer's own length field bounds it.
func ParseEthernet(b []byte) (Ethernet, error) {
	if len(b) < EthernetHeaderLen {
		return nil, ethernetErrors[ErrTooShort]
	}
	if binary.BigEndian.Uint16(b[12:]) < 0x0600 {
		return nil, ethernetErrors[ErrBadField]
	}
	return Ethernet(b), nil
}

// Dst is the destination MAC.
func (f Ethernet) Dst() MAC { return MAC(f[0:6]) }

// Src is the source MAC.
func (f Ethernet) Src() MAC { return MAC(f[6:12]) }

// EtherType is the payload's protocol (EtherTypeIPv4, ...).
func (f Ethernet) EtherType() uint16 { return binary.BigEndian.Uint16(f[12:]) }

// Payload is everything after the header, padding included.
func (f Ethernet) Payload() []byte { return f[EthernetHeaderLen:] }

// EthernetFields describes an Ethernet II header, for Encode.
type EthernetFields struct {
	Dst, Src  MAC    // destination and source addresses
	EtherType uint16 // EtherTypeIPv4, EtherTypeIPv6, EtherTypeARP
}

// Encode writes the 14-byte header into b[:14].
func (f *EthernetFields) Encode(b []byte) {
	_ = b[EthernetHeaderLen-1]
	copy(b[0:6], f.Dst[:])
	copy(b[6:12], f.Src[:])
	binary.BigEndian.PutUint16(b[12:], f.EtherType)
}
