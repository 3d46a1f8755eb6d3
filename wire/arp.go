package wire

import (
	"encoding/binary"
	"net/netip"
)

// ARPLen is the length of an ARP packet for IPv4 over Ethernet (RFC 826): the 8-byte fixed
// part and two (6-byte hardware, 4-byte protocol) address pairs.
const ARPLen = 28

// ARP operation codes (RFC 826; RFC 5227 reuses them for probes and announcements).
const (
	ARPRequest uint16 = 1
	ARPReply   uint16 = 2
)

// ARPHardwareEthernet is the hardware type of Ethernet (RFC 826 ar$hrd, IANA "Hardware
// Types": 1).
const ARPHardwareEthernet uint16 = 1

var arpErrors = newErrors("arp")

// ARP is a view over an ARP packet for IPv4 over Ethernet.
type ARP []byte

// ParseARP validates an ARP packet the way RFC 826's receiver does before it looks at
// the addresses: hardware type Ethernet with hardware length 6, protocol type IPv4 with
// protocol length 4 (any other pair is a different kind of ARP, which a host answering
// only for IPv4 over Ethernet drops), and an operation of request or reply. Bytes past
// the 28 (Ethernet padding) are cut off.
func ParseARP(b []byte) (ARP, error) {
	if len(b) < ARPLen {
		return nil, arpErrors[ErrTooShort]
	}
	if binary.BigEndian.Uint16(b[0:]) != ARPHardwareEthernet || binary.BigEndian.Uint16(b[2:]) != EtherTypeIPv4 {
		return nil, arpErrors[ErrBadField]
	}
	if b[4] != 6 || b[5] != 4 {
		return nil, arpErrors[ErrBadLength]
	}
	if op := binary.BigEndian.Uint16(b[6:]); op != ARPRequest && op != ARPReply {
		return nil, arpErrors[ErrBadField]
	}
	return ARP(b[:ARPLen]), nil
}

// Op is the operation: ARPRequest or ARPReply.
func (a ARP) Op() uint16 { return binary.BigEndian.Uint16(a[6:]) }

// SenderMAC is the sender's hardware address (ar$sha).
func (a ARP) SenderMAC() MAC { return MAC(a[8:14]) }

// SenderIP is the sender's protocol address (ar$spa); 0.0.0.0 in an RFC 5227 probe.
func (a ARP) SenderIP() netip.Addr { return netip.AddrFrom4([4]byte(a[14:18])) }

// TargetMAC is the target's hardware address (ar$tha); zero or ignored in a request.
func (a ARP) TargetMAC() MAC { return MAC(a[18:24]) }

// TargetIP is the target's protocol address (ar$tpa): whose MAC a request asks for.
func (a ARP) TargetIP() netip.Addr { return netip.AddrFrom4([4]byte(a[24:28])) }

// ARPFields describes an ARP packet for IPv4 over Ethernet, for Encode. A request's
// TargetMAC is zero; an RFC 5227 probe has a zero SenderIP; an announcement (gratuitous
// ARP) has SenderIP == TargetIP.
type ARPFields struct {
	Op                   uint16     // ARPRequest or ARPReply
	SenderMAC, TargetMAC MAC        // ar$sha and ar$tha
	SenderIP, TargetIP   netip.Addr // IPv4; the zero Addr is written as 0.0.0.0
}

// Encode writes the 28-byte packet into b[:28].
func (f *ARPFields) Encode(b []byte) {
	_ = b[ARPLen-1]
	binary.BigEndian.PutUint16(b[0:], ARPHardwareEthernet)
	binary.BigEndian.PutUint16(b[2:], EtherTypeIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], f.Op)
	copy(b[8:14], f.SenderMAC[:])
	s, t := as4(f.SenderIP), as4(f.TargetIP)
	copy(b[14:18], s[:])
	copy(b[18:24], f.TargetMAC[:])
	copy(b[24:28], t[:])
}
