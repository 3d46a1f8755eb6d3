package berth

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/udp"
)

// splitHostPort splits a Go-style address ("10.0.0.1:53", "[fd00::1]:53", ":0",
// "name:https") into its host and port; named ports come from the IANA registry.
func splitHostPort(network, address string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, err
	}
	p, err := parsePort(network, port)
	if err != nil {
		return "", 0, err
	}
	return host, p, nil
}

// splitAddr parses a Go-style address into one address (zero for a wildcard host) and
// port, as net.Listen does: "localhost" is the loopback address of the family (IPv4
// unless v6), and another name is looked up with the stack's resolver and gives its
// first address, an IPv4 one if it has one and v6 is false.
func (s *Stack) splitAddr(ctx context.Context, network, address string, v6 bool) (netip.Addr, uint16, error) {
	host, p, err := splitHostPort(network, address)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if host == "" {
		return netip.Addr{}, p, nil
	}
	if host == "localhost" {
		if v6 {
			return netip.IPv6Loopback(), p, nil
		}
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), p, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a, p, nil
	}
	addrs, err := s.lookup(ctx, nil, ipNetwork(network), host)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if !v6 {
		for _, a := range addrs {
			if a.Is4() {
				return a, p, nil
			}
		}
	}
	return addrs[0], p, nil
}

func parsePort(network, port string) (uint16, error) {
	if port == "" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(port, 10, 16); err == nil {
		return uint16(n), nil
	}
	return lookupPort(network, port)
}

// lookupPort finds a named port in berth's own copy of the IANA service name and port
// number registry (package ports), not in the host's /etc/services: a stack behaves the
// same on every machine, and knows every registered name (RFC 6335 §5.1: names match
// case-insensitively). The error is the *net.DNSError net.LookupPort returns.
func lookupPort(network, service string) (uint16, error) {
	proto := strings.TrimRight(network, "46")
	for _, s := range ports.LookupService(service, proto) {
		if s.HasPort {
			return uint16(s.Port), nil
		}
	}
	return 0, &net.DNSError{Err: "unknown port", Name: network + "/" + service, IsNotFound: true}
}

// udpFamily picks the socket family the way package net does (favoriteAddrFamily): "udp4"
// is IPv4, "udp6" IPv6-only; "udp" is IPv4 for an IPv4 address, and otherwise (IPv6 or
// wildcard, including "0.0.0.0" when listening) a dual-stack IPv6 socket.
func udpFamily(network string, a netip.Addr, listen bool) (udp.Family, netip.Addr, error) {
	is4 := a.IsValid() && (a.Is4() || a.Is4In6())
	switch network {
	case "udp4":
		if a.IsValid() && !is4 {
			return 0, a, &net.AddrError{Err: "non-IPv4 address", Addr: a.String()}
		}
		return udp.V4, a.Unmap(), nil
	case "udp6":
		if is4 && !(listen && a.Unmap().IsUnspecified()) {
			return 0, a, &net.AddrError{Err: "non-IPv6 address", Addr: a.String()}
		}
		if is4 {
			a = netip.IPv6Unspecified()
		}
		return udp.V6, a, nil
	case "udp":
		if is4 && !(listen && a.Unmap().IsUnspecified()) {
			return udp.V4, a.Unmap(), nil
		}
		if is4 {
			a = netip.IPv6Unspecified()
		}
		return udp.Dual, a, nil
	}
	return 0, a, net.UnknownNetworkError(network)
}
