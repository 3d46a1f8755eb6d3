// Package ports is the heart of berth: the 16-bit port number, its IANA categories
// (RFC 6335 §6), the IANA service-name registry, and the Manager that owns every binding of
// a transport protocol on a stack.
package ports

// Port is a TCP or UDP port number.
type Port uint16
