package ports

import (
	"net/netip"
)

// NOTE: this file fixes the Manager's API that the transport protocols (tcp, udp) and the
// stack program against. Bodies marked "unimplemented" are being written.

// Protocol is a transport protocol number whose ports a Manager manages.
type Protocol uint8

const (
	TCP Protocol = 6
	UDP Protocol = 17
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "proto-" + itoa(int(p))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// Range is an inclusive range of ports.
type Range struct{ Low, High Port }

// Config holds a Manager's settings, named after the Linux sysctls they mirror.
type Config struct {
	// LocalPortRange is net.ipv4.ip_local_port_range: where ephemeral ports come from.
	// Zero value: IANA's dynamic range 49152–65535 (RFC 6335 §6).
	LocalPortRange Range
	// UnprivilegedPortStart is net.ipv4.ip_unprivileged_port_start: binding below it needs
	// BindOptions.Privileged. Zero value means the default, 1024; use a pointer-free
	// sentinel: set NoPrivilegedPorts to allow every port.
	UnprivilegedPortStart Port
	NoPrivilegedPorts     bool
	// ReservedPorts is net.ipv4.ip_local_reserved_ports: never chosen as ephemeral ports
	// (an explicit bind may still use them).
	ReservedPorts []Range
	// Secret keys the RFC 6056 hash; zero means a random key.
	Secret [16]byte
	// TupleReclaimable, when set, is asked about an owner holding a 4-tuple that Connect
	// wants: true lets Connect take the 4-tuple over (TCP uses it to reuse TIME-WAIT
	// entries safely). The callback must tear down the old owner itself.
	TupleReclaimable func(owner any) bool
}

// BindOptions are the socket options that decide whether binds may share a port.
type BindOptions struct {
	ReuseAddr  bool   // SO_REUSEADDR
	ReusePort  bool   // SO_REUSEPORT
	V6Only     bool   // IPV6_V6ONLY: a "::" bind does not also hold the IPv4 port
	Privileged bool   // CAP_NET_BIND_SERVICE: may bind below UnprivilegedPortStart
	UID        uint32 // SO_REUSEPORT groups only form between sockets of the same user
	// Listening marks a TCP listener (Linux lets SO_REUSEADDR sockets share a port only
	// while none of them listens). Update it with Binding.SetListening.
	Listening bool
}

// Manager owns every port binding of one transport protocol on one stack: the bind table
// keyed by (local address, port), the table of connected 4-tuples, ephemeral port
// selection, and the demultiplexing lookup. It is safe for concurrent use.
type Manager struct {
	proto Protocol
	cfg   Config
}

// NewManager returns a Manager for proto with cfg (zero fields take their defaults).
func NewManager(proto Protocol, cfg Config) *Manager {
	panic("unimplemented")
}

// Config returns the current settings; SetConfig replaces them (existing bindings stay).
func (m *Manager) Config() Config { panic("unimplemented") }

// SetConfig replaces the settings; it fails with EINVAL on an empty or inverted range.
func (m *Manager) SetConfig(cfg Config) error { panic("unimplemented") }

// Bind reserves local (address and port) for owner. Port 0 picks a free port at random from
// LocalPortRange (bind(0)). Errors are syscall errnos: EADDRINUSE, EACCES (below the
// privileged floor without Privileged), EADDRNOTAVAIL (no free port).
func (m *Manager) Bind(local netip.AddrPort, opts BindOptions, owner any) (*Binding, error) {
	panic("unimplemented")
}

// Connect gives a socket its remote end and registers the 4-tuple.
//
// With b == nil the socket was not bound: Connect picks the local port — for TCP by RFC 6056
// Algorithm 4 (a keyed hash of (local addr, remote addr, remote port) plus a table of
// perturbation counters), so one ephemeral port may serve many different destinations while
// every 4-tuple stays unique; for UDP an exclusive port at random, as Linux's autobind does.
// local must then be a concrete address (the route's source address).
// With b != nil (bound earlier), b's port is kept; a wildcard address in b is replaced by
// local. The returned Binding is b itself in that case.
// Errors: EADDRNOTAVAIL when no port (or no unique 4-tuple) is left — at once, never a hang;
// EADDRINUSE when b's 4-tuple is taken.
func (m *Manager) Connect(b *Binding, local netip.Addr, remote netip.AddrPort, owner any) (*Binding, error) {
	panic("unimplemented")
}

// Register adds a connected 4-tuple on a port that is already held (a TCP connection
// accepted by a listener, or a TIME-WAIT entry): no port is allocated and the bind table is
// not consulted. EADDRINUSE if the 4-tuple exists.
func (m *Manager) Register(local, remote netip.AddrPort, owner any) (*Binding, error) {
	panic("unimplemented")
}

// Lookup demultiplexes an inbound packet addressed to local from remote and returns the
// owner it belongs to: first the exact 4-tuple, then a socket bound to (local address,
// port), then one bound to the wildcard address on that port (for IPv4 packets, a "::"
// socket without V6Only counts). A SO_REUSEPORT group answers with one member chosen by a
// hash of the 4-tuple. Bound sockets that are connected match only their remote. It costs
// O(1) whatever the number of bindings and does not allocate.
func (m *Manager) Lookup(local, remote netip.AddrPort) (owner any, ok bool) {
	panic("unimplemented")
}

// LookupAll calls f for every owner bound to local's port that would accept a datagram
// from remote (UDP multicast/broadcast delivery). Unused for unicast.
func (m *Manager) LookupAll(local, remote netip.AddrPort, f func(owner any)) {
	panic("unimplemented")
}

// Len reports the number of live bindings (bound plus connected).
func (m *Manager) Len() int { panic("unimplemented") }

// Binding is one entry in a Manager: a bound (address, port), and once connected, its
// remote end.
type Binding struct {
	m *Manager
}

// Local returns the bound local address and port.
func (b *Binding) Local() netip.AddrPort { panic("unimplemented") }

// Remote returns the remote end, or the zero AddrPort while unconnected.
func (b *Binding) Remote() netip.AddrPort { panic("unimplemented") }

// Owner returns the socket the binding belongs to; SetOwner changes it (TCP hands a
// 4-tuple from a connection to its TIME-WAIT record).
func (b *Binding) Owner() any        { panic("unimplemented") }
func (b *Binding) SetOwner(o any)    { panic("unimplemented") }
func (b *Binding) SetListening(bool) { panic("unimplemented") }

// Release removes the binding; releasing twice is a no-op.
func (b *Binding) Release() { panic("unimplemented") }
