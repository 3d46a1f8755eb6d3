package wire

import (
	"encoding/binary"
	"net/netip"
)

// TCP header constants (RFC 9293 §3.1).
const (
	TCPMinHeaderLen = 20
	TCPMaxHeaderLen = 60
)

// TCP flags, as in the low byte of the data-offset/flags word.
const (
	TCPFlagFIN uint8 = 0x01
	TCPFlagSYN uint8 = 0x02
	TCPFlagRST uint8 = 0x04
	TCPFlagPSH uint8 = 0x08
	TCPFlagACK uint8 = 0x10
	TCPFlagURG uint8 = 0x20
	TCPFlagECE uint8 = 0x40
	TCPFlagCWR uint8 = 0x80
)

// TCP option kinds (IANA "TCP Option Kind Numbers").
const (
	TCPOptEnd           = 0
	TCPOptNOP           = 1
	TCPOptMSS           = 2 // RFC 9293 §3.2
	TCPOptWindowScale   = 3 // RFC 7323 §2
	TCPOptSACKPermitted = 4 // RFC 2018 §2
	TCPOptSACK          = 5 // RFC 2018 §3
	TCPOptTimestamps    = 8 // RFC 7323 §3
)

// MaxSACKBlocks is how many SACK blocks fit in the 40 bytes of option space.
const MaxSACKBlocks = 4

var tcpErrors = newErrors("tcp")

// TCP is a view over a TCP header and its payload.
type TCP []byte

// ParseTCP validates a TCP header: a data offset of at least 5 words and within b. It does
// not verify the checksum (that needs the pseudo-header: see VerifyChecksum) nor the options
// (see ParseOptions).
func ParseTCP(b []byte) (TCP, error) {
	if len(b) < TCPMinHeaderLen {
		return nil, tcpErrors[ErrTooShort]
	}
	off := int(b[12]>>4) * 4
	if off < TCPMinHeaderLen || off > len(b) {
		return nil, tcpErrors[ErrBadLength]
	}
	return TCP(b), nil
}

// SrcPort is the source port.
func (h TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(h[0:]) }

// DstPort is the destination port.
func (h TCP) DstPort() uint16 { return binary.BigEndian.Uint16(h[2:]) }

// Seq is the sequence number.
func (h TCP) Seq() uint32 { return binary.BigEndian.Uint32(h[4:]) }

// Ack is the acknowledgment number (meaningful when TCPFlagACK is set).
func (h TCP) Ack() uint32 { return binary.BigEndian.Uint32(h[8:]) }

// DataOffset is the header's length in bytes (data offset × 4), options included.
func (h TCP) DataOffset() int { return int(h[12]>>4) * 4 }

// Flags is the flags byte (TCPFlagFIN ... TCPFlagCWR).
func (h TCP) Flags() uint8 { return h[13] }

// Window is the window field, unscaled.
func (h TCP) Window() uint16 { return binary.BigEndian.Uint16(h[14:]) }

// Checksum is the checksum field.
func (h TCP) Checksum() uint16 { return binary.BigEndian.Uint16(h[16:]) }

// Urgent is the urgent pointer field.
func (h TCP) Urgent() uint16 { return binary.BigEndian.Uint16(h[18:]) }

// Options returns the option bytes between the fixed header and the payload.
func (h TCP) Options() []byte { return h[TCPMinHeaderLen:h.DataOffset()] }

// Payload returns the segment's data after the header.
func (h TCP) Payload() []byte { return h[h.DataOffset():] }

// SetChecksum stores c in the checksum field.
func (h TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[16:], c) }

// VerifyChecksum reports whether the segment's checksum is right for the given addresses.
func (h TCP) VerifyChecksum(src, dst netip.Addr) bool {
	return Checksum(h, PseudoHeaderChecksum(ProtoTCP, src, dst, len(h))) == 0xffff
}

// ParseOptions decodes the header's options into o.
func (h TCP) ParseOptions(o *TCPOptions) error { return ParseTCPOptions(h.Options(), o) }

// TCPFields describes a TCP header, for Encode.
type TCPFields struct {
	SrcPort, DstPort uint16      // ports
	Seq, Ack         uint32      // sequence and acknowledgment numbers
	Flags            uint8       // TCPFlagFIN ... TCPFlagCWR
	Window           uint16      // window field, already scaled down by the sender's shift
	Urgent           uint16      // urgent pointer
	Options          *TCPOptions // nil: none
}

// HeaderLen is the encoded header's length, options included.
func (f *TCPFields) HeaderLen() int {
	if f.Options == nil {
		return TCPMinHeaderLen
	}
	return TCPMinHeaderLen + f.Options.EncodedLen()
}

// Encode writes the header into b and returns its length. The checksum field is zero: set
// it with SetTCPChecksum once the payload follows the header.
func (f *TCPFields) Encode(b []byte) int {
	n := f.HeaderLen()
	_ = b[n-1]
	binary.BigEndian.PutUint16(b[0:], f.SrcPort)
	binary.BigEndian.PutUint16(b[2:], f.DstPort)
	binary.BigEndian.PutUint32(b[4:], f.Seq)
	binary.BigEndian.PutUint32(b[8:], f.Ack)
	b[12] = uint8(n/4) << 4
	b[13] = f.Flags
	binary.BigEndian.PutUint16(b[14:], f.Window)
	b[16], b[17] = 0, 0
	binary.BigEndian.PutUint16(b[18:], f.Urgent)
	if f.Options != nil {
		f.Options.Encode(b[TCPMinHeaderLen:n])
	}
	return n
}

// SetTCPChecksum computes and stores the checksum of segment (header and payload).
func SetTCPChecksum(segment []byte, src, dst netip.Addr) {
	segment[16], segment[17] = 0, 0
	c := ^Checksum(segment, PseudoHeaderChecksum(ProtoTCP, src, dst, len(segment)))
	binary.BigEndian.PutUint16(segment[16:], c)
}

// FillTCPChecksum sets the TCP checksum of ip, an IPv4 or IPv6 packet (without IPv6
// extension headers) carrying a TCP segment: for a copy of a super-segment whose checksum
// a GSO link was left to compute (link.GSOEndpoint), so that a capture shows it valid.
// It returns false, changing nothing, when ip is not such a packet.
func FillTCPChecksum(ip []byte) bool {
	if len(ip) == 0 {
		return false
	}
	var off int
	var src, dst netip.Addr
	switch ip[0] >> 4 {
	case 4:
		h, err := ParseIPv4(ip)
		if err != nil || h.Protocol() != ProtoTCP {
			return false
		}
		off, src, dst = h.HeaderLen(), h.Src(), h.Dst()
	case 6:
		if len(ip) < IPv6HeaderLen || ip[6] != ProtoTCP {
			return false
		}
		off = IPv6HeaderLen
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	default:
		return false
	}
	if len(ip) < off+TCPMinHeaderLen {
		return false
	}
	SetTCPChecksum(ip[off:], src, dst)
	return true
}

// SACKBlock is one SACK block: [Left, Right) in sequence space (RFC 2018 §3).
type SACKBlock struct {
	Left, Right uint32 // first sequence number of the block, and the one after its last
}

// TCPOptions holds the options berth understands. Has* fields say which were present.
type TCPOptions struct {
	HasMSS         bool   // an MSS option was present (RFC 9293 §3.7.1)
	MSS            uint16 // its value
	HasWindowScale bool   // a window scale option was present (RFC 7323 §2)
	WindowScale    uint8  // its shift count (at most 14 is used)
	SACKPermitted  bool   // SACK-permitted option (RFC 2018 §2)
	HasTimestamps  bool   // a timestamps option was present (RFC 7323 §3)
	TSVal, TSEcr   uint32 // its TSval and TSecr
	NumSACK        int    // blocks used in SACK
	SACK           [MaxSACKBlocks]SACKBlock
	// FastOpen is the TCP Fast Open option's kind when present: TCPOptFastOpen (RFC 7413
	// §4.1.1) or TCPOptExperimental with the Fast Open magic (the pre-RFC form, RFC 6994).
	// FastOpenLen bytes of FastOpenCookie are the cookie; none is a cookie request.
	FastOpen       uint8
	FastOpenLen    uint8
	FastOpenCookie [16]byte
}

// Fast Open option kinds and the experimental option's magic (RFC 7413 §4.1.1, RFC 6994).
const (
	TCPOptFastOpen     = 34
	TCPOptExperimental = 254
	FastOpenMagic      = 0xf989
)

// ParseTCPOptions decodes option bytes. Unknown options are skipped by their length; an
// option whose length byte is missing, below 2, runs past the end, or does not fit its
// kind's fixed size is rejected (RFC 9293 §3.1: a malformed option is a malformed segment).
func ParseTCPOptions(b []byte, o *TCPOptions) error {
	*o = TCPOptions{}
	for len(b) > 0 {
		kind := b[0]
		if kind == TCPOptEnd {
			return nil
		}
		if kind == TCPOptNOP {
			b = b[1:]
			continue
		}
		if len(b) < 2 {
			return tcpErrors[ErrBadOption]
		}
		l := int(b[1])
		if l < 2 || l > len(b) {
			return tcpErrors[ErrBadOption]
		}
		body := b[2:l]
		switch kind {
		case TCPOptMSS:
			if l != 4 {
				return tcpErrors[ErrBadOption]
			}
			o.HasMSS, o.MSS = true, binary.BigEndian.Uint16(body)
		case TCPOptWindowScale:
			if l != 3 {
				return tcpErrors[ErrBadOption]
			}
			o.HasWindowScale, o.WindowScale = true, body[0]
		case TCPOptSACKPermitted:
			if l != 2 {
				return tcpErrors[ErrBadOption]
			}
			o.SACKPermitted = true
		case TCPOptSACK:
			if (l-2)%8 != 0 || l == 2 {
				return tcpErrors[ErrBadOption]
			}
			for i := 0; i+8 <= len(body) && o.NumSACK < MaxSACKBlocks; i += 8 {
				o.SACK[o.NumSACK] = SACKBlock{binary.BigEndian.Uint32(body[i:]), binary.BigEndian.Uint32(body[i+4:])}
				o.NumSACK++
			}
		case TCPOptTimestamps:
			if l != 10 {
				return tcpErrors[ErrBadOption]
			}
			o.HasTimestamps = true
			o.TSVal, o.TSEcr = binary.BigEndian.Uint32(body), binary.BigEndian.Uint32(body[4:])
		case TCPOptFastOpen, TCPOptExperimental:
			if kind == TCPOptExperimental {
				if len(body) < 2 || binary.BigEndian.Uint16(body) != FastOpenMagic {
					break // another experiment: skipped like an unknown option
				}
				body = body[2:]
			}
			// RFC 7413 §4.1.1: a cookie is 4 to 16 bytes; other lengths are ignored.
			if n := len(body); n == 0 || (n >= 4 && n <= 16) {
				o.FastOpen, o.FastOpenLen = kind, uint8(n)
				copy(o.FastOpenCookie[:], body)
			}
		}
		b = b[l:]
	}
	return nil
}

// EncodedLen is the options' encoded length, padded to a multiple of 4. SACK blocks that do
// not fit in the 40 bytes of option space are left out.
func (o *TCPOptions) EncodedLen() int {
	n := 0
	if o.HasMSS {
		n += 4
	}
	if o.HasWindowScale {
		n += 4 // NOP + 3
	}
	if o.HasTimestamps {
		n += 12 // NOP NOP + 10, or SACK-permitted + 10
	} else if o.SACKPermitted {
		n += 4 // NOP NOP + 2
	}
	if o.FastOpen != 0 {
		n += o.fastOpenLen()
	}
	if o.NumSACK > 0 {
		n += 4 + 8*o.sackFit(n)
	}
	return n
}

// fastOpenLen is the Fast Open option's length padded to 4 bytes with NOPs.
func (o *TCPOptions) fastOpenLen() int {
	l := 2 + int(o.FastOpenLen)
	if o.FastOpen == TCPOptExperimental {
		l += 2
	}
	return (l + 3) &^ 3
}

func (o *TCPOptions) sackFit(used int) int {
	k := min(o.NumSACK, (TCPMaxHeaderLen-TCPMinHeaderLen-used-4)/8)
	return max(k, 0)
}

// Encode writes the options into b (len(b) >= EncodedLen()) in the layout Linux uses, and
// returns the bytes written.
func (o *TCPOptions) Encode(b []byte) int {
	n := 0
	if o.HasMSS {
		b[0], b[1] = TCPOptMSS, 4
		binary.BigEndian.PutUint16(b[2:], o.MSS)
		n = 4
	}
	if o.HasTimestamps {
		if o.SACKPermitted {
			b[n], b[n+1] = TCPOptSACKPermitted, 2
		} else {
			b[n], b[n+1] = TCPOptNOP, TCPOptNOP
		}
		b[n+2], b[n+3] = TCPOptTimestamps, 10
		binary.BigEndian.PutUint32(b[n+4:], o.TSVal)
		binary.BigEndian.PutUint32(b[n+8:], o.TSEcr)
		n += 12
	} else if o.SACKPermitted {
		b[n], b[n+1], b[n+2], b[n+3] = TCPOptNOP, TCPOptNOP, TCPOptSACKPermitted, 2
		n += 4
	}
	if o.HasWindowScale {
		b[n], b[n+1], b[n+2], b[n+3] = TCPOptNOP, TCPOptWindowScale, 3, o.WindowScale
		n += 4
	}
	if o.FastOpen != 0 {
		// After the others, NOP-padded at its end, as Linux writes it.
		l, m := 2+int(o.FastOpenLen), n+2
		b[n] = o.FastOpen
		if o.FastOpen == TCPOptExperimental {
			l += 2
			binary.BigEndian.PutUint16(b[m:], FastOpenMagic)
			m += 2
		}
		b[n+1] = uint8(l)
		copy(b[m:], o.FastOpenCookie[:o.FastOpenLen])
		for i := n + l; i < n+o.fastOpenLen(); i++ {
			b[i] = TCPOptNOP
		}
		n += o.fastOpenLen()
	}
	if o.NumSACK > 0 {
		k := o.sackFit(n)
		b[n], b[n+1], b[n+2], b[n+3] = TCPOptNOP, TCPOptNOP, TCPOptSACK, uint8(2+8*k)
		n += 4
		for i := 0; i < k; i++ {
			binary.BigEndian.PutUint32(b[n:], o.SACK[i].Left)
			binary.BigEndian.PutUint32(b[n+4:], o.SACK[i].Right)
			n += 8
		}
	}
	return n
}
