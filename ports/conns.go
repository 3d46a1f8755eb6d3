package ports

import (
	"net/netip"
	"syscall"
)

// The 4-tuple table: connected bindings by (local, remote), IPv4 and IPv6 apart
// (connTable). Connect, Register and a bound socket's connect add to it; addConn and
// delConn keep the demux slot's count of 4-tuples (Lookup probes the table only on ports
// that have some) and the destination index in step with it.

// tupleKey is a connected 4-tuple.
type tupleKey struct {
	la, ra [16]byte
	lp, rp Port
}

func mkTuple(local, remote netip.AddrPort) tupleKey {
	return tupleKey{la: local.Addr().As16(), ra: remote.Addr().As16(), lp: Port(local.Port()), rp: Port(remote.Port())}
}

// tuple4 is an IPv4 4-tuple: 12 bytes, a third of tupleKey, so the IPv4 table is smaller
// and hashes faster.
type tuple4 struct {
	la, ra [4]byte
	lp, rp uint16
}

// connTable holds the connected 4-tuples, IPv4 and IPv6 apart. Both ends of a 4-tuple are
// of one family (Connect and Register check it). Entries carry a copy of the owner so that
// Lookup does not touch the Binding (one cache miss less with many connections); SetOwner
// keeps the copy current.
type connTable struct {
	v4 map[tuple4]connEntry
	v6 map[tupleKey]connEntry
}

type connEntry struct {
	owner any
	b     *Binding
}

// find returns the entry of the 4-tuple (l, r). Lookup has its own copy of it, inlined
// (find is over the inliner's budget). The tuple4 literal is written out here, in set and
// in del rather than made by a helper: As4's panic paths put such a helper over the
// inliner's budget too, and Connect and Release would pay a call per use.
func (t *connTable) find(l, r netip.AddrPort) (connEntry, bool) {
	if l.Addr().Is4() {
		if !r.Addr().Is4() {
			return connEntry{}, false // no 4-tuple mixes families (and As4 would panic)
		}
		e, ok := t.v4[tuple4{l.Addr().As4(), r.Addr().As4(), l.Port(), r.Port()}]
		return e, ok
	}
	e, ok := t.v6[mkTuple(l, r)]
	return e, ok
}

// get returns the binding holding the 4-tuple (l, r), or nil. It inlines, so it costs what
// find costs.
func (t *connTable) get(l, r netip.AddrPort) *Binding {
	e, _ := t.find(l, r)
	return e.b
}

// set stores b under (l, r) with b's current owner.
func (t *connTable) set(l, r netip.AddrPort, b *Binding) {
	e := connEntry{b.owner, b}
	if l.Addr().Is4() {
		t.v4[tuple4{l.Addr().As4(), r.Addr().As4(), l.Port(), r.Port()}] = e
		return
	}
	t.v6[mkTuple(l, r)] = e
}

func (t *connTable) del(l, r netip.AddrPort) {
	if l.Addr().Is4() {
		delete(t.v4, tuple4{l.Addr().As4(), r.Addr().As4(), l.Port(), r.Port()})
		return
	}
	delete(t.v6, mkTuple(l, r))
}

// addConn registers the new 4-tuple (l, r) for b: in the 4-tuple table and the destination
// index. It must not be in the table yet.
func (m *Manager) addConn(l, r netip.AddrPort, b *Binding) {
	if m.conns.get(l, r) == nil {
		// Lookup probes the 4-tuples only on ports that have some.
		s := m.slot(Port(l.Port()))
		was := s.used()
		s.conns++
		m.connPorts.set(Port(l.Port()), true)
		m.slotDone(Port(l.Port()), was)
	}
	m.conns.set(l, r, b)
	m.destAdd(l, r)
}

// delConn removes the 4-tuple (l, r) from the table and the index.
func (m *Manager) delConn(l, r netip.AddrPort) {
	if m.conns.get(l, r) != nil {
		s := m.slot(Port(l.Port()))
		s.conns--
		m.connPorts.set(Port(l.Port()), s.conns > 0)
		m.slotDone(Port(l.Port()), true)
	}
	m.conns.del(l, r)
	m.destDel(l, r)
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
	local = local.Unmap()
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !remote.Addr().IsValid() || remote.Port() == 0 {
		return nil, syscall.EINVAL
	}
	if b != nil {
		return m.connectBound(b, local, remote, owner)
	}
	if !local.IsValid() || local.IsUnspecified() || local.Is4() != remote.Addr().Is4() {
		return nil, syscall.EINVAL
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proto != TCP {
		// Linux autobind: an exclusive port at random, then connected.
		p, ok := m.pickFree(m.rng.Uint32(), 1)
		if !ok {
			return nil, syscall.EADDRNOTAVAIL
		}
		return m.newConn(netip.AddrPortFrom(local, uint16(p)), remote, owner, true), nil
	}
	return m.connectAlg4(local, remote, owner)
}

// newConn makes the binding of a socket that Connect gave a port (UDP's autobind, explicit,
// or a TCP ephemeral port shared with other destinations): in the bind table and connected.
func (m *Manager) newConn(local, remote netip.AddrPort, owner any, explicit bool) *Binding {
	b := &Binding{m: m, local: local, remote: remote, owner: owner}
	m.addOwner(b, explicit)
	m.addConn(local, remote, b)
	b.connected = true
	m.n++
	return b
}

// takeTuple reports whether the 4-tuple (local, remote) is free, asking TupleReclaimable
// (with the lock dropped) about a current holder; a reclaimed holder is removed. m.mu is
// held on entry and on return.
func (m *Manager) takeTuple(local, remote netip.AddrPort) (bool, error) {
	for tries := 0; tries < 4; tries++ {
		old := m.conns.get(local, remote)
		if old == nil {
			return true, nil
		}
		reclaim := m.cfg.TupleReclaimable
		if reclaim == nil {
			return false, nil
		}
		owner := old.owner
		m.mu.Unlock()
		ok := reclaim(owner)
		m.mu.Lock()
		if !ok {
			return false, nil
		}
		if m.conns.get(local, remote) == old {
			m.releaseLocked(old)
		}
	}
	return false, nil
}

func (m *Manager) connectBound(b *Binding, local netip.Addr, remote netip.AddrPort, owner any) (*Binding, error) {
	if b.m != m {
		return nil, syscall.EINVAL
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.released {
		return nil, syscall.EINVAL
	}
	la := b.local.Addr()
	if la.IsUnspecified() {
		switch {
		case !local.IsValid() || local.IsUnspecified():
			return nil, syscall.EINVAL
		case la.Is4() && !local.Is4():
			return nil, syscall.EINVAL
		case la.Is6() && local.Is4() && b.opts.V6Only:
			return nil, syscall.EINVAL
		}
		la = local
	}
	if la.Is4() != remote.Addr().Is4() {
		return nil, syscall.EINVAL
	}
	lap := netip.AddrPortFrom(la, b.local.Port())
	if b.connected && b.local == lap && b.remote == remote {
		b.owner = owner
		m.conns.set(lap, remote, b)
		return b, nil
	}
	ok, err := m.takeTuple(lap, remote)
	if err != nil {
		return nil, err
	}
	if b.released {
		return nil, syscall.EINVAL
	}
	if !ok {
		return nil, syscall.EADDRINUSE
	}
	if b.connected { // reconnect (UDP): drop the old 4-tuple
		m.delConn(b.local, b.remote)
	}
	if b.inGroup {
		m.setGrouped(b, false)
	}
	b.local = lap
	b.remote = remote
	b.owner = owner
	m.addConn(lap, remote, b)
	b.connected = true
	return b, nil
}

// Register adds a connected 4-tuple on a port that is already held (a TCP connection
// accepted by a listener, or a TIME-WAIT entry): no port is allocated and the bind table is
// not consulted. EADDRINUSE if the 4-tuple exists.
//
// Registered 4-tuples make their port "used" for bind(0) but do not make later explicit
// binds of the port fail (as if every such socket had SO_REUSEADDR, which Go's and most
// servers' listeners set): restarting a server while its old connections sit in TIME-WAIT
// works.
func (m *Manager) Register(local, remote netip.AddrPort, owner any) (*Binding, error) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !local.Addr().IsValid() || !remote.Addr().IsValid() || local.Addr().Is4() != remote.Addr().Is4() {
		return nil, syscall.EINVAL
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns.get(local, remote) != nil {
		return nil, syscall.EADDRINUSE
	}
	b := &Binding{m: m, local: local, remote: remote, owner: owner, connected: true, counted: true}
	m.addConn(local, remote, b)
	e := m.entry(Port(local.Port()))
	e.conns++
	m.updatePort(Port(local.Port()), e)
	m.n++
	return b, nil
}
