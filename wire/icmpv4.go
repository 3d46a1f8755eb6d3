package wire

import "encoding/binary"

// ICMPv4HeaderLen is the length of every ICMPv4 message's fixed part: type, code, checksum
// and the 4-byte type-specific word (RFC 792).
const ICMPv4HeaderLen = 8

// ICMPv4 message types (RFC 792; IANA "ICMP Type Numbers").
const (
	ICMPv4EchoReply       uint8 = 0
	ICMPv4DestUnreachable uint8 = 3
	ICMPv4Redirect        uint8 = 5
	ICMPv4EchoRequest     uint8 = 8
	ICMPv4TimeExceeded    uint8 = 11
	ICMPv4ParamProblem    uint8 = 12
)

// ICMPv4 destination unreachable codes (RFC 792; RFC 1122 §3.2.2.1; RFC 1812 §5.2.7.1).
const (
	ICMPv4CodeNetUnreachable      uint8 = 0
	ICMPv4CodeHostUnreachable     uint8 = 1
	ICMPv4CodeProtocolUnreachable uint8 = 2
	ICMPv4CodePortUnreachable     uint8 = 3
	ICMPv4CodeFragNeeded          uint8 = 4 // DF set and the next hop's MTU is smaller: RFC 1191 §4
	ICMPv4CodeSourceRouteFailed   uint8 = 5
	ICMPv4CodeNetUnknown          uint8 = 6
	ICMPv4CodeHostUnknown         uint8 = 7
	ICMPv4CodeHostIsolated        uint8 = 8
	ICMPv4CodeNetProhibited       uint8 = 9
	ICMPv4CodeHostProhibited      uint8 = 10
	ICMPv4CodeNetUnreachableTOS   uint8 = 11
	ICMPv4CodeHostUnreachableTOS  uint8 = 12
	ICMPv4CodeAdminProhibited     uint8 = 13 // communication administratively prohibited
	ICMPv4CodeHostPrecedence      uint8 = 14
	ICMPv4CodePrecedenceCutoff    uint8 = 15
)

// ICMPv4 time exceeded codes (RFC 792).
const (
	ICMPv4CodeTTLExceeded        uint8 = 0 // time to live exceeded in transit
	ICMPv4CodeReassemblyExceeded uint8 = 1 // fragment reassembly time exceeded
)

// ICMPv4 parameter problem codes (RFC 792; RFC 1108).
const (
	ICMPv4CodePointer       uint8 = 0 // the pointer field locates the error
	ICMPv4CodeMissingOption uint8 = 1
	ICMPv4CodeBadLength     uint8 = 2
)

var icmpv4Errors = newErrors("icmpv4")

// ICMPv4 is a view over an ICMPv4 message (header and body).
type ICMPv4 []byte

// ParseICMPv4 validates an ICMPv4 message: at least the 8-byte header, and a checksum over
// the whole message that verifies (RFC 792: the ones' complement sum of the message, no
// pseudo-header). b should be the IPv4 payload, already cut to the IPv4 total length.
func ParseICMPv4(b []byte) (ICMPv4, error) {
	if len(b) < ICMPv4HeaderLen {
		return nil, icmpv4Errors[ErrTooShort]
	}
	if Checksum(b, 0) != 0xffff {
		return nil, icmpv4Errors[ErrBadChecksum]
	}
	return ICMPv4(b), nil
}

// Type is the message type (RFC 792).
func (m ICMPv4) Type() uint8 { return m[0] }

// Code is the message code, whose meaning depends on Type.
func (m ICMPv4) Code() uint8 { return m[1] }

// Checksum is the checksum field.
func (m ICMPv4) Checksum() uint16 { return binary.BigEndian.Uint16(m[2:]) }

// ID is the echo identifier (echo request/reply, RFC 792).
func (m ICMPv4) ID() uint16 { return binary.BigEndian.Uint16(m[4:]) }

// Seq is the echo sequence number (echo request/reply, RFC 792).
func (m ICMPv4) Seq() uint16 { return binary.BigEndian.Uint16(m[6:]) }

// MTU is the next-hop MTU of a "fragmentation needed and DF set" message (RFC 1191 §4: the
// low-order 16 bits of the unused word). Zero means an old router that does not report it.
func (m ICMPv4) MTU() uint16 { return binary.BigEndian.Uint16(m[6:]) }

// Pointer is the octet offset of the error in the quoted header (parameter problem, RFC 792).
func (m ICMPv4) Pointer() uint8 { return m[4] }

// IsError reports whether the message is an error that quotes a datagram (RFC 1122
// §3.2.2): destination unreachable, redirect, time exceeded, parameter problem, source quench.
func (m ICMPv4) IsError() bool {
	switch m[0] {
	case ICMPv4DestUnreachable, 4 /* source quench, deprecated by RFC 6633 */, ICMPv4Redirect,
		ICMPv4TimeExceeded, ICMPv4ParamProblem:
		return true
	}
	return false
}

// Payload is everything after the 8-byte header: the echo data, or for an error the quoted
// datagram (its IP header and at least 8 bytes of its payload, RFC 792; more with RFC 1812
// §4.3.2.3). Parse the quote with ParseIPv4Quote: it is usually truncated.
func (m ICMPv4) Payload() []byte { return m[ICMPv4HeaderLen:] }

// ICMPv4Fields describes an ICMPv4 header, for Encode. Which of ID/Seq, MTU and Pointer is
// written depends on Type (and Code); the other bytes of the 4-byte word are zero.
type ICMPv4Fields struct {
	Type, Code uint8  // message type and code (RFC 792)
	ID, Seq    uint16 // echo request / reply
	MTU        uint16 // destination unreachable, code ICMPv4CodeFragNeeded (RFC 1191 §4)
	Pointer    uint8  // parameter problem
}

// Encode writes the 8-byte header with a zero checksum into b and returns 8. Append the body
// (echo data or quoted datagram) and call SetICMPv4Checksum.
func (f *ICMPv4Fields) Encode(b []byte) int {
	_ = b[ICMPv4HeaderLen-1]
	b[0], b[1], b[2], b[3] = f.Type, f.Code, 0, 0
	b[4], b[5], b[6], b[7] = 0, 0, 0, 0
	switch f.Type {
	case ICMPv4EchoRequest, ICMPv4EchoReply:
		binary.BigEndian.PutUint16(b[4:], f.ID)
		binary.BigEndian.PutUint16(b[6:], f.Seq)
	case ICMPv4DestUnreachable:
		if f.Code == ICMPv4CodeFragNeeded {
			binary.BigEndian.PutUint16(b[6:], f.MTU)
		}
	case ICMPv4ParamProblem:
		b[4] = f.Pointer
	}
	return ICMPv4HeaderLen
}

// SetICMPv4Checksum computes and stores the checksum of msg (header and body, RFC 792).
func SetICMPv4Checksum(msg []byte) {
	msg[2], msg[3] = 0, 0
	binary.BigEndian.PutUint16(msg[2:], ^Checksum(msg, 0))
}

// ParseIPv4Quote reads the IPv4 header quoted in an ICMP error (RFC 792, RFC 1812 §4.3.2.3),
// which, unlike ParseIPv4, may be truncated: only version and IHL within b are checked, and
// the returned view ends where b ends (not at the total length field, which counts the
// original datagram). Payload() of the result is the quoted start of the transport header.
// The quoted header's checksum is not checked, as Linux's icmp_unreach does not: the ICMP
// checksum already covers the quote in transit, and quotes rewritten on the way (a NAT's,
// packetdrill's) may carry a stale one.
func ParseIPv4Quote(b []byte) (IPv4, error) {
	if len(b) < IPv4MinHeaderLen {
		return nil, ipv4Errors[ErrTooShort]
	}
	if b[0]>>4 != 4 {
		return nil, ipv4Errors[ErrBadVersion]
	}
	hl := int(b[0]&0x0f) * 4
	if hl < IPv4MinHeaderLen || hl > len(b) {
		return nil, ipv4Errors[ErrBadLength]
	}
	if total := int(binary.BigEndian.Uint16(b[2:])); total < hl {
		return nil, ipv4Errors[ErrBadLength]
	} else if total < len(b) {
		b = b[:total]
	}
	return IPv4(b), nil
}
