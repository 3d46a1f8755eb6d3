package wire

import (
	"encoding/binary"
	"net/netip"
)

// ICMPv6HeaderLen is the length of every ICMPv6 message's fixed part: type, code, checksum
// and the 4-byte type-specific word (RFC 4443 §2.1).
const ICMPv6HeaderLen = 8

// ICMPv6 message types (RFC 4443 §2.1; error messages have the high bit clear).
const (
	ICMPv6DestUnreachable uint8 = 1
	ICMPv6PacketTooBig    uint8 = 2
	ICMPv6TimeExceeded    uint8 = 3
	ICMPv6ParamProblem    uint8 = 4
	ICMPv6EchoRequest     uint8 = 128
	ICMPv6EchoReply       uint8 = 129
)

// ICMPv6 destination unreachable codes (RFC 4443 §3.1).
const (
	ICMPv6CodeNoRoute            uint8 = 0
	ICMPv6CodeAdminProhibited    uint8 = 1
	ICMPv6CodeBeyondScope        uint8 = 2
	ICMPv6CodeAddressUnreachable uint8 = 3
	ICMPv6CodePortUnreachable    uint8 = 4
	ICMPv6CodeSourcePolicyFailed uint8 = 5
	ICMPv6CodeRejectRoute        uint8 = 6
)

// ICMPv6 time exceeded codes (RFC 4443 §3.3).
const (
	ICMPv6CodeHopLimitExceeded   uint8 = 0
	ICMPv6CodeReassemblyExceeded uint8 = 1
)

// ICMPv6 parameter problem codes (RFC 4443 §3.4).
const (
	ICMPv6CodeErroneousHeader        uint8 = 0
	ICMPv6CodeUnrecognizedNextHeader uint8 = 1
	ICMPv6CodeUnrecognizedOption     uint8 = 2
)

var icmpv6Errors = newErrors("icmpv6")

// ICMPv6 is a view over an ICMPv6 message (header and body).
type ICMPv6 []byte

// ParseICMPv6 validates an ICMPv6 message: at least the 8-byte header, and a checksum that
// verifies over the IPv6 pseudo-header (RFC 4443 §2.3, RFC 8200 §8.1) for src and dst, the
// addresses of the IPv6 header that carried it. b is the upper-layer payload, after any
// extension headers; the pseudo-header's length is len(b).
func ParseICMPv6(b []byte, src, dst netip.Addr) (ICMPv6, error) {
	if len(b) < ICMPv6HeaderLen {
		return nil, icmpv6Errors[ErrTooShort]
	}
	if Checksum(b, PseudoHeaderChecksum(ProtoICMPv6, src, dst, len(b))) != 0xffff {
		return nil, icmpv6Errors[ErrBadChecksum]
	}
	return ICMPv6(b), nil
}

// Type is the message type (RFC 4443 §2.1).
func (m ICMPv6) Type() uint8 { return m[0] }

// Code is the message code, whose meaning depends on Type.
func (m ICMPv6) Code() uint8 { return m[1] }

// Checksum is the checksum field (over the IPv6 pseudo-header too).
func (m ICMPv6) Checksum() uint16 { return binary.BigEndian.Uint16(m[2:]) }

// ID is the echo identifier (RFC 4443 §4.1, §4.2).
func (m ICMPv6) ID() uint16 { return binary.BigEndian.Uint16(m[4:]) }

// Seq is the echo sequence number (RFC 4443 §4.1, §4.2).
func (m ICMPv6) Seq() uint16 { return binary.BigEndian.Uint16(m[6:]) }

// MTU is the next-hop link's MTU in a packet too big message (RFC 4443 §3.2).
func (m ICMPv6) MTU() uint32 { return binary.BigEndian.Uint32(m[4:]) }

// Pointer is the octet offset of the error in the invoking packet (parameter problem,
// RFC 4443 §3.4).
func (m ICMPv6) Pointer() uint32 { return binary.BigEndian.Uint32(m[4:]) }

// IsError reports whether the message is an error message: types 0-127 (RFC 4443 §2.1).
func (m ICMPv6) IsError() bool { return m[0] < 128 }

// Payload is everything after the 8-byte header: echo data, or for an error as much of the
// invoking packet as fits in the minimum MTU (RFC 4443 §2.4(c)); parse that quote with
// ParseIPv6, which accepts it only if not truncated, or read its fixed header by hand.
func (m ICMPv6) Payload() []byte { return m[ICMPv6HeaderLen:] }

// ICMPv6Fields describes an ICMPv6 header, for Encode. Which of ID/Seq, MTU and Pointer is
// written depends on Type; the other bytes of the 4-byte word are zero.
type ICMPv6Fields struct {
	Type, Code uint8  // message type and code (RFC 4443 §2.1)
	ID, Seq    uint16 // echo request / reply
	MTU        uint32 // packet too big
	Pointer    uint32 // parameter problem
}

// Encode writes the 8-byte header with a zero checksum into b and returns 8. Append the body
// and call SetICMPv6Checksum.
func (f *ICMPv6Fields) Encode(b []byte) int {
	_ = b[ICMPv6HeaderLen-1]
	b[0], b[1], b[2], b[3] = f.Type, f.Code, 0, 0
	var word uint32
	switch f.Type {
	case ICMPv6EchoRequest, ICMPv6EchoReply:
		word = uint32(f.ID)<<16 | uint32(f.Seq)
	case ICMPv6PacketTooBig:
		word = f.MTU
	case ICMPv6ParamProblem:
		word = f.Pointer
	}
	binary.BigEndian.PutUint32(b[4:], word)
	return ICMPv6HeaderLen
}

// SetICMPv6Checksum computes and stores the checksum of msg (header and body) for the IPv6
// pseudo-header of src and dst (RFC 4443 §2.3).
func SetICMPv6Checksum(msg []byte, src, dst netip.Addr) {
	msg[2], msg[3] = 0, 0
	c := ^Checksum(msg, PseudoHeaderChecksum(ProtoICMPv6, src, dst, len(msg)))
	binary.BigEndian.PutUint16(msg[2:], c)
}
