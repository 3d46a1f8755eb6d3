package ports

import (
	"math/bits"
	"net/netip"
)

// The destination index answers, for one destination (local address, remote address,
// remote port), which ports of the local range already carry a 4-tuple toward it. Connect
// needs exactly that: with many connections to one server, probing the 4-tuple table port
// by port costs one map lookup per port in use (8,192 of them before the first port of the
// other parity), while the index lets the walk skip 64 ports per step, as the bind bitmaps
// do.
//
// Only 4-tuples whose local port lies in LocalPortRange are indexed (no other port is ever
// chosen), so a server's accepted connections (on its listening port, outside the range)
// cost nothing; SetConfig rebuilds the index. Only TCP Managers keep it: UDP's Connect takes
// an exclusive port and never shares one among destinations.

// destSmall is how many ports toward one destination are kept in a plain list; the
// (destSmall+1)th gets the destination a bitmap over the range, which it keeps until it is
// down to destSmall/2 ports (hysteresis, so a destination hovering at the threshold does
// not allocate on every connect).
const destSmall = 8

// destEntry is the index entry of one destination.
type destEntry struct {
	n     uint32
	np    [2]uint32       // of them, ports by absolute parity
	ports [destSmall]Port // ports[:n], while bits is nil
	// bits has one bit per port of the range: word i covers ports (base+i)*64 ... +63,
	// base = LocalPortRange.Low/64.
	bits []uint64
}

// holds reports whether p carries a 4-tuple toward the destination.
func (e *destEntry) holds(p Port, r Range) bool {
	if e.bits != nil {
		return e.bits[int(p>>6)-int(r.Low>>6)]&(1<<(p&63)) != 0
	}
	for _, q := range e.ports[:e.n] {
		if q == p {
			return true
		}
	}
	return false
}

type dest4 struct {
	la, ra [4]byte
	rp     uint16
}

type dest6 struct {
	la, ra [16]byte
	rp     uint16
}

// destIndex maps destinations of one address family to their entries. Entries are values,
// so a destination costs no allocation of its own until it needs a bitmap.
type destIndex[K comparable] map[K]destEntry

func (x destIndex[K]) add(k K, p Port, r Range) {
	e := x[k]
	switch {
	case e.bits != nil:
		e.bits[int(p>>6)-int(r.Low>>6)] |= 1 << (p & 63)
	case e.n < destSmall:
		e.ports[e.n] = p
	default:
		e.bits = make([]uint64, int(r.High>>6)-int(r.Low>>6)+1)
		for _, q := range append(e.ports[:], p) {
			e.bits[int(q>>6)-int(r.Low>>6)] |= 1 << (q & 63)
		}
		e.ports = [destSmall]Port{}
	}
	e.n++
	e.np[p&1]++
	x[k] = e
}

func (x destIndex[K]) del(k K, p Port, r Range) {
	e, ok := x[k]
	if !ok {
		return
	}
	if e.n == 1 {
		delete(x, k)
		return
	}
	e.n--
	e.np[p&1]--
	if e.bits == nil {
		for i, q := range e.ports[:e.n+1] {
			if q == p {
				e.ports[i] = e.ports[e.n]
				e.ports[e.n] = 0
				break
			}
		}
		x[k] = e
		return
	}
	base := int(r.Low >> 6)
	e.bits[int(p>>6)-base] &^= 1 << (p & 63)
	if e.n <= destSmall/2 {
		i := 0
		for w, word := range e.bits {
			for ; word != 0; word &= word - 1 {
				e.ports[i] = Port((base+w)<<6 + bits.TrailingZeros64(word))
				i++
			}
		}
		e.bits = nil
	}
	x[k] = e
}

// destTable is the index for both families, like connTable.
type destTable struct {
	v4 destIndex[dest4]
	v6 destIndex[dest6]
}

func (t *destTable) reset() {
	t.v4 = make(destIndex[dest4])
	t.v6 = make(destIndex[dest6])
}

// get returns the entry of the destination (local, remote); the zero entry holds nothing.
func (t *destTable) get(local netip.Addr, remote netip.AddrPort) destEntry {
	if local.Is4() {
		return t.v4[dest4{local.As4(), remote.Addr().As4(), remote.Port()}]
	}
	return t.v6[dest6{local.As16(), remote.Addr().As16(), remote.Port()}]
}

// indexed reports whether the 4-tuple (l, r) belongs in the destination index.
func (m *Manager) indexed(l netip.AddrPort) bool {
	return m.proto == TCP && m.cfg.LocalPortRange.Contains(Port(l.Port()))
}

// destAdd and destDel are twins on purpose: one function with an add flag would need the
// same branches inside it, or a generic dispatch method that does not inline and would cost
// Connect and Release a call more.
func (m *Manager) destAdd(l, r netip.AddrPort) {
	if !m.indexed(l) {
		return
	}
	if l.Addr().Is4() {
		m.dests.v4.add(dest4{l.Addr().As4(), r.Addr().As4(), r.Port()}, Port(l.Port()), m.cfg.LocalPortRange)
		return
	}
	m.dests.v6.add(dest6{l.Addr().As16(), r.Addr().As16(), r.Port()}, Port(l.Port()), m.cfg.LocalPortRange)
}

func (m *Manager) destDel(l, r netip.AddrPort) {
	if !m.indexed(l) {
		return
	}
	if l.Addr().Is4() {
		m.dests.v4.del(dest4{l.Addr().As4(), r.Addr().As4(), r.Port()}, Port(l.Port()), m.cfg.LocalPortRange)
		return
	}
	m.dests.v6.del(dest6{l.Addr().As16(), r.Addr().As16(), r.Port()}, Port(l.Port()), m.cfg.LocalPortRange)
}

// rebuildDests indexes every 4-tuple again (the range changed).
func (m *Manager) rebuildDests() {
	m.dests.reset()
	if m.proto != TCP {
		return
	}
	for k := range m.conns.v4 {
		m.destAdd(netip.AddrPortFrom(netip.AddrFrom4(k.la), k.lp), netip.AddrPortFrom(netip.AddrFrom4(k.ra), k.rp))
	}
	for k := range m.conns.v6 {
		m.destAdd(netip.AddrPortFrom(netip.AddrFrom16(k.la), uint16(k.lp)), netip.AddrPortFrom(netip.AddrFrom16(k.ra), uint16(k.rp)))
	}
}
