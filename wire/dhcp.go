package wire

import (
	"encoding/binary"
	"net/netip"
)

// DHCPv4 (RFC 2131) message layout: the BOOTP fixed part (RFC 951), the magic cookie and
// the options (RFC 2132).
const (
	DHCPFixedLen   = 236              // op .. file
	DHCPMinLen     = DHCPFixedLen + 4 // and the magic cookie
	DHCPServerPort = 67
	DHCPClientPort = 68
	// DHCPMinBOOTPLen is the smallest message a BOOTP relay or client must accept (RFC
	// 1542 §2.1): replies are padded to it.
	DHCPMinBOOTPLen = 300
)

// dhcpCookie is RFC 2131 §3's magic cookie, 99.130.83.99.
var dhcpCookie = [4]byte{99, 130, 83, 99}

// BOOTP op codes (RFC 951).
const (
	BOOTPRequest uint8 = 1
	BOOTPReply   uint8 = 2
)

// DHCPFlagBroadcast asks the server to broadcast its replies (RFC 2131 §2): the client
// cannot take unicast IP before it has an address.
const DHCPFlagBroadcast uint16 = 0x8000

// DHCP option codes (RFC 2132).
const (
	DHCPOptPad            uint8 = 0
	DHCPOptSubnetMask     uint8 = 1
	DHCPOptRouter         uint8 = 3
	DHCPOptDNS            uint8 = 6
	DHCPOptHostname       uint8 = 12
	DHCPOptDomainName     uint8 = 15
	DHCPOptInterfaceMTU   uint8 = 26
	DHCPOptBroadcast      uint8 = 28
	DHCPOptRequestedIP    uint8 = 50
	DHCPOptLeaseTime      uint8 = 51
	DHCPOptOverload       uint8 = 52
	DHCPOptMessageType    uint8 = 53
	DHCPOptServerID       uint8 = 54
	DHCPOptParamRequest   uint8 = 55
	DHCPOptMessage        uint8 = 56
	DHCPOptMaxMessageSize uint8 = 57
	DHCPOptRenewalTime    uint8 = 58
	DHCPOptRebindingTime  uint8 = 59
	DHCPOptClientID       uint8 = 61
	DHCPOptEnd            uint8 = 255
)

// DHCP message types (RFC 2132 §9.6).
const (
	DHCPDiscover uint8 = 1
	DHCPOffer    uint8 = 2
	DHCPRequest  uint8 = 3
	DHCPDecline  uint8 = 4
	DHCPAck      uint8 = 5
	DHCPNak      uint8 = 6
	DHCPRelease  uint8 = 7
	DHCPInform   uint8 = 8
)

var dhcpErrors = newErrors("dhcp")

// DHCP is a view over a validated DHCPv4 message (a UDP payload).
type DHCP []byte

// ParseDHCP validates a DHCPv4 message: the fixed part and magic cookie, op request or
// reply, a hardware address length of at most 16 (the chaddr field), and options that
// are well formed (RFC 2132 §2: after a code other than pad and end, a length byte and
// that many bytes inside the message) up to an end option or the end of the message.
// Options overloaded into sname and file (option 52) are not read.
func ParseDHCP(b []byte) (DHCP, error) {
	if len(b) < DHCPMinLen {
		return nil, dhcpErrors[ErrTooShort]
	}
	if (b[0] != BOOTPRequest && b[0] != BOOTPReply) || b[2] > 16 {
		return nil, dhcpErrors[ErrBadField]
	}
	if [4]byte(b[DHCPFixedLen:DHCPMinLen]) != dhcpCookie {
		return nil, dhcpErrors[ErrBadField]
	}
	if _, _, bad := dhcpOption(b[DHCPMinLen:], DHCPOptEnd); bad {
		return nil, dhcpErrors[ErrBadOption]
	}
	return DHCP(b), nil
}

// dhcpOption walks options o to the first of code, the end option or the end of o, and
// returns code's data if found; bad reports an option that runs past the end.
func dhcpOption(o []byte, code uint8) (data []byte, found, bad bool) {
	for len(o) > 0 {
		switch o[0] {
		case DHCPOptPad:
			o = o[1:]
			continue
		case DHCPOptEnd:
			return nil, false, false
		}
		if len(o) < 2 || 2+int(o[1]) > len(o) {
			return nil, false, true
		}
		if n := int(o[1]); o[0] == code {
			return o[2 : 2+n], true, false
		}
		o = o[2+int(o[1]):]
	}
	return nil, false, false
}

// Op is BOOTPRequest or BOOTPReply (RFC 2131 §2, field op).
func (m DHCP) Op() uint8 { return m[0] }

// HType is the hardware address type (1: Ethernet).
func (m DHCP) HType() uint8 { return m[1] }

// HLen is the hardware address length (6 for Ethernet), at most 16.
func (m DHCP) HLen() uint8 { return m[2] }

// XID is the transaction ID the client chose.
func (m DHCP) XID() uint32 { return binary.BigEndian.Uint32(m[4:]) }

// Secs is the seconds since the client began.
func (m DHCP) Secs() uint16 { return binary.BigEndian.Uint16(m[8:]) }

// Flags holds DHCPFlagBroadcast.
func (m DHCP) Flags() uint16 { return binary.BigEndian.Uint16(m[10:]) }

// CIAddr is the client's address when it has one (BOUND, RENEWING, REBINDING, INFORM).
func (m DHCP) CIAddr() netip.Addr { return netip.AddrFrom4([4]byte(m[12:16])) }

// YIAddr is "your" address: the one a server offers or assigns.
func (m DHCP) YIAddr() netip.Addr { return netip.AddrFrom4([4]byte(m[16:20])) }

// SIAddr is the next server's address (BOOTP's boot server).
func (m DHCP) SIAddr() netip.Addr { return netip.AddrFrom4([4]byte(m[20:24])) }

// GIAddr is the relay agent's address; 0.0.0.0 when the client is on the server's link.
func (m DHCP) GIAddr() netip.Addr { return netip.AddrFrom4([4]byte(m[24:28])) }

// CHAddr is the client's hardware address, HLen bytes.
func (m DHCP) CHAddr() []byte { return m[28 : 28+int(m[2])] }

// ClientMAC is the first 6 bytes of chaddr: the client's MAC on Ethernet.
func (m DHCP) ClientMAC() (mac MAC) { copy(mac[:], m[28:34]); return mac }

// Option returns the data of the first option code, and whether it is present.
func (m DHCP) Option(code uint8) ([]byte, bool) {
	if code == DHCPOptPad || code == DHCPOptEnd {
		return nil, false
	}
	data, found, _ := dhcpOption(m[DHCPMinLen:], code)
	return data, found
}

// MessageType is option 53's value, or 0 (a BOOTP message) if absent or malformed.
func (m DHCP) MessageType() uint8 {
	if v, ok := m.Option(DHCPOptMessageType); ok && len(v) == 1 {
		return v[0]
	}
	return 0
}

// OptionAddr is an option holding one IPv4 address (requested IP, server identifier), or
// the zero Addr if absent or not 4 bytes.
func (m DHCP) OptionAddr(code uint8) netip.Addr {
	if v, ok := m.Option(code); ok && len(v) == 4 {
		return netip.AddrFrom4([4]byte(v))
	}
	return netip.Addr{}
}

// DHCPFields describes a DHCP message's fixed part, for Encode.
type DHCPFields struct {
	Op                             uint8      // BOOTPRequest or BOOTPReply
	XID                            uint32     // transaction ID
	Flags                          uint16     // DHCPFlagBroadcast
	CIAddr, YIAddr, SIAddr, GIAddr netip.Addr // client, your, server, relay addresses
	CHAddr                         MAC        // htype 1 (Ethernet), hlen 6
}

// Encode writes the fixed part and the magic cookie into b[:240], with sname and file
// empty, and returns 240. Append options with PutDHCPOption and finish with
// PutDHCPOption(b, DHCPOptEnd, nil).
func (f *DHCPFields) Encode(b []byte) int {
	_ = b[DHCPMinLen-1]
	clear(b[:DHCPMinLen])
	b[0], b[1], b[2] = f.Op, 1, 6
	binary.BigEndian.PutUint32(b[4:], f.XID)
	binary.BigEndian.PutUint16(b[10:], f.Flags)
	for i, a := range [...]netip.Addr{f.CIAddr, f.YIAddr, f.SIAddr, f.GIAddr} {
		v := as4(a)
		copy(b[12+4*i:], v[:])
	}
	copy(b[28:34], f.CHAddr[:])
	copy(b[DHCPFixedLen:], dhcpCookie[:])
	return DHCPMinLen
}

// PutDHCPOption writes option code with data (at most 255 bytes; longer data is cut)
// into b and returns its length. Pad and end are one byte and take no data.
func PutDHCPOption(b []byte, code uint8, data []byte) int {
	if code == DHCPOptPad || code == DHCPOptEnd {
		b[0] = code
		return 1
	}
	data = data[:min(len(data), 255)]
	b[0], b[1] = code, uint8(len(data))
	copy(b[2:], data)
	return 2 + len(data)
}
