package berth

import (
	"net/netip"
	"slices"
	"syscall"
)

// IPv6 zones. "[fe80::2%eth0]:80" names a link-local address on interface eth0 (RFC 4007
// §11): the zone is the interface's name. The socket layer below works on unzoned
// addresses, so the root package checks the zone against the stack's interfaces, takes it
// off before binding or connecting — a zoned dial binds the interface's own link-local
// address, which steers its packets through that interface — and puts it back on the
// link-local addresses it returns (LocalAddr, RemoteAddr, Addr, ReadFrom) and in error
// texts, as Linux reports a scope ID there. Zones on other addresses carry no meaning and
// are dropped, as Linux ignores sin6_scope_id for them.

// zoneOf returns a's zone if it matters (a link-local IPv6 address) and a without it.
func zoneOf(a netip.Addr) (netip.Addr, string) {
	z := a.Zone()
	if z == "" {
		return a, ""
	}
	a = a.WithZone("")
	if !a.Is6() || !(a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) {
		return a, ""
	}
	return a, z
}

// checkZone checks the zone of a socket's address: it must name one of the stack's
// interfaces (else EINVAL, as Linux's bind and connect answer a scope ID that is no
// interface), and a local address must be assigned to that interface (else
// EADDRNOTAVAIL).
func (s *Stack) checkZone(a netip.Addr, zone string, local bool) error {
	if zone == "" {
		return nil
	}
	ifc, ok := s.net.Interface(zone)
	if !ok {
		return syscall.EINVAL
	}
	if local && !slices.ContainsFunc(ifc.Addresses(), func(p netip.Prefix) bool { return p.Addr() == a }) {
		return syscall.EADDRNOTAVAIL
	}
	return nil
}

// zoneSource returns the source address of a dial to the link-local address ra with
// zone: the interface's own address on ra's link. Bound to it, the socket's packets
// leave through that interface whatever the route table says (the stack routes a
// link-local destination by its source), so the zone selects the interface even when
// several interfaces share the fe80::/64 link-local prefix. A zone naming no interface
// fails with EINVAL; an interface with no address on ra's link with ENETUNREACH, as
// Linux's connect answers both.
func (s *Stack) zoneSource(ra netip.Addr, zone string) (netip.Addr, error) {
	ifc, ok := s.net.Interface(zone)
	if !ok {
		return netip.Addr{}, syscall.EINVAL
	}
	for _, p := range ifc.Addresses() {
		if p.Contains(ra) && p.Addr().IsLinkLocalUnicast() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, syscall.ENETUNREACH
}

// interfaceOf returns the name of the interface that has the address a, or "".
func (s *Stack) interfaceOf(a netip.Addr) string {
	for _, ifc := range s.net.Interfaces() {
		if slices.ContainsFunc(ifc.Addresses(), func(p netip.Prefix) bool { return p.Addr() == a }) {
			return ifc.Name()
		}
	}
	return ""
}

// linkZone returns the zone that link-local addresses of a socket bound or connected
// from local show: the given zone, or else the name of the interface holding local when
// local is link-local.
func (s *Stack) linkZone(local netip.Addr, zone string) string {
	if zone != "" {
		return zone
	}
	if local.Is6() && local.IsLinkLocalUnicast() {
		return s.interfaceOf(local)
	}
	return ""
}

// withZone puts zone on ap's address if it is link-local.
func withZone(ap netip.AddrPort, zone string) netip.AddrPort {
	if zone == "" {
		return ap
	}
	a := ap.Addr()
	if !a.Is6() || !(a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) {
		return ap
	}
	return netip.AddrPortFrom(a.WithZone(zone), ap.Port())
}

// stripZone takes the zone off ap's address (the layers below compare unzoned addresses).
func stripZone(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Zone() == "" {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port())
}
