package wire

import "encoding/binary"

// DHCPv6 (RFC 8415) message and option numbers berth's stateless server uses.
const (
	DHCPv6ClientPort = 546
	DHCPv6ServerPort = 547
	// DHCPv6HeaderLen is a client/server message's msg-type and transaction-id (§8).
	DHCPv6HeaderLen = 4
)

// DHCPv6 message types (RFC 8415 §7.3).
const (
	DHCPv6Solicit            uint8 = 1
	DHCPv6Advertise          uint8 = 2
	DHCPv6Request            uint8 = 3
	DHCPv6Confirm            uint8 = 4
	DHCPv6Renew              uint8 = 5
	DHCPv6Rebind             uint8 = 6
	DHCPv6Reply              uint8 = 7
	DHCPv6Release            uint8 = 8
	DHCPv6Decline            uint8 = 9
	DHCPv6InformationRequest uint8 = 11
	DHCPv6RelayForward       uint8 = 12
)

// DHCPv6 option codes (RFC 8415 §21, RFC 3646 §3-4).
const (
	DHCPv6OptClientID    uint16 = 1
	DHCPv6OptServerID    uint16 = 2
	DHCPv6OptIANA        uint16 = 3
	DHCPv6OptIATA        uint16 = 4
	DHCPv6OptORO         uint16 = 6
	DHCPv6OptElapsed     uint16 = 8
	DHCPv6OptDNSServers  uint16 = 23
	DHCPv6OptDomainList  uint16 = 24
	DHCPv6OptIAPD        uint16 = 25
	DHCPv6OptInfoRefresh uint16 = 32
)

var dhcpv6Errors = newErrors("dhcpv6")

// DHCPv6 is a view over a validated client/server DHCPv6 message (RFC 8415 §8).
type DHCPv6 []byte

// ParseDHCPv6 validates a client/server message: the 4-byte header and options that are
// well formed (§21.1: a 2-byte code, a 2-byte length and that many bytes, inside the
// message, to its end). Relay messages (types 12 and 13, another layout) are rejected.
func ParseDHCPv6(b []byte) (DHCPv6, error) {
	if len(b) < DHCPv6HeaderLen {
		return nil, dhcpv6Errors[ErrTooShort]
	}
	if b[0] == 0 || b[0] == DHCPv6RelayForward || b[0] == DHCPv6RelayForward+1 {
		return nil, dhcpv6Errors[ErrBadField]
	}
	for o := b[DHCPv6HeaderLen:]; len(o) > 0; {
		if len(o) < 4 || 4+int(binary.BigEndian.Uint16(o[2:])) > len(o) {
			return nil, dhcpv6Errors[ErrBadOption]
		}
		o = o[4+int(binary.BigEndian.Uint16(o[2:])):]
	}
	return DHCPv6(b), nil
}

// MsgType is the message type (DHCPv6Solicit, ...).
func (m DHCPv6) MsgType() uint8 { return m[0] }

// XID is the 24-bit transaction ID.
func (m DHCPv6) XID() uint32 { return uint32(m[1])<<16 | uint32(m[2])<<8 | uint32(m[3]) }

// Option returns the data of the first option code at the top level, and whether it is
// there.
func (m DHCPv6) Option(code uint16) ([]byte, bool) {
	for o := m[DHCPv6HeaderLen:]; len(o) > 0; {
		n := int(binary.BigEndian.Uint16(o[2:]))
		if binary.BigEndian.Uint16(o) == code {
			return o[4 : 4+n], true
		}
		o = o[4+n:]
	}
	return nil, false
}

// PutDHCPv6Header writes msg-type and transaction ID into b and returns 4.
func PutDHCPv6Header(b []byte, typ uint8, xid uint32) int {
	_ = b[3]
	b[0], b[1], b[2], b[3] = typ, byte(xid>>16), byte(xid>>8), byte(xid)
	return DHCPv6HeaderLen
}

// PutDHCPv6Option writes option code with data (at most 65535 bytes) into b and returns
// its length, 4+len(data).
func PutDHCPv6Option(b []byte, code uint16, data []byte) int {
	binary.BigEndian.PutUint16(b, code)
	binary.BigEndian.PutUint16(b[2:], uint16(len(data)))
	return 4 + copy(b[4:], data)
}
