package berth

import (
	"net"
	"net/netip"
	"strconv"

	"github.com/berthnet/berth/udp"
)

// splitAddr parses a Go-style address ("10.0.0.1:53", "[fd00::1]:53", ":0",
// "localhost:53") into an address (zero for a wildcard host) and port. berth has no
// resolver: names other than "localhost" fail with a *net.DNSError.
func splitAddr(network, address string, v6 bool) (netip.Addr, uint16, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	p, err := parsePort(network, port)
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
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, 0, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return a, p, nil
}

func parsePort(network, port string) (uint16, error) {
	if port == "" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(port, 10, 16); err == nil {
		return uint16(n), nil
	}
	// Service names come from the local services database, as net.LookupPort does.
	n, err := net.LookupPort(network, port)
	if err != nil {
		return 0, err
	}
	return uint16(n), nil
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
