package ports

import (
	"net/netip"
	"syscall"
)

// The bind table: every binding that holds a port, bucketed by port (portEntry, Linux's
// inet_bind_bucket), and the unconnected ones grouped by (address, port) for delivery.
// Bind and Listen apply Linux's sharing rules here (overlap, conflicts: SO_REUSEADDR,
// SO_REUSEPORT, IPV6_V6ONLY); recompute decides which members of a group receive. Every
// change to a port's groups ends in rebuildDemux (demux.go), so Lookup never reads the
// bind table for the common case.

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

// key kinds: a bound (address, port) entry, or the IPv4 view of a dual-stack "::" socket.
const (
	kindAddr uint8 = iota
	kindDual
)

// epKey is a fixed-size, comparable (address, port) key. IPv4 addresses are stored in
// their IPv4-mapped 16-byte form, so 0.0.0.0 and :: are different keys.
type epKey struct {
	a    [16]byte
	port Port
	kind uint8
}

// group is every unconnected binding on one (address, port), in bind order, and the members
// that receive packets (recv): one socket, or a SO_REUSEPORT group.
type group struct {
	members []*Binding
	recv    []*Binding
}

// portEntry is the bind-table bucket of one port (Linux's inet_bind_bucket): every binding
// that takes part in bind conflicts on it.
type portEntry struct {
	owners   []*Binding // explicit binds, autobinds and connect-time ephemeral users
	explicit int        // owners that came from Bind (or UDP autobind): Connect skips the port
	conns    int        // Register'd 4-tuples on the port (they make it "used" for bind(0))
}

func (e *portEntry) empty() bool { return len(e.owners) == 0 && e.conns == 0 }

// freeListMax bounds Manager.freeEntries and freeGroups.
const freeListMax = 32

func (m *Manager) updatePort(port Port, e *portEntry) {
	if e.empty() {
		delete(m.ports, port)
		if len(m.freeEntries) < freeListMax {
			clear(e.owners[:cap(e.owners)])
			*e = portEntry{owners: e.owners[:0]}
			m.freeEntries = append(m.freeEntries, e)
		}
	}
	m.busyBind.set(port, e.explicit > 0)
	if busy := !e.empty(); busy != m.busyAny.get(port) {
		m.busyAny.set(port, busy)
		if m.cfg.LocalPortRange.Contains(port) && !m.reserved.get(port) {
			if busy {
				m.freeAny[port&1]--
			} else {
				m.freeAny[port&1]++
			}
		}
	}
}

// entry returns port's bucket, making it if the port had none.
func (m *Manager) entry(port Port) *portEntry { return getOrTake(m.ports, port, &m.freeEntries) }

// groupKeys returns the demux keys under which an unconnected binding receives: its own
// (address, port), and for a dual-stack "::" socket also the IPv4 view.
// (address, port) first, and for a dual-stack "::" socket also the IPv4 view: keys[:n].
func groupKeys(b *Binding) (keys [2]epKey, n int) {
	a := b.local.Addr()
	keys[0] = epKey{a: a.As16(), port: Port(b.local.Port())}
	if a.Is6() && a.IsUnspecified() && !b.opts.V6Only {
		keys[1] = epKey{port: Port(b.local.Port()), kind: kindDual}
		return keys, 2
	}
	return keys, 1
}

// setGrouped adds the unconnected binding b to the groups of its keys (on), or takes it
// out of them, and rebuilds its port's demux slot.
func (m *Manager) setGrouped(b *Binding, on bool) {
	keys, n := groupKeys(b)
	for _, k := range keys[:n] {
		if on {
			m.addTo(k, b)
		} else {
			m.removeFrom(k, b)
		}
	}
	b.inGroup = on
	m.rebuildDemux(Port(b.local.Port()))
}

func (m *Manager) addTo(k epKey, b *Binding) {
	g := getOrTake(m.bound, k, &m.freeGroups)
	g.members = append(g.members, b)
	m.recompute(g)
}

func (m *Manager) removeFrom(k epKey, b *Binding) {
	g := m.bound[k]
	if g == nil {
		return
	}
	for i, o := range g.members {
		if o == b {
			last := len(g.members) - 1
			copy(g.members[i:], g.members[i+1:])
			g.members[last] = nil // no stale pointer keeping a released Binding alive
			g.members = g.members[:last]
			break
		}
	}
	if len(g.members) == 0 {
		delete(m.bound, k)
		if len(m.freeGroups) < freeListMax {
			clear(g.recv[:cap(g.recv)])
			g.recv = g.recv[:0]
			m.freeGroups = append(m.freeGroups, g)
		}
		return
	}
	m.recompute(g)
}

// regroup recomputes the receivers of b's groups after its options changed.
func (m *Manager) regroup(b *Binding) {
	if !b.inGroup {
		return
	}
	keys, n := groupKeys(b)
	for _, k := range keys[:n] {
		if g := m.bound[k]; g != nil {
			m.recompute(g)
		}
	}
	m.rebuildDemux(Port(b.local.Port()))
}

// recompute decides who receives unicast packets for a group. For TCP only listeners get
// packets through the bind table (a bound, non-listening socket gets nothing: RST). The
// newest eligible member receives (Linux UDP with SO_REUSEADDR: the last bound socket wins);
// if it is in a SO_REUSEPORT group, every eligible SO_REUSEPORT member of the same UID
// shares the traffic by a hash of the 4-tuple.
func (m *Manager) recompute(g *group) {
	clear(g.recv)
	g.recv = g.recv[:0]
	var last *Binding
	for i := len(g.members) - 1; i >= 0; i-- {
		if o := g.members[i]; m.eligible(o) {
			last = o
			break
		}
	}
	if last == nil {
		return
	}
	if !last.opts.ReusePort {
		g.recv = append(g.recv, last)
		return
	}
	for _, o := range g.members {
		if m.eligible(o) && o.opts.ReusePort && o.opts.UID == last.opts.UID {
			g.recv = append(g.recv, o)
		}
	}
}

// eligible reports whether the unconnected binding o may receive through the bind table:
// for TCP only a listener (a bound socket that does not listen answers SYNs with a RST).
func (m *Manager) eligible(o *Binding) bool { return m.proto != TCP || o.opts.Listening }

// receives reports whether the group (nil for none) has a receiver.
func (g *group) receives() bool { return g != nil && len(g.recv) > 0 }

// overlap reports whether binds on addresses a and b (same port) compete for packets:
// equal addresses, 0.0.0.0 against any IPv4 address, "::" against any IPv6 address, and a
// dual-stack "::" (not v6only) against IPv4 addresses too.
func overlap(a netip.Addr, aV6Only bool, b netip.Addr, bV6Only bool) bool {
	if a == b {
		return true
	}
	if a.Is4() == b.Is4() {
		return a.IsUnspecified() || b.IsUnspecified()
	}
	// Different families: only a dual-stack "::" covers IPv4.
	if a.Is6() {
		return a.IsUnspecified() && !aV6Only
	}
	return b.IsUnspecified() && !bV6Only
}

// conflicts reports whether a new bind of addr with opts may not share its port with the
// existing binding o (Linux inet_bind_conflict / inet_csk_bind_conflict):
//   - addresses that do not overlap never conflict;
//   - SO_REUSEADDR on both: no conflict, unless (TCP) the existing one is a listener;
//   - SO_REUSEPORT on both with the same UID: no conflict (a reuseport group);
//   - anything else conflicts.
func (m *Manager) conflicts(addr netip.Addr, opts BindOptions, o *Binding) bool {
	if !overlap(addr, opts.V6Only, o.local.Addr(), o.opts.V6Only) {
		return false
	}
	// Linux looks only at whether the existing socket listens: bind happens before listen,
	// and listen() re-runs this check (Binding.Listen) when the others are listening.
	if opts.ReuseAddr && o.opts.ReuseAddr && (m.proto != TCP || !o.opts.Listening) {
		return false
	}
	if opts.ReusePort && o.opts.ReusePort && opts.UID == o.opts.UID {
		return false
	}
	return true
}

// Bind reserves local (address and port) for owner. Port 0 picks a free port at random from
// LocalPortRange (bind(0)). Errors are syscall errnos: EADDRINUSE, EACCES (below the
// privileged floor without Privileged), EADDRNOTAVAIL (no free port). A zero (invalid)
// address binds "::", like ":80" in Go's net.Listen; IPv4-mapped addresses are unmapped.
//
// bind(0) picks a port no binding of this Manager uses at all, starting at a random point
// of the range and preferring ports of the parity opposite to Connect's (as Linux does);
// reserved ports are skipped.
func (m *Manager) Bind(local netip.AddrPort, opts BindOptions, owner any) (*Binding, error) {
	addr := local.Addr().Unmap()
	if !addr.IsValid() {
		// No address at all (":80") means every address, as in Go's net.Listen: "::",
		// dual-stack unless V6Only.
		addr = netip.IPv6Unspecified()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	port := Port(local.Port())
	if port == 0 {
		p, ok := m.pickFree(m.rng.Uint32(), 1)
		if !ok {
			return nil, syscall.EADDRNOTAVAIL
		}
		port = p
	} else {
		if !m.cfg.NoPrivilegedPorts && port < m.cfg.UnprivilegedPortStart && !opts.Privileged {
			return nil, syscall.EACCES
		}
		if e := m.ports[port]; e != nil {
			for _, o := range e.owners {
				if m.conflicts(addr, opts, o) {
					return nil, syscall.EADDRINUSE
				}
			}
		}
	}
	b := &Binding{m: m, local: netip.AddrPortFrom(addr, uint16(port)), owner: owner, opts: opts}
	m.addOwner(b, true)
	m.setGrouped(b, true)
	m.n++
	return b, nil
}

func (m *Manager) addOwner(b *Binding, explicit bool) {
	port := Port(b.local.Port())
	e := m.entry(port)
	e.owners = append(e.owners, b)
	b.inTable = true
	if explicit {
		e.explicit++
		b.explicit = true
	}
	m.updatePort(port, e)
}

// SetListening marks (or unmarks) the binding as a TCP listener. It does not check the
// reuse rules again; Listen does, as Linux's listen() does.
func (b *Binding) SetListening(v bool) {
	m := b.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.released {
		return
	}
	b.opts.Listening = v
	m.regroup(b)
}

// Listen checks that b may start listening and marks it a listener. On Linux two sockets
// with SO_REUSEADDR may share a port while bound, but the second listen() then fails with
// EADDRINUSE: SO_REUSEADDR never lets two TCP listeners share an address (SO_REUSEPORT does).
func (b *Binding) Listen() error {
	m := b.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.released || b.connected {
		return syscall.EINVAL
	}
	if b.opts.Listening {
		return nil
	}
	opts := b.opts
	opts.Listening = true
	if e := m.ports[Port(b.local.Port())]; e != nil {
		for _, o := range e.owners {
			if o != b && m.conflicts(b.local.Addr(), opts, o) {
				return syscall.EADDRINUSE
			}
		}
	}
	b.opts.Listening = true
	m.regroup(b)
	return nil
}
