package wire

import (
	"encoding/binary"
	"net/netip"
)

// IPv4 header constants (RFC 791 §3.1).
const (
	IPv4MinHeaderLen = 20
	IPv4MaxHeaderLen = 60
	IPv4FlagDF       = 0x4000 // don't fragment, in the flags/fragment-offset word
	IPv4FlagMF       = 0x2000 // more fragments
	ipv4OffsetMask   = 0x1fff
)

var ipv4Errors = newErrors("ipv4")

// IPv4 is a view over an IPv4 header and what follows it.
type IPv4 []byte

// ParseIPv4 validates an IPv4 header: version 4, IHL at least 5 and within b, total length
// within b and no shorter than the header, header checksum correct. Options are skipped
// (their length is covered by IHL). Bytes past total length (link padding) are cut off.
func ParseIPv4(b []byte) (IPv4, error) {
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
	total := int(binary.BigEndian.Uint16(b[2:]))
	if total < hl || total > len(b) {
		return nil, ipv4Errors[ErrBadLength]
	}
	if Checksum(b[:hl], 0) != 0xffff {
		return nil, ipv4Errors[ErrBadChecksum]
	}
	return IPv4(b[:total]), nil
}

// HeaderLen is the header's length in bytes (IHL × 4), options included.
func (h IPv4) HeaderLen() int { return int(h[0]&0x0f) * 4 }

// TOS is the type-of-service byte (DSCP and ECN, RFC 2474 and RFC 3168).
func (h IPv4) TOS() uint8 { return h[1] }

// TotalLen is the total-length field: header and payload in bytes.
func (h IPv4) TotalLen() int { return int(binary.BigEndian.Uint16(h[2:])) }

// ID is the identification field (RFC 6864), shared by a datagram's fragments.
func (h IPv4) ID() uint16 { return binary.BigEndian.Uint16(h[4:]) }

// Flags returns the flags bits of the flags/offset word (IPv4FlagDF, IPv4FlagMF).
func (h IPv4) Flags() uint16 { return binary.BigEndian.Uint16(h[6:]) &^ ipv4OffsetMask }

// DontFragment reports the DF flag.
func (h IPv4) DontFragment() bool { return binary.BigEndian.Uint16(h[6:])&IPv4FlagDF != 0 }

// MoreFragments reports the MF flag: more fragments follow this one.
func (h IPv4) MoreFragments() bool { return binary.BigEndian.Uint16(h[6:])&IPv4FlagMF != 0 }

// FragmentOffset is the offset of this fragment's payload in bytes.
func (h IPv4) FragmentOffset() int { return int(binary.BigEndian.Uint16(h[6:])&ipv4OffsetMask) * 8 }

// IsFragment reports whether the packet is a fragment (MF set or a non-zero offset).
func (h IPv4) IsFragment() bool {
	return binary.BigEndian.Uint16(h[6:])&(IPv4FlagMF|ipv4OffsetMask) != 0
}

// TTL is the time-to-live field.
func (h IPv4) TTL() uint8 { return h[8] }

// Protocol is the payload's protocol number (ProtoTCP, ProtoUDP, ProtoICMP).
func (h IPv4) Protocol() uint8 { return h[9] }

// Checksum is the header checksum field.
func (h IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(h[10:]) }

// Src is the source address.
func (h IPv4) Src() netip.Addr { return netip.AddrFrom4([4]byte(h[12:16])) }

// Dst is the destination address.
func (h IPv4) Dst() netip.Addr { return netip.AddrFrom4([4]byte(h[16:20])) }

// Options returns the option bytes between the fixed header and the payload.
func (h IPv4) Options() []byte { return h[IPv4MinHeaderLen:h.HeaderLen()] }

// Payload returns the bytes after the header, up to the total length.
func (h IPv4) Payload() []byte { return h[h.HeaderLen():] }

// SetTTL rewrites the TTL and updates the header checksum incrementally (RFC 1624).
func (h IPv4) SetTTL(ttl uint8) { h.updateWord(8, uint16(ttl)<<8|uint16(h[9])) }

// SetDst rewrites the destination address (an IPv4 one) and updates the header checksum.
func (h IPv4) SetDst(a netip.Addr) { h.setAddr(16, a) }

// SetSrc rewrites the source address (an IPv4 one) and updates the header checksum.
func (h IPv4) SetSrc(a netip.Addr) { h.setAddr(12, a) }

// SetChecksum stores c in the header checksum field.
func (h IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[10:], c) }

// updateWord rewrites the 16-bit word at off and patches the checksum (RFC 1624).
func (h IPv4) updateWord(off int, v uint16) {
	old := binary.BigEndian.Uint16(h[off:])
	binary.BigEndian.PutUint16(h[off:], v)
	h.SetChecksum(ChecksumUpdate16(h.Checksum(), old, v))
}

func (h IPv4) setAddr(off int, a netip.Addr) {
	b := as4(a)
	old := binary.BigEndian.Uint32(h[off:])
	v := binary.BigEndian.Uint32(b[:])
	binary.BigEndian.PutUint32(h[off:], v)
	h.SetChecksum(ChecksumUpdate32(h.Checksum(), old, v))
}

// as4 is a's four bytes when a is IPv4 or IPv4-mapped, and 0.0.0.0 otherwise (the zero
// Addr, an IPv6 address): writing a header never panics on a caller's wrong family.
func as4(a netip.Addr) [4]byte {
	if a = a.Unmap(); a.Is4() {
		return a.As4()
	}
	return [4]byte{}
}

// IPv4Fields describes an IPv4 header without options, for Encode.
type IPv4Fields struct {
	TOS            uint8 // type-of-service byte (DSCP and ECN)
	TotalLen       int   // header + payload
	ID             uint16
	Flags          uint16 // IPv4FlagDF, IPv4FlagMF
	FragmentOffset int    // in bytes, a multiple of 8
	TTL            uint8
	Protocol       uint8
	Src, Dst       netip.Addr
}

// Encode writes a 20-byte header with its checksum into b[:20].
func (f *IPv4Fields) Encode(b []byte) {
	_ = b[IPv4MinHeaderLen-1]
	b[0] = 0x45
	b[1] = f.TOS
	binary.BigEndian.PutUint16(b[2:], uint16(f.TotalLen))
	binary.BigEndian.PutUint16(b[4:], f.ID)
	binary.BigEndian.PutUint16(b[6:], f.Flags|uint16(f.FragmentOffset/8)&ipv4OffsetMask)
	b[8] = f.TTL
	b[9] = f.Protocol
	b[10], b[11] = 0, 0
	s, d := as4(f.Src), as4(f.Dst)
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], ^Checksum(b[:IPv4MinHeaderLen], 0))
}

// IPv4 option types that are one byte long (RFC 791 §3.1): end of option list and no
// operation. Every other option has a length byte that counts its type and length bytes.
const (
	IPv4OptEOL = 0
	IPv4OptNOP = 1
)

// BadOption checks that h's options are well formed (RFC 791 §3.1: after a type byte other
// than EOL or NOP, a length of at least 2 that stays inside the header) and returns the
// offset from the start of the header of the first malformed option's type byte (the
// pointer of an ICMP parameter problem, as Linux's ip_options_compile reports it), or -1.
// Options after EOL are not looked at.
func (h IPv4) BadOption() int {
	hl := h.HeaderLen()
	for i := IPv4MinHeaderLen; i < hl; {
		switch h[i] {
		case IPv4OptEOL:
			return -1
		case IPv4OptNOP:
			i++
			continue
		}
		if i+1 >= hl || h[i+1] < 2 || i+int(h[i+1]) > hl {
			return i
		}
		i += int(h[i+1])
	}
	return -1
}
