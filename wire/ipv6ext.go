package wire

import "encoding/binary"

// IPv6FragmentHeaderLen is the fragment header's fixed length (RFC 8200 §4.5).
const IPv6FragmentHeaderLen = 8

// maxIPv6ExtHeaders bounds the chain walk. RFC 8200 §4.1 recommends each extension header at
// most once (destination options twice): 6 would do for a conforming packet; the bound is
// generous but keeps a hostile chain of thousands of 8-byte headers from costing a long walk.
const maxIPv6ExtHeaders = 16

// IPv6Fragment is a view over an IPv6 fragment header (RFC 8200 §4.5).
type IPv6Fragment []byte

// NextHeader is the type of the first header of the fragmentable part.
func (f IPv6Fragment) NextHeader() uint8 { return f[0] }

// Offset is this fragment's offset in the fragmentable part, in bytes (a multiple of 8).
func (f IPv6Fragment) Offset() int { return int(binary.BigEndian.Uint16(f[2:]) &^ 7) }

// More is the M flag: more fragments follow.
func (f IPv6Fragment) More() bool { return f[3]&1 != 0 }

// ID is the fragment identification (RFC 8200 §4.5; RFC 7739 on choosing it).
func (f IPv6Fragment) ID() uint32 { return binary.BigEndian.Uint32(f[4:]) }

// IsAtomic reports an atomic fragment: offset 0 and M clear, a whole packet that carries a
// fragment header (RFC 6946: process it as a whole packet, not through reassembly).
func (f IPv6Fragment) IsAtomic() bool { return binary.BigEndian.Uint16(f[2:])&^6 == 0 }

// IPv6FragmentFields describes a fragment header, for Encode.
type IPv6FragmentFields struct {
	NextHeader uint8 // protocol number of the header after the fragment header
	Offset     int   // in bytes, a multiple of 8 (the low 3 bits are dropped)
	More       bool
	ID         uint32
}

// Encode writes the 8-byte fragment header into b and returns 8. The reserved fields are
// zero (RFC 8200 §4.5).
func (f *IPv6FragmentFields) Encode(b []byte) int {
	_ = b[IPv6FragmentHeaderLen-1]
	b[0], b[1] = f.NextHeader, 0
	w := uint16(f.Offset) &^ 7
	if f.More {
		w |= 1
	}
	binary.BigEndian.PutUint16(b[2:], w)
	binary.BigEndian.PutUint32(b[4:], f.ID)
	return IPv6FragmentHeaderLen
}

// IsIPv6ExtHeader reports whether proto is one of the extension headers the walker steps
// over: hop-by-hop options, routing, fragment, destination options (RFC 8200 §4).
// Everything else (TCP, UDP, ICMPv6, no next header, and also AH/ESP, which berth does not
// implement) ends the chain and is reported as the upper-layer protocol.
func IsIPv6ExtHeader(proto uint8) bool {
	switch proto {
	case ProtoHopByHop, ProtoRouting, ProtoFragment, ProtoDestOpts:
		return true
	}
	return false
}

// IPv6ExtIter walks the extension-header chain of an IPv6 packet without allocating:
//
//	it := h.Extensions()
//	for it.Next() {
//		e := it.Header() // type, offset, bytes, and where the next-header byte naming it is
//	}
//	if it.Err() != nil { drop }
//	proto, off := it.Upper()
//
// The walk stops after a fragment header whose offset is not zero: what follows is
// fragment data, not headers (RFC 8200 §4.5). It checks that every header fits in the
// packet, that hop-by-hop options come only first (RFC 8200 §4.1), that the TLV options of
// hop-by-hop and destination options headers are well formed (RFC 8200 §4.2), that there is
// at most one fragment header, and that the chain has at most 16 headers.
type IPv6ExtIter struct {
	h    IPv6
	next uint8 // type of the header at off
	off  int   // offset of the next header to visit
	prev int   // offset of the byte that holds next
	n    int   // headers visited
	cur  IPv6ExtHeader
	frag bool
	err  error
	ptr  int // for Parameter Problem: see ErrPointer
	done bool
}

// IPv6ExtHeader is one extension header found by IPv6ExtIter.
type IPv6ExtHeader struct {
	Type           uint8  // ProtoHopByHop, ProtoRouting, ProtoFragment or ProtoDestOpts
	Offset         int    // from the start of the IPv6 header
	NextHeaderByte int    // offset of the next-header byte that names this header (6: fixed header)
	Bytes          []byte // the whole header; for ProtoFragment an IPv6Fragment
}

// Extensions returns an iterator over h's extension headers.
func (h IPv6) Extensions() IPv6ExtIter {
	return IPv6ExtIter{h: h, next: h[6], off: IPv6HeaderLen, prev: 6}
}

// Next advances to the next extension header and reports whether there is one. It returns
// false at the upper-layer header, after a non-first fragment's header, or on an error.
func (it *IPv6ExtIter) Next() bool {
	if it.done || !IsIPv6ExtHeader(it.next) {
		it.done = true
		return false
	}
	if it.n == maxIPv6ExtHeaders {
		return it.fail(ErrBadOption, it.prev)
	}
	rest := it.h[it.off:]
	if len(rest) < 8 { // every extension header is a multiple of 8 bytes (RFC 8200 §4)
		return it.fail(ErrTooShort, it.off)
	}
	var l int
	switch it.next {
	case ProtoHopByHop:
		if it.n != 0 { // RFC 8200 §4.1: only immediately after the IPv6 header
			// RFC 8200 §4: Parameter Problem code 1, pointing at the next-header
			// byte that names it.
			return it.fail(ErrBadOption, it.prev)
		}
		fallthrough
	case ProtoDestOpts:
		l = (int(rest[1]) + 1) * 8
		if l > len(rest) {
			return it.fail(ErrBadLength, it.off+1)
		}
		if bad := badIPv6Option(rest[2:l]); bad >= 0 {
			return it.fail(ErrBadOption, it.off+2+bad)
		}
	case ProtoRouting:
		l = (int(rest[1]) + 1) * 8 // RFC 8200 §4.4
		if l > len(rest) {
			return it.fail(ErrBadLength, it.off+1)
		}
	case ProtoFragment:
		if it.frag { // a fragment inside a fragment is not a thing (RFC 8200 §4.5)
			return it.fail(ErrBadOption, it.prev)
		}
		it.frag = true
		l = IPv6FragmentHeaderLen
	}
	it.cur = IPv6ExtHeader{Type: it.next, Offset: it.off, NextHeaderByte: it.prev, Bytes: rest[:l:l]}
	it.n++
	it.prev = it.off
	it.next = rest[0]
	it.off += l
	if it.cur.Type == ProtoFragment && IPv6Fragment(it.cur.Bytes).Offset() != 0 {
		// Not the first fragment: the rest is data to reassemble; its first byte
		// is not a header, whatever rest[0] names.
		it.done = true
	}
	return true
}

func (it *IPv6ExtIter) fail(k ErrorKind, ptr int) bool {
	it.err, it.ptr, it.done = ipv6Errors[k], ptr, true
	return false
}

// Header is the header Next stepped onto.
func (it *IPv6ExtIter) Header() IPv6ExtHeader { return it.cur }

// Err is the reason the walk stopped early, or nil.
func (it *IPv6ExtIter) Err() error { return it.err }

// ErrPointer is, after an error, the offset from the start of the IPv6 header of the byte
// at fault, for the pointer of an ICMPv6 Parameter Problem (RFC 4443 §3.4, RFC 8200 §4):
// the next-header byte naming a misplaced hop-by-hop or second fragment header, the length
// byte of a header that overruns the packet, the malformed option's type byte, or the start
// of a truncated header.
func (it *IPv6ExtIter) ErrPointer() int { return it.ptr }

// Upper is, once Next has returned false without error, the upper-layer protocol and the
// offset of its header (or, after a non-first fragment, of the fragment data).
func (it *IPv6ExtIter) Upper() (proto uint8, offset int) { return it.next, it.off }

// badIPv6Option checks the TLV-encoded options of a hop-by-hop or destination options
// header (RFC 8200 §4.2): Pad1 is one byte, every other option has a length byte and fits.
// It returns the offset in b of the first malformed option, or -1.
func badIPv6Option(b []byte) int {
	for i := 0; i < len(b); {
		if b[i] == 0 { // Pad1
			i++
			continue
		}
		if i+1 >= len(b) || i+2+int(b[i+1]) > len(b) {
			return i
		}
		i += 2 + int(b[i+1])
	}
	return -1
}

// Upper walks the extension-header chain (see IPv6ExtIter) and returns the upper-layer
// protocol and the offset of its header from the start of h. If the packet carries a
// fragment header, frag is a view of it and hasFrag is true; for a non-first fragment
// (frag.Offset() != 0) the walk stops there and offset is where the fragment data starts,
// with proto = frag.NextHeader(). For a first fragment the walk goes on through the headers
// that follow, which RFC 8200 §4.5 (as updated by RFC 7112) requires to be in it.
func (h IPv6) Upper() (proto uint8, offset int, frag IPv6Fragment, hasFrag bool, err error) {
	if !IsIPv6ExtHeader(h[6]) { // the common case: no extension headers
		return h[6], IPv6HeaderLen, nil, false, nil
	}
	it := h.Extensions()
	for it.Next() {
		if it.cur.Type == ProtoFragment {
			frag, hasFrag = IPv6Fragment(it.cur.Bytes), true
		}
	}
	if it.err != nil {
		return 0, 0, nil, false, it.err
	}
	proto, offset = it.Upper()
	return proto, offset, frag, hasFrag, nil
}

// Actions for an unrecognized option, its type's two high-order bits (RFC 8200 §4.2).
const (
	IPv6OptActionSkip        = 0 // skip over it and go on
	IPv6OptActionDiscard     = 1 // discard the packet
	IPv6OptActionICMP        = 2 // discard, send Parameter Problem code 2 even to multicast
	IPv6OptActionICMPUnicast = 3 // discard, send Parameter Problem code 2 unless multicast
	ipv6OptPad1, ipv6OptPadN = 0, 1
)

// UnrecognizedIPv6Option walks the TLV-encoded options of a hop-by-hop or destination
// options header (hdr is the whole header, as IPv6ExtHeader.Bytes; the chain walk has
// checked that the options are well formed) and returns the first option berth does not
// implement whose action (RFC 8200 §4.2) is not IPv6OptActionSkip: its action, and the
// offset of its type byte in hdr. at is -1 when every option may be skipped. berth
// recognizes only Pad1 and PadN; it has no jumbograms (RFC 2675), so a Jumbo Payload
// option, action 11, is refused like any other.
func UnrecognizedIPv6Option(hdr []byte) (action uint8, at int) {
	for i := 2; i < len(hdr); {
		t := hdr[i]
		if t == ipv6OptPad1 {
			i++
			continue
		}
		if i+1 >= len(hdr) {
			return 0, -1
		}
		if t != ipv6OptPadN && t>>6 != IPv6OptActionSkip {
			return t >> 6, i
		}
		i += 2 + int(hdr[i+1])
	}
	return 0, -1
}

// ICMPv6CodeIncompleteChain is the Parameter Problem code for a first fragment that does
// not hold the whole header chain through the upper-layer header (RFC 7112 §5, RFC 8200
// §4.5); the pointer is zero. The other Parameter Problem codes are with the ICMPv6
// constants.
const ICMPv6CodeIncompleteChain uint8 = 3

// UpperHeaderMin is how many bytes of an upper-layer header of type proto a first fragment
// must hold for its chain to count as complete: the fixed TCP, UDP or ICMPv6 header, one
// byte of any other (as Linux's ipv6frag_thdr_truncated counts), none after No Next Header.
func UpperHeaderMin(proto uint8) int {
	switch proto {
	case ProtoTCP:
		return TCPMinHeaderLen
	case ProtoUDP:
		return UDPHeaderLen
	case ProtoICMPv6:
		return ICMPv6HeaderLen
	case ProtoNoNext:
		return 0
	}
	return 1
}
