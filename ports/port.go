// Package ports is the heart of berth: the 16-bit port number, its IANA categories
// (RFC 6335 §6), the IANA service-name registry, and the Manager that owns every binding of
// a transport protocol on a stack.
package ports

import (
	"errors"
	"strconv"
)

//go:generate go run ./internal/iana/gen -in internal/iana/service-names-port-numbers.csv -out registry_data.txt

// Port is a TCP or UDP port number.
type Port uint16

// String returns the port in decimal.
func (p Port) String() string { return strconv.Itoa(int(p)) }

// Category is one of RFC 6335 §6's three port ranges.
type Category uint8

const (
	System  Category = iota // 0–1023: system (well-known) ports, assigned by IETF review
	User                    // 1024–49151: user (registered) ports, assigned by IANA
	Dynamic                 // 49152–65535: dynamic (private, ephemeral) ports, never assigned
)

// Category returns p's range by RFC 6335 §6.
func (p Port) Category() Category {
	switch {
	case p <= 1023:
		return System
	case p <= 49151:
		return User
	}
	return Dynamic
}

// String names the category as RFC 6335 §6 does ("system (well-known)"), or "category-N".
func (c Category) String() string {
	switch c {
	case System:
		return "system (well-known)"
	case User:
		return "user (registered)"
	case Dynamic:
		return "dynamic (ephemeral)"
	}
	return "category-" + strconv.Itoa(int(c))
}

// Range returns the ports of category c.
func (c Category) Range() Range {
	switch c {
	case System:
		return Range{0, 1023}
	case User:
		return Range{1024, 49151}
	}
	return Range{49152, 65535}
}

// Errors from ParsePort, for errors.Is.
var (
	ErrEmptyPort      = errors.New("empty port")        // ParsePort(""), returned as is
	ErrPortRange      = errors.New("port out of range") // a number above 65535 (or negative), wrapped
	ErrUnknownService = errors.New("unknown service")   // a name not in the IANA registry, wrapped
)

type parseError struct {
	msg  string
	kind error
}

func (e *parseError) Error() string { return e.msg }
func (e *parseError) Unwrap() error { return e.kind }

// ParsePort parses a port number ("443") or an IANA service name ("https", looked up
// case-insensitively as RFC 6335 §5.1 says; the first registry entry with a port wins).
// Errors read `empty port`, `port 70000 out of range 0-65535` and `unknown service "htps"`,
// and match ErrEmptyPort, ErrPortRange and ErrUnknownService with errors.Is.
func ParsePort(s string) (Port, error) {
	if s == "" {
		return 0, ErrEmptyPort
	}
	if isNumber(s) {
		n, err := strconv.ParseUint(s[signLen(s):], 10, 64)
		if s[0] == '-' && n != 0 || err != nil || n > 65535 {
			return 0, &parseError{"port " + s + " out of range 0-65535", ErrPortRange}
		}
		return Port(n), nil
	}
	if p, ok := servicePort(s); ok {
		return p, nil
	}
	return 0, &parseError{"unknown service " + strconv.Quote(s), ErrUnknownService}
}

func signLen(s string) int {
	if s[0] == '-' || s[0] == '+' {
		return 1
	}
	return 0
}

// isNumber reports whether s is an optionally signed run of decimal digits.
func isNumber(s string) bool {
	i := signLen(s)
	if i == len(s) {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
