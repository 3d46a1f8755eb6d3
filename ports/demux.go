package ports

import (
	"encoding/binary"
	"net/netip"
)

// The demultiplexing index: Lookup, the per-packet path, answers which owner an inbound
// packet belongs to. It probes the 4-tuple map only on ports that carry 4-tuples, then reads
// the port's slot (demuxSlot, one cache line), kept current by the bind table (rebuildDemux)
// and the 4-tuple table (addConn, delConn); it falls back to the bind-table map only for
// SO_REUSEPORT groups, crowded ports and IPv6. Lookup takes the read lock and must not
// allocate.

// demuxInline is how many IPv4 receiving groups a demuxSlot holds itself: two covers one
// socket per port, a socket plus a wildcard one, or a port bound on two addresses.
const demuxInline = 2

// demuxSlot is what Lookup reads about the unconnected bindings of one local port, in one
// 64-byte cache line: when the port has at most demuxInline IPv4 (address, port) groups
// with one receiver each, their addresses and owners, so an IPv4 lookup of an unconnected
// socket reads this line and nothing else (Manager.connPorts, in the cache, says first
// whether the port has 4-tuples to probe). Otherwise slow sends IPv4 lookups to the bind-table map,
// which also serves SO_REUSEPORT groups (pick) and every IPv6 lookup (v6 says whether the
// port has IPv6 groups at all). rebuildDemux rewrites it whenever the port's groups, their
// receivers or an owner change.
type demuxSlot struct {
	conns uint32 // 4-tuples in m.conns with this local port (connPorts: conns > 0)
	bound bool   // the port has unconnected bound bindings (groups)
	slow  bool
	v6    bool
	n     uint8
	v4    [demuxInline]demuxEntry
	_     [8]byte // pad to 64 bytes: in a demuxBlock no slot straddles two cache lines
}

func (s *demuxSlot) used() bool { return s.conns > 0 || s.bound }

// demuxBlock holds the slots of 64 consecutive ports: 4 KiB, page-aligned by the
// allocator's size class. Manager.demux indexes blocks by port>>6, so finding a port's slot
// is a load from the 8 KiB top level (hot in the cache) and then the slot's own line: one
// cache miss per lookup whatever the number of bindings, where the maps cost several
// (directory, control word, slot, then the group, its receivers and the Binding). Blocks
// exist only for ranges of ports in use, so an idle Manager costs the 8 KiB top level.
type demuxBlock [64]demuxSlot

// demuxEntry is one IPv4 receiving group of a port: its address and its one receiver.
type demuxEntry struct {
	a     [4]byte
	kind  uint8 // demuxAddr, demuxAny (0.0.0.0) or demuxDual ("::" without V6Only)
	owner any
}

// Lookup's order of preference among a port's IPv4 groups: the packet's own address, then
// 0.0.0.0, then a dual-stack "::".
const (
	demuxAddr uint8 = iota
	demuxAny
	demuxDual
)

// slot returns port's demuxSlot, allocating its block if needed. The caller changes it and
// then calls slotDone with what used() reported before.
func (m *Manager) slot(port Port) *demuxSlot {
	blk := m.demux[port>>6]
	if blk == nil {
		blk = takeFree(&m.freeBlocks)
		m.demux[port>>6] = blk
	}
	return &blk[port&63]
}

// freeBlocksMax bounds Manager.freeBlocks (4 KiB each).
const freeBlocksMax = 4

// slotDone keeps the count of used slots per block after port's slot changed, and drops a
// block that no port uses any more.
func (m *Manager) slotDone(port Port, wasUsed bool) {
	i := port >> 6
	blk := m.demux[i]
	switch now := blk[port&63].used(); {
	case now && !wasUsed:
		m.demuxUsed[i]++
	case !now && wasUsed:
		m.demuxUsed[i]--
	}
	if m.demuxUsed[i] == 0 {
		m.demux[i] = nil
		if len(m.freeBlocks) < freeBlocksMax {
			*blk = demuxBlock{}
			m.freeBlocks = append(m.freeBlocks, blk)
		}
	}
}

// rebuildDemux recomputes port's demuxSlot from the bind table: the distinct groups of the
// port's grouped bindings and their receivers. It costs O(bindings on the port), paid by
// bind, release, listen and SetOwner so that Lookup pays nothing.
func (m *Manager) rebuildDemux(port Port) {
	s := m.slot(port)
	was := s.used()
	*s = demuxSlot{conns: s.conns}
	if e := m.ports[port]; e != nil {
		for _, o := range e.owners {
			if !o.inGroup {
				continue
			}
			s.bound = true
			keys, nk := groupKeys(o)
			a := o.local.Addr()
			switch {
			case a.Is6():
				s.v6 = true
			case a.IsUnspecified():
				m.slotAdd(s, keys[0], [4]byte{}, demuxAny)
			default:
				m.slotAdd(s, keys[0], a.As4(), demuxAddr)
			}
			if nk == 2 { // a dual-stack "::": its IPv4 view
				m.slotAdd(s, keys[1], [4]byte{}, demuxDual)
			}
		}
	}
	m.slotDone(port, was)
}

// slotAdd records the IPv4 group k (address a, of the given kind) in s, once.
func (m *Manager) slotAdd(s *demuxSlot, k epKey, a [4]byte, kind uint8) {
	for i := range s.n {
		if e := &s.v4[i]; e.a == a && e.kind == kind {
			return
		}
	}
	g := m.bound[k]
	if !g.receives() {
		return // no receiver (a TCP socket that does not listen): Lookup skips it too
	}
	if len(g.recv) > 1 || int(s.n) == len(s.v4) {
		s.slow = true // a SO_REUSEPORT group (pick hashes the 4-tuple) or too many groups
		return
	}
	s.v4[s.n] = demuxEntry{a: a, kind: kind, owner: g.recv[0].owner}
	s.n++
}

// Lookup demultiplexes an inbound packet addressed to local from remote and returns the
// owner it belongs to: first the exact 4-tuple, then a socket bound to (local address,
// port), then one bound to the wildcard address on that port (for IPv4 packets, a "::"
// socket without V6Only counts). A SO_REUSEPORT group answers with one member chosen by a
// hash of the 4-tuple. Bound sockets that are connected match only their remote. It costs
// O(1) whatever the number of bindings and does not allocate.
//
// The 4-tuple map is probed only when some 4-tuple uses the port (connPorts), and an IPv4
// packet for an unconnected socket is answered from the port's demuxSlot (one cache line,
// found by direct indexing), so with many bindings that case costs one cache miss rather
// than the several of the hash maps.
//
// For TCP only listeners (BindOptions.Listening / SetListening / Listen) are found through
// the bind table; a bound socket that does not listen gets no packets. Addresses must be
// unmapped (IPv4 as 4-byte addresses).
func (m *Manager) Lookup(local, remote netip.AddrPort) (owner any, ok bool) {
	port := Port(local.Port())
	l4 := local.Addr().Is4()
	if l4 != remote.Addr().Is4() {
		return nil, false // mixed families: no socket can match
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	blk := m.demux[port>>6]
	if blk == nil {
		return nil, false // no port of the block is bound or connected
	}
	if m.connPorts.get(port) { // else no 4-tuple uses the port: skip the 4-tuple probe
		// connTable.find written out: with As4's panic paths it is over the inliner's
		// budget, and a call here is a measurable part of a 40 ns lookup.
		if l4 {
			if e, ok := m.conns.v4[tuple4{local.Addr().As4(), remote.Addr().As4(), local.Port(), remote.Port()}]; ok {
				return e.owner, true
			}
		} else if e, ok := m.conns.v6[mkTuple(local, remote)]; ok {
			return e.owner, true
		}
	}
	s := &blk[port&63]
	if !s.bound {
		return nil, false // nothing bound on the port: skip the bind-table probes
	}
	if l4 && !s.slow {
		// The common case: the port's IPv4 receivers are all in s.
		a := local.Addr().As4()
		var wild, dual *demuxEntry
		for i := range s.n {
			e := &s.v4[i]
			switch {
			case e.kind == demuxAddr:
				if e.a == a {
					return e.owner, true
				}
			case e.kind == demuxAny:
				wild = e
			default:
				dual = e
			}
		}
		if wild != nil {
			return wild.owner, true
		}
		if dual != nil {
			return dual.owner, true
		}
		return nil, false
	}
	if !l4 && !s.v6 {
		return nil, false // no IPv6 group on the port
	}
	return m.lookupBound(local, remote)
}

// lookupTables is Lookup without the per-port index (m.demux): the 4-tuple map, then the
// bind-table map. Tests check Lookup against it. m.mu is held.
func (m *Manager) lookupTables(local, remote netip.AddrPort) (owner any, ok bool) {
	if e, ok := m.conns.find(local, remote); ok {
		return e.owner, true
	}
	return m.lookupBound(local, remote)
}

// lookupBound finds the unconnected receiver of local in the bind-table map: (address,
// port), then the wildcard, then (IPv4) a dual-stack "::". m.mu is held.
func (m *Manager) lookupBound(local, remote netip.AddrPort) (owner any, ok bool) {
	port := Port(local.Port())
	// In order of preference: (address, port), the family's wildcard ("::" here), and for
	// IPv4 a dual-stack "::".
	keys := [3]epKey{{a: local.Addr().As16(), port: port}, {port: port}, {port: port, kind: kindDual}}
	n := 2
	if local.Addr().Is4() {
		keys[1].a = [16]byte{10: 0xff, 11: 0xff} // 0.0.0.0
		n = 3
	}
	for _, k := range keys[:n] {
		if g := m.bound[k]; g.receives() {
			return m.pick(g, local, remote), true
		}
	}
	return nil, false
}

func (m *Manager) pick(g *group, local, remote netip.AddrPort) any {
	if len(g.recv) == 1 {
		return g.recv[0].owner
	}
	la, ra := local.Addr().As16(), remote.Addr().As16()
	h := m.reuseSeed ^ uint64(local.Port())<<16 ^ uint64(remote.Port())
	for i := 0; i < 16; i += 8 {
		h = mix(h ^ binary.LittleEndian.Uint64(la[i:]))
		h = mix(h ^ binary.LittleEndian.Uint64(ra[i:]))
	}
	return g.recv[h%uint64(len(g.recv))].owner
}

// mix is a 64-bit finalizer (splitmix64): cheap and well spread, for the SO_REUSEPORT choice.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// LookupAll calls f for every owner bound to local's port that would accept a datagram
// from remote (UDP multicast/broadcast delivery). Unused for unicast. f is called after the
// Manager's lock is released, so it may call back into the Manager.
func (m *Manager) LookupAll(local, remote netip.AddrPort, f func(owner any)) {
	la := local.Addr().Unmap()
	ra := netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	var buf [8]any
	owners := buf[:0]
	m.mu.RLock()
	if e := m.ports[Port(local.Port())]; e != nil {
		for _, o := range e.owners {
			if o.connected && o.remote != ra {
				continue // connected sockets hear only their peer
			}
			oa := o.local.Addr()
			if oa == la || oa.IsUnspecified() && overlap(oa, o.opts.V6Only, la, false) {
				owners = append(owners, o.owner)
			}
		}
	}
	m.mu.RUnlock()
	for _, o := range owners {
		f(o)
	}
}
