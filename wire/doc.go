// Package wire holds zero-allocation views over packet bytes and builders for the headers
// berth speaks: IPv4, IPv6 (with its extension-header chain), TCP (with options), UDP,
// ICMPv4 and ICMPv6, and the internet checksum; and on Ethernet links (link/ether) the
// Ethernet II header, ARP, Neighbor Discovery messages with their options, and DHCPv4.
//
// A view is a named byte slice (IPv4, IPv6, TCP, UDP, ...) whose accessors read fields in
// place; a Parse function validates the bytes once and returns the view or a typed *Error.
// Builders (the Encode methods of the *Fields structs) write a header into a caller's
// buffer. Nothing here allocates on the packet path.
//
// IPv6 extension headers (RFC 8200 §4) are walked by IPv6.Upper, which returns the
// upper-layer protocol, its offset and the fragment header if any, or step by step by the
// IPv6ExtIter from IPv6.Extensions. ICMP errors quote the offending datagram: its IPv4
// header is read with ParseIPv4Quote, which accepts the truncation.
//
// Every parser has a fuzz target (fuzz_test.go) and is cross-checked against gopacket and
// against packets captured from the Linux kernel (testdata/kernel.pcap).
package wire

import "fmt"

// NetworkHeadroom is the space transport protocols reserve in front of their header for the
// network layer: the largest header berth writes (IPv6, 40 bytes; IPv4 uses 20 of it).
const NetworkHeadroom = 40

// IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
const (
	ProtoHopByHop uint8 = 0
	ProtoICMPv4   uint8 = 1
	ProtoTCP      uint8 = 6
	ProtoUDP      uint8 = 17
	ProtoRouting  uint8 = 43
	ProtoFragment uint8 = 44
	ProtoICMPv6   uint8 = 58
	ProtoNoNext   uint8 = 59
	ProtoDestOpts uint8 = 60
)

// ErrorKind classifies why a parser rejected its input.
type ErrorKind uint8

const (
	ErrTooShort    ErrorKind = iota + 1 // fewer bytes than the header needs
	ErrBadLength                        // a length field disagrees with the bytes
	ErrBadVersion                       // IP version field is not the expected one
	ErrBadChecksum                      // checksum does not verify
	ErrBadOption                        // malformed option or extension header
	ErrBadField                         // a field holds a value the RFC forbids
)

// String names the kind, as error texts show it.
func (k ErrorKind) String() string {
	switch k {
	case ErrTooShort:
		return "too short"
	case ErrBadLength:
		return "bad length"
	case ErrBadVersion:
		return "bad version"
	case ErrBadChecksum:
		return "bad checksum"
	case ErrBadOption:
		return "bad option"
	case ErrBadField:
		return "bad field"
	}
	return fmt.Sprintf("error kind %d", uint8(k))
}

// Error is the error every parser in this package returns. Parsers return pointers to
// package-level values, so rejecting a packet does not allocate.
type Error struct {
	Layer string // "ipv4", "ipv6", "tcp", "udp", "icmpv4", "icmpv6"
	Kind  ErrorKind
}

// Error returns "wire: <layer>: <kind>".
func (e *Error) Error() string { return "wire: " + e.Layer + ": " + e.Kind.String() }

// Is makes errors.Is(err, &wire.Error{Kind: k}) match any layer when Layer is empty.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return (t.Layer == "" || t.Layer == e.Layer) && (t.Kind == 0 || t.Kind == e.Kind)
}

func newErrors(layer string) [ErrBadField + 1]*Error {
	var errs [ErrBadField + 1]*Error
	for k := ErrTooShort; k <= ErrBadField; k++ {
		errs[k] = &Error{Layer: layer, Kind: k}
	}
	return errs
}
