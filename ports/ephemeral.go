package ports

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"syscall"

	"github.com/berthnet/berth/internal/siphash"
)

// Ephemeral port selection: bind(0) and UDP's autobind take a port no binding uses
// (pickFree), and TCP's Connect chooses by RFC 6056 §3.3.4 Algorithm 4 (connectAlg4), so
// that one port serves many destinations while every 4-tuple stays unique. Both walk the
// port bitmaps 64 ports per step (scan); Connect also skips, with the destination index
// (dest.go), the ports that already carry a 4-tuple toward the destination.

// perturbSize is the size of RFC 6056 Algorithm 4's table of perturbation counters. Linux
// uses 2^16 entries (since 5.18, against device tracking through shared counters); 2^12
// keeps a Manager at 16 KiB while still spreading destinations widely.
const perturbSize = 1 << 12

// pickFree returns a port of the local range that no binding uses and that is not reserved,
// starting at offset (mod the range size). parity 1 prefers ports whose distance from the
// range's low end is odd, 0 even; the other parity is tried next.
func (m *Manager) pickFree(offset uint32, parity uint32) (Port, bool) {
	r := m.cfg.LocalPortRange
	n := uint32(r.High-r.Low) + 1
	start := offset % n
	for pass := 0; pass < 2; pass++ {
		want := (uint32(r.Low) + parity) & 1 // absolute parity of the ports wanted
		if n == 1 {
			want = uint32(r.Low) & 1
		}
		if m.freeAny[want] > 0 { // else nothing of this parity is free: skip the sweep
			if p, ok := m.scan(r, Port(uint32(r.Low)+start), want, &m.busyAny, nil); ok {
				return p, true
			}
		}
		if n == 1 {
			break
		}
		parity ^= 1
	}
	return 0, false
}

// parityMask selects the bits of a bitmap word whose port has absolute parity want.
func parityMask(want uint32) uint64 {
	if want == 0 {
		return 0x5555555555555555
	}
	return 0xaaaaaaaaaaaaaaaa
}

// scan finds the first port of absolute parity want, from `from` up to r.High and then
// wrapping from r.Low, that is neither reserved nor marked in busy nor in extra (a
// destination's bitmap over r, destEntry.bits; nil for none). It looks at 64 ports at a
// time, so a nearly full range costs a few word operations per 64 ports, not a probe per
// port.
func (m *Manager) scan(r Range, from Port, want uint32, busy *bitmap, extra []uint64) (Port, bool) {
	if p, ok := m.scanSpan(r, from, r.High, want, busy, extra); ok {
		return p, true
	}
	if from > r.Low {
		return m.scanSpan(r, r.Low, from-1, want, busy, extra)
	}
	return 0, false
}

func (m *Manager) scanSpan(r Range, lo, hi Port, want uint32, busy *bitmap, extra []uint64) (Port, bool) {
	pm := parityMask(want)
	wlo, whi := int(lo>>6), int(hi>>6)
	head := ^uint64(0) << (lo & 63)    // ports >= lo in the first word
	tail := ^uint64(0) >> (63 - hi&63) // ports <= hi in the last word
	bs := busy[wlo : whi+1]
	rs := m.reserved[wlo : whi+1]
	var ex []uint64
	if extra != nil {
		base := int(r.Low >> 6)
		ex = extra[wlo-base : whi-base+1]
	}
	// The loop is the whole cost in a nearly full range: keep it to a few word operations
	// and only look at the edges once a word has a candidate.
	for i, bw := range bs {
		free := ^(bw | rs[i]) & pm
		if ex != nil {
			free &^= ex[i]
		}
		if free == 0 {
			continue
		}
		if i == 0 {
			free &= head
		}
		if i == len(bs)-1 {
			free &= tail
		}
		if free != 0 {
			return Port((wlo+i)<<6 + bits.TrailingZeros64(free)), true
		}
	}
	return 0, false
}

// connectAlg4 is RFC 6056 §3.3.4 (Algorithm 4, "double-hash port selection") as Linux's
// __inet_hash_connect implements it:
//
//	offset = F(local, remote, rport, secret) + table[G(local, remote, rport, secret)]
//
// then walk the range from offset, trying ports of one parity first (bind(0) prefers the
// other), skipping reserved ports and ports held by explicit binds; a port that only
// connected sockets use is fine when the 4-tuple is unique. Afterwards the counter
// table[G] advances by the distance walked plus 2, so the next connection to the same
// destination gets a new port, while destinations with other G values are unaffected
// (no global counter leaking connection rates).
//
// The walk skips the ports that already carry a 4-tuple toward this destination with the
// destination index (dest.go), 64 ports per step once the destination has many
// connections, so a nearly full range costs word operations rather than a 4-tuple lookup
// per port. A free port is preferred to taking over a 4-tuple through TupleReclaimable
// (TCP's TIME-WAIT reuse): a fresh 4-tuple cannot meet old duplicates, and Linux by default
// reuses TIME-WAIT 4-tuples only on loopback (tcp_tw_reuse=2). Only when no port is free
// does Connect walk again, asking about each holder in walk order.
func (m *Manager) connectAlg4(local netip.Addr, remote netip.AddrPort, owner any) (*Binding, error) {
	r := m.cfg.LocalPortRange
	n := uint32(r.High-r.Low) + 1
	h := m.hash3(local, remote)
	idx := uint32(h) & (perturbSize - 1) // G
	offset := (uint32(h>>32) + m.perturb[idx]) % n
	if n > 1 {
		offset &^= 1
	}
	dst := m.dests.get(local, remote)
	passes := uint32(2)
	if n == 1 {
		passes = 1
	}
	// Pass 1 walks the other parity from the next port. The parity is absolute (the
	// bitmaps' masks): with an odd-sized range, offset n-1 wraps to 0, which has the same
	// parity as n-1, so deriving it from the wrapped start would walk one parity twice and
	// report EADDRNOTAVAIL with the other half of the range free.
	want0 := (uint32(r.Low) + offset) & 1
	for pass := uint32(0); pass < passes; pass++ {
		if p, walked, ok := m.walkFree(r, n, passStart(offset, pass, n), want0^pass, &dst); ok {
			return m.connectOn(local, remote, owner, p, walked, idx), nil
		}
	}
	if m.cfg.TupleReclaimable == nil || dst.n == 0 {
		return nil, syscall.EADDRNOTAVAIL // no port free, and no 4-tuple to take over
	}
	for pass := uint32(0); pass < passes; pass++ {
		p, walked, ok, err := m.walkReclaim(local, remote, r, n, passStart(offset, pass, n), want0^pass)
		if err != nil {
			return nil, err
		}
		if ok {
			return m.connectOn(local, remote, owner, p, walked, idx), nil
		}
	}
	return nil, syscall.EADDRNOTAVAIL
}

// passStart is where pass (0 or 1) of Connect's walk starts: offset, then the next port,
// as a distance from the range's low end (n ports).
func passStart(offset, pass, n uint32) uint32 {
	o := offset + pass
	if o >= n {
		o -= n
	}
	return o
}

// walkDistance is how far p lies from the walk's start o in a range r of n ports.
func walkDistance(r Range, n, o uint32, p Port) uint32 {
	return (uint32(p) + n - uint32(r.Low) - o) % n
}

// walkFree returns the first port of absolute parity want, walking from distance o of the
// range, that no explicit bind holds, is not reserved and carries no 4-tuple toward the
// destination dst; walked is its distance from o.
func (m *Manager) walkFree(r Range, n, o, want uint32, dst *destEntry) (p Port, walked uint32, ok bool) {
	if dst.np[want] == m.rangeParity[want] {
		// Every port of this parity carries a 4-tuple toward the destination (Connect fills
		// one parity first, so past half the range this is the usual case): skip the sweep.
		return 0, 0, false
	}
	cur := Port(uint32(r.Low) + o)
	for {
		p, ok := m.scan(r, cur, want, &m.busyBind, dst.bits)
		if !ok {
			return 0, 0, false
		}
		d := walkDistance(r, n, o, p)
		if d < walked {
			return 0, 0, false // wrapped round to ports already tried
		}
		if dst.bits != nil || !dst.holds(p, r) {
			return p, d, true
		}
		// One of the few (at most destSmall) ports in the destination's list.
		walked = d + 1
		cur = nextPort(r, p)
	}
}

// walkReclaim is Connect's last resort, when no port of parity want is free toward the
// destination: it walks the same ports as walkFree from distance o, asking takeTuple
// (TupleReclaimable) about the holder of each 4-tuple (local:p, remote), and returns the
// first port whose 4-tuple it could take and walked, its distance from o. m.mu is held on
// entry and on return but dropped meanwhile.
func (m *Manager) walkReclaim(local netip.Addr, remote netip.AddrPort, r Range, n, o, want uint32) (Port, uint32, bool, error) {
	cur := Port(uint32(r.Low) + o)
	walked := uint32(0)
	for walked < n {
		p, ok := m.scan(r, cur, want, &m.busyBind, nil)
		if !ok {
			break
		}
		d := walkDistance(r, n, o, p)
		if d < walked {
			break // wrapped round to ports already tried
		}
		walked = d
		got, err := m.takeTuple(netip.AddrPortFrom(local, uint16(p)), remote)
		if err != nil {
			return 0, 0, false, err
		}
		// The lock was dropped while asking TupleReclaimable: someone may have bound the
		// port meanwhile.
		if got && !m.busyBind.get(p) && !m.reserved.get(p) {
			return p, walked, true, nil
		}
		walked++
		cur = nextPort(r, p)
	}
	return 0, 0, false, nil
}

// connectOn registers the new 4-tuple (local:p, remote), found walked ports from the start
// of the walk, and advances the perturbation counter idx.
func (m *Manager) connectOn(local netip.Addr, remote netip.AddrPort, owner any, p Port, walked, idx uint32) *Binding {
	// Linux adds 2 plus the walk; once in 16 it adds 2 more so that the counters do not
	// advance in lockstep with connection counts.
	inc := walked + 2
	if walked == 0 && m.rng.Uint32N(16) == 0 {
		inc += 2
	}
	m.perturb[idx] += inc
	return m.newConn(netip.AddrPortFrom(local, uint16(p)), remote, owner, false)
}

func nextPort(r Range, p Port) Port {
	if p >= r.High {
		return r.Low
	}
	return p + 1
}

// hash3 is F and G of RFC 6056 §3.3.4: SipHash-2-4, keyed with the secret, of (local
// address, remote address, remote port). The low bits index the perturbation table (G) and
// the high 32 bits are the offset (F), as Linux derives both from one siphash.
func (m *Manager) hash3(local netip.Addr, remote netip.AddrPort) uint64 {
	var buf [34]byte
	la := local.As16()
	ra := remote.Addr().As16()
	copy(buf[:16], la[:])
	copy(buf[16:32], ra[:])
	binary.BigEndian.PutUint16(buf[32:], uint16(remote.Port()))
	return siphash.Sum64(m.k0, m.k1, buf[:])
}
