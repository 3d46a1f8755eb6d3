package forward

import (
	"net/netip"
	"time"
)

// Host connects are scheduled like a listener's SYN queue: a SYN from the namespace whose
// connect cannot start now (MaxConnects under way, or MaxConnectsPerDest to its
// destination) waits in its destination's queue, and starts when a connect to the same
// destination ends, or any connect when the destination had none running. One
// unresponsive destination therefore holds at most MaxConnectsPerDest connects and
// MaxConnectBacklog waiting SYNs; every other destination connects at once. A SYN that
// waited DialTimeout is dropped (its connect would have timed out by then anyway); the
// namespace's retransmissions of a waiting SYN are dropped as duplicates.

// pendingSYN is a SYN waiting for its host connect, or being connected.
type pendingSYN struct {
	k        flowKey
	src, dst netip.Addr
	syn      []byte
	target   netip.AddrPort
	at       time.Time // when it was queued
}

// destQueue is one host destination's connects.
type destQueue struct {
	target  netip.AddrPort
	running int
	waiting []*pendingSYN
	starved bool // in f.starved: it has waiting SYNs and no connect running, for MaxConnects
}

// queueSYNLocked takes a new SYN (within MaxTCPFlows) for its destination's queue and
// starts what may start; false for a duplicate, and (counted) when the destination's
// backlog is full.
func (f *Forwarder) queueSYNLocked(p *pendingSYN) bool {
	if _, dup := f.pending[p.k]; dup {
		return false // a retransmission that raced the first copy
	}
	q := f.dests[p.target]
	if q == nil {
		q = &destQueue{target: p.target}
		f.dests[p.target] = q
	}
	if len(q.waiting) >= f.cfg.MaxConnectBacklog {
		f.c.backlogDrops.Add(1)
		f.dropQueueLocked(q)
		return false
	}
	f.tcpFlows++
	f.pending[p.k] = struct{}{}
	q.waiting = append(q.waiting, p)
	f.waiting++
	f.startLocked(q)
	if len(q.waiting) > 0 {
		f.c.connQueued.Add(1)
	}
	return true
}

// startLocked starts q's waiting connects as far as the limits allow.
func (f *Forwarder) startLocked(q *destQueue) {
	for len(q.waiting) > 0 && q.running < f.cfg.MaxConnectsPerDest {
		if f.connects >= f.cfg.MaxConnects {
			if !q.starved && q.running == 0 {
				q.starved = true
				f.starved = append(f.starved, q)
			}
			return
		}
		p := q.waiting[0]
		q.waiting[0] = nil
		q.waiting = q.waiting[1:]
		f.waiting--
		q.running++
		f.connects++
		f.wg.Add(1)
		go f.outboundTCP(q, p)
	}
}

// connectDoneLocked ends one of q's connects and starts the next ones: q's own, then
// those of destinations that had to wait for MaxConnects.
func (f *Forwarder) connectDoneLocked(q *destQueue, p *pendingSYN) {
	delete(f.pending, p.k)
	q.running--
	f.connects--
	if !f.closed {
		f.startLocked(q)
		for len(f.starved) > 0 && f.connects < f.cfg.MaxConnects {
			s := f.starved[0]
			f.starved[0] = nil
			f.starved = f.starved[1:]
			s.starved = false
			f.startLocked(s)
			f.dropQueueLocked(s)
		}
	}
	f.dropQueueLocked(q)
}

// dropQueueLocked forgets q once it has nothing running or waiting.
func (f *Forwarder) dropQueueLocked(q *destQueue) {
	if q.running == 0 && len(q.waiting) == 0 && !q.starved {
		delete(f.dests, q.target)
	}
}

// expireSYNs drops the SYNs that waited DialTimeout for their connect to start.
func (f *Forwarder) expireSYNs(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.waiting == 0 {
		return
	}
	for _, q := range f.dests {
		i := 0
		for i < len(q.waiting) && now.Sub(q.waiting[i].at) >= f.cfg.DialTimeout {
			delete(f.pending, q.waiting[i].k)
			q.waiting[i] = nil
			i++
		}
		if i > 0 {
			q.waiting = q.waiting[i:]
			f.waiting -= i
			f.tcpFlows -= i
			f.c.connExpired.Add(uint64(i))
			f.dropQueueLocked(q)
		}
	}
}
