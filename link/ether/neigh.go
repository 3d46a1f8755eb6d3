package ether

import (
	"time"

	"net/netip"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/wire"
)

// nudState is a neighbour cache entry's state: RFC 4861 §7.3.2's, which Linux uses for ARP
// as well (NUD_INCOMPLETE, ...). Every timed transition is the entry's timer, as in Linux,
// so that a send reads no clock.
type nudState uint8

const (
	nudIncomplete nudState = iota // solicited, no answer yet; packets wait in queue
	nudReachable                  // confirmed within the reachable time (its timer makes it STALE)
	nudStale                      // not confirmed lately; the next send starts DELAY
	nudDelay                      // used while STALE: wait for upper-layer confirmation
	nudProbe                      // unicast solicitations until confirmed or failed
)

func (s nudState) String() string {
	return [...]string{"INCOMPLETE", "REACHABLE", "STALE", "DELAY", "PROBE"}[s]
}

// neighbor is a neighbour cache entry, guarded by Endpoint.mu.
type neighbor struct {
	addr      netip.Addr
	mac       wire.MAC
	state     nudState
	confirmed time.Time // last reachability confirmation (REACHABLE until +reachable)
	probes    int       // solicitations sent in INCOMPLETE or PROBE
	timer     clock.Timer
	gen       uint64   // counts arm calls: a callback of a replaced timer does nothing
	queue     []queued // packets waiting in INCOMPLETE, oldest first
	qbytes    int
}

// queued is a packet waiting for its next hop's address, with room in front for the
// Ethernet header. gso > 0 marks a TCP super-segment for WriteGSO with that MSS.
type queued struct {
	frame []byte
	gso   int
}

func (n *neighbor) stop() {
	if n.timer != nil {
		n.timer.Stop()
		n.timer = nil
	}
}

// arm (re)starts n's timer. The callback re-checks that n is still the cache's entry and
// the timer still its current one (Stop cannot recall a callback already started).
func (e *Endpoint) arm(n *neighbor, d time.Duration) {
	n.stop()
	n.gen++
	gen := n.gen
	n.timer = e.clk.AfterFunc(d, func() { e.neighTimer(n, gen) })
}

// Neighbor is a neighbour cache entry as Neighbors reports it (like `ip neigh`).
type Neighbor struct {
	Addr  netip.Addr // the neighbour's IPv4 or IPv6 address
	MAC   wire.MAC   // zero while INCOMPLETE
	State string     // INCOMPLETE, REACHABLE, STALE, DELAY or PROBE
}

// Neighbors returns the neighbour cache.
func (e *Endpoint) Neighbors() []Neighbor {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Neighbor, 0, len(e.neigh))
	for _, n := range e.neigh {
		out = append(out, Neighbor{n.addr, n.mac, n.state.String()})
	}
	return out
}

// lookupLocked finds the link address for next hop nh, moving the entry through the
// state machine as a send does (RFC 4861 §7.3.3: a STALE entry in use goes to DELAY). It
// returns ok with the MAC, or the entry the packet must wait on (nil: it is dropped,
// counted). sol reports that a first solicitation must go out (after unlocking).
func (e *Endpoint) lookupLocked(nh netip.Addr) (mac wire.MAC, ok bool, n *neighbor, sol bool) {
	n = e.neigh[nh]
	if n == nil {
		if e.nInc >= e.cfg.MaxIncomplete || !e.makeRoomLocked() {
			e.ctr.NeighTableFulls.Add(1)
			return mac, false, nil, false
		}
		n = &neighbor{addr: nh, state: nudIncomplete, probes: 1}
		e.neigh[nh] = n
		e.nInc++
		e.arm(n, e.cfg.RetransTime)
		return mac, false, n, true
	}
	switch n.state {
	case nudIncomplete:
		return mac, false, n, false
	case nudStale:
		n.state = nudDelay
		e.arm(n, e.cfg.DelayFirstProbe)
	}
	return n.mac, true, nil, false
}

// makeRoomLocked makes sure one more entry fits in the cache, evicting a STALE entry (one
// nothing sends to: Linux's garbage collector takes those first) if it is full.
func (e *Endpoint) makeRoomLocked() bool {
	if len(e.neigh) < e.cfg.MaxNeighbors {
		return true
	}
	var victim *neighbor
	for _, n := range e.neigh {
		if n.state == nudStale && (victim == nil || n.confirmed.Before(victim.confirmed)) {
			victim = n
		}
	}
	if victim == nil {
		return false
	}
	e.removeLocked(victim)
	return true
}

func (e *Endpoint) removeLocked(n *neighbor) {
	n.stop()
	if n.state == nudIncomplete {
		e.nInc--
	}
	e.ctr.NeighUnresolvedDiscards.Add(uint64(len(n.queue)))
	n.queue, n.qbytes = nil, 0
	delete(e.neigh, n.addr)
}

// enqueueLocked keeps a copy of pkt+p1+p2 (an IP packet) on n until it resolves. Over
// QueueBytes the oldest packets are dropped first, as Linux's __neigh_event_send does.
func (e *Endpoint) enqueueLocked(n *neighbor, pkt, p1, p2 []byte, gso int) {
	size := len(pkt) + len(p1) + len(p2)
	if size > e.cfg.QueueBytes {
		e.ctr.NeighUnresolvedDiscards.Add(1)
		return
	}
	for n.qbytes+size > e.cfg.QueueBytes && len(n.queue) > 0 {
		n.qbytes -= len(n.queue[0].frame) - wire.EthernetHeaderLen
		n.queue[0] = queued{}
		n.queue = n.queue[1:]
		e.ctr.NeighUnresolvedDiscards.Add(1)
	}
	f := make([]byte, wire.EthernetHeaderLen+size)
	k := wire.EthernetHeaderLen + copy(f[wire.EthernetHeaderLen:], pkt)
	k += copy(f[k:], p1)
	copy(f[k:], p2)
	n.queue = append(n.queue, queued{frame: f, gso: gso})
	n.qbytes += size
}

// how an address was learnt, which decides what it may do to the cache (RFC 4861 §7.2.5
// and Appendix C; RFC 826's merge).
type learnKind uint8

const (
	learnConfirmed  learnKind = iota // a solicited answer: ARP reply to us, NA with S set
	learnSolicit                     // the sender of a request/NS for us: create or update, STALE
	learnUpdate                      // anything else (gratuitous ARP, unsolicited NA with O): update an existing entry only
	learnNoOverride                  // NA without O, not a confirmation: never replaces a known MAC
)

// learnLocked records that ip is at mac and returns the frames that were waiting for it,
// headers filled in, for the caller to send after unlocking.
func (e *Endpoint) learnLocked(ip netip.Addr, mac wire.MAC, how learnKind) []queued {
	n := e.neigh[ip]
	now := e.clk.Now()
	if n == nil {
		if how != learnSolicit || !e.onLink(ip) || !e.makeRoomLocked() {
			if how == learnSolicit && e.onLink(ip) {
				e.ctr.NeighTableFulls.Add(1)
			}
			return nil
		}
		n = &neighbor{addr: ip, mac: mac, state: nudStale, confirmed: now.Add(-e.reachable)}
		e.neigh[ip] = n
		return nil
	}
	wasIncomplete := n.state == nudIncomplete
	switch how {
	case learnConfirmed:
		// RFC 4861 §7.3.3: REACHABLE for the reachable time, then STALE (the timer).
		n.mac, n.state, n.confirmed, n.probes = mac, nudReachable, now, 0
		e.arm(n, e.reachable)
	case learnNoOverride:
		// RFC 4861 §7.2.5: without the override flag a different address does not
		// replace a known one (a REACHABLE entry goes STALE, nothing else changes); the
		// same address changes nothing either (a confirmation needs the solicited flag,
		// which the caller maps to learnConfirmed).
		switch {
		case wasIncomplete:
			n.mac, n.state, n.probes = mac, nudStale, 0
			n.stop()
		case mac != n.mac && n.state == nudReachable:
			n.state = nudStale
			n.stop()
		}
	default:
		if wasIncomplete || mac != n.mac {
			n.mac, n.state, n.probes = mac, nudStale, 0
			n.stop()
		}
	}
	if !wasIncomplete || n.state == nudIncomplete {
		return nil
	}
	e.nInc--
	q := n.queue
	n.queue, n.qbytes = nil, 0
	for _, p := range q {
		(&wire.EthernetFields{Dst: n.mac, Src: e.mac, EtherType: etherTypeOf(p.frame[wire.EthernetHeaderLen:])}).Encode(p.frame)
	}
	return q
}

// neighTimer is an entry's timer: retransmit a solicitation, move DELAY to PROBE, or give
// up (RFC 4861 §7.3.3, Linux's neigh_timer_handler).
func (e *Endpoint) neighTimer(n *neighbor, gen uint64) {
	e.mu.Lock()
	if e.closed.Load() || e.neigh[n.addr] != n || n.gen != gen || n.timer == nil {
		e.mu.Unlock()
		return
	}
	var dst wire.MAC // zero: multicast solicitation
	limit := e.cfg.MaxUnicast
	switch n.state {
	case nudIncomplete:
		limit = e.cfg.MaxMulticast
	case nudReachable:
		n.state, n.timer = nudStale, nil
		e.mu.Unlock()
		return
	case nudDelay:
		// Not confirmed meanwhile (a confirmation would have made it REACHABLE).
		n.state, n.probes = nudProbe, 0
		dst = n.mac
	case nudProbe:
		dst = n.mac
	default:
		n.timer = nil
		e.mu.Unlock()
		return
	}
	if n.probes >= limit {
		// MAX_MULTICAST_SOLICIT or MAX_UNICAST_SOLICIT unanswered: the neighbour is
		// unreachable; what waits for it is dropped.
		e.ctr.NeighResFailed.Add(1)
		e.removeLocked(n)
		e.mu.Unlock()
		return
	}
	n.probes++
	e.arm(n, e.cfg.RetransTime)
	addr := n.addr
	e.mu.Unlock()
	e.solicit(addr, dst)
}

// etherTypeOf is the EtherType for an IP packet by its version nibble.
func etherTypeOf(pkt []byte) uint16 {
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		return wire.EtherTypeIPv6
	}
	return wire.EtherTypeIPv4
}
