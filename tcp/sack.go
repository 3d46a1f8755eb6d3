package tcp

import (
	"time"

	"github.com/berthnet/berth/wire"
)

// The sender's loss machinery once SACK is negotiated: a scoreboard of transmitted
// segments (RFC 6675 §3), RACK time-based loss detection (RFC 8985 §6), tail loss probes
// (RFC 8985 §7). RACK's verdicts start SACK-based recovery that keeps pipe below cwnd
// (RFC 6675 §5, recovery.go); without SACK the sender keeps RFC 5681/6582 NewReno
// recovery (recovery.go too).

// txSeg is one transmitted segment (or a few small ones sent back to back and coalesced)
// in the scoreboard.
type txSeg struct {
	start, end uint32
	sent       time.Duration // last transmission, on the protocol's monotonic clock
	flags      uint8
}

const (
	segSACKed    uint8 = 1 << iota // selectively acknowledged
	segLost                        // deemed lost (RACK, DupThresh, or a timeout)
	segRetrans                     // retransmitted at least once (RACK: ambiguous RTT)
	segRexmitOut                   // a retransmission is in flight (counts in pipe)
)

// scoreboard is a ring of txSeg in sequence order covering [SND.UNA, hi). It grows by
// doubling, so the steady state allocates nothing. The byte counters give RFC 6675's
// pipe in O(1): outstanding - sacked - lost + rexmitOut (as Linux's tcp_packets_in_flight).
type scoreboard struct {
	segs                    []txSeg // len is a power of two
	head, n                 int
	hi                      uint32 // end of the last record (valid when n > 0)
	sacked, lost, rexmitOut int    // bytes
	rxHint                  uint32 // no retransmittable lost record ends at or below it
}

func (sb *scoreboard) at(i int) *txSeg { return &sb.segs[(sb.head+i)&(len(sb.segs)-1)] }

func (sb *scoreboard) reset() {
	sb.head, sb.n = 0, 0
	sb.sacked, sb.lost, sb.rexmitOut = 0, 0, 0
}

// push records a new transmission [start, end) sent at now. A small segment directly
// after an untouched small one joins it, which bounds the records by about two per MSS
// in flight whatever the write pattern.
func (sb *scoreboard) push(start, end uint32, now time.Duration, mss int) {
	if sb.n > 0 {
		l := sb.at(sb.n - 1)
		if l.end == start && l.flags == 0 && int(end-l.start) <= mss {
			l.end, l.sent, sb.hi = end, now, end
			return
		}
	}
	if sb.n == len(sb.segs) {
		nl := max(2*len(sb.segs), 64)
		ns := make([]txSeg, nl)
		for i := 0; i < sb.n; i++ {
			ns[i] = *sb.at(i)
		}
		sb.segs, sb.head = ns, 0
	}
	*sb.at(sb.n) = txSeg{start: start, end: end, sent: now}
	sb.n++
	sb.hi = end
}

// uncount removes k bytes of a record with the given flags from the counters.
func (sb *scoreboard) uncount(flags uint8, k int) {
	if flags&segSACKed != 0 {
		sb.sacked -= k
	}
	if flags&segLost != 0 {
		sb.lost -= k
	}
	if flags&segRexmitOut != 0 {
		sb.rexmitOut -= k
	}
}

// find returns the index of the first record ending after seq.
func (sb *scoreboard) find(seq uint32) int {
	lo, hi := 0, sb.n
	for lo < hi {
		m := (lo + hi) / 2
		if seqLEQ(sb.at(m).end, seq) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// sbAck drops the records the cumulative ACK covers; each record delivered by it (not
// SACKed before) feeds RACK (RFC 8985 §6.1).
func (s *sender) sbAck(ack uint32, now time.Duration) {
	sb := &s.sb
	for sb.n > 0 {
		r := sb.at(0)
		if seqLEQ(r.end, ack) {
			if r.flags&segSACKed == 0 {
				s.rackDeliver(r, now)
			}
			sb.uncount(r.flags, int(r.end-r.start))
			sb.head = (sb.head + 1) & (len(sb.segs) - 1)
			sb.n--
			continue
		}
		if seqLT(r.start, ack) {
			sb.uncount(r.flags, int(ack-r.start))
			r.start = ack
		}
		break
	}
}

// sbSACK marks the records inside the SACK blocks (RFC 2018 §3). A first block below the
// cumulative ACK or inside the second block is a D-SACK (RFC 2883 §4): the peer got
// something twice, a sign of reordering, which widens RACK's reordering window (RFC 8985
// §6.2 step 4). It reports whether a record was newly SACKed.
func (c *Conn) sbSACK(o *wire.TCPOptions, ack uint32, now time.Duration) bool {
	sb := &c.sb
	newly := false
	// Blocks in sequence order (as Linux sorts them): one ACK reporting two ranges says
	// nothing about which arrived first, so neither may look reordered to RACK.
	var blocks [wire.MaxSACKBlocks]wire.SACKBlock
	nb := 0
	for i := 0; i < o.NumSACK; i++ {
		b := o.SACK[i]
		if !seqLT(b.Left, b.Right) {
			continue
		}
		if i == 0 && (seqLEQ(b.Right, ack) || (o.NumSACK > 1 && seqGEQ(b.Left, o.SACK[1].Left) && seqLEQ(b.Right, o.SACK[1].Right))) {
			c.p.Stats.DSACKsRcvd.Add(1)
			c.rackReord = true
			c.rackReoMult = min(c.rackReoMult+1, 16)
			continue
		}
		j := nb
		for ; j > 0 && seqLT(b.Left, blocks[j-1].Left); j-- {
			blocks[j] = blocks[j-1]
		}
		blocks[j] = b
		nb++
	}
	for _, b := range blocks[:nb] {
		if sb.n == 0 || seqLEQ(b.Right, ack) || !seqLT(b.Left, sb.hi) {
			continue
		}
		for j := sb.find(b.Left); j < sb.n; j++ {
			r := sb.at(j)
			if !seqLT(r.start, b.Right) {
				break
			}
			if r.flags&segSACKed != 0 || seqLT(r.start, b.Left) || seqGT(r.end, b.Right) {
				continue // already known, or only partly covered
			}
			k := int(r.end - r.start)
			sb.uncount(r.flags, k)
			r.flags = r.flags&segRetrans | segSACKed
			sb.sacked += k
			c.rackDeliver(r, now)
			newly = true
		}
	}
	return newly
}

// rackSentAfter reports whether (t1, seq1) was sent after (t2, seq2) (RFC 8985 §6.2).
func rackSentAfter(t1 time.Duration, seq1 uint32, t2 time.Duration, seq2 uint32) bool {
	return t1 > t2 || (t1 == t2 && seqGT(seq1, seq2))
}

// rackDeliver is RFC 8985 §6.1 steps 1-3 for one delivered record.
func (s *sender) rackDeliver(r *txSeg, now time.Duration) {
	rtt := now - r.sent
	if r.flags&segRetrans != 0 && rtt < s.rackMinRTT {
		return // delivered sooner than possible: the original was delivered, not this
	}
	if r.flags&segRetrans == 0 && (s.rackMinRTT == 0 || rtt < s.rackMinRTT) {
		s.rackMinRTT = max(rtt, time.Microsecond)
	}
	// Step 3: a delivered segment below the highest delivered one, never retransmitted,
	// was reordered.
	switch {
	case !s.rackValid || seqGT(r.end, s.rackFack):
		s.rackFack = r.end
	case seqLT(r.end, s.rackFack) && r.flags&segRetrans == 0:
		s.rackReord = true
		s.noteReordering(r.start, s.rackFack)
	}
	// Step 2, as Linux's tcp_rack_advance: RACK.rtt is the RTT of the last segment this
	// ACK delivered (in sequence order), RACK.xmit_ts that of the most recently sent one
	// delivered so far. An original that a retransmission overtook (a late, reordered
	// segment) thus widens RACK.rtt, and segments sent with it are not declared lost at
	// once (tcp/fast_recovery/prr-ss-ack-below-snd_una-cubic.pkt).
	s.rackRTT = rtt
	if !s.rackValid || rackSentAfter(r.sent, r.end, s.rackXmit, s.rackEnd) {
		s.rackXmit, s.rackEnd, s.rackValid = r.sent, r.end, true
	}
}

// rackReoWnd is RFC 8985 §6.2 step 4.
func (c *Conn) rackReoWnd() time.Duration {
	if !c.rackReord && (c.inRecovery || c.sb.sacked >= 3*c.mss) {
		return 0
	}
	return min(time.Duration(c.rackReoMult)*c.rackMinRTT/4, c.srtt)
}

// rackDetectLoss is RFC 8985 §6.2 step 5: a record sent before the most recently delivered
// one is lost once RACK.rtt plus the reordering window has passed since it was sent. It
// returns when the next record would be due (0: none) and whether any was newly lost.
func (c *Conn) rackDetectLoss(now time.Duration) (timeout time.Duration, lost bool) {
	if !c.rackValid {
		return 0, false
	}
	sb := &c.sb
	reo := c.rackReoWnd()
	for i := 0; i < sb.n; i++ {
		r := sb.at(i)
		if r.flags&segSACKed != 0 || r.flags&(segLost|segRexmitOut) == segLost {
			continue // delivered, or lost and waiting for its retransmission
		}
		if !rackSentAfter(c.rackXmit, c.rackEnd, r.sent, r.end) {
			if r.flags&segRetrans == 0 {
				break // records are sent in sequence order, retransmissions only later
			}
			continue
		}
		if left := r.sent + c.rackRTT + reo - now; left > 0 {
			timeout = max(timeout, left)
			continue
		}
		c.markLost(r)
		c.p.Stats.RACKLost.Add(1)
		lost = true
	}
	return timeout, lost
}

func (s *sender) markLost(r *txSeg) {
	sb := &s.sb
	k := int(r.end - r.start)
	if r.flags&segRexmitOut != 0 {
		r.flags &^= segRexmitOut
		sb.rexmitOut -= k
	}
	if r.flags&segLost == 0 {
		r.flags |= segLost
		sb.lost += k
		s.lostMarks++
	}
	if seqLT(r.start, sb.rxHint) {
		sb.rxHint = r.start
	}
}

// sbComplete reports whether the scoreboard covers everything outstanding, so that
// recovery can work from it alone (after going back N it covers only what was sent
// since).
func (c *Conn) sbComplete() bool {
	return c.sackOK && c.sb.n > 0 && c.sndNxt == c.sndMax && c.sb.at(0).start == c.sndUna && c.sb.hi == c.sndMax
}

// pipe is RFC 6675's estimate of the bytes in the network.
func (s *sender) pipe() int {
	return int(s.sndNxt-s.sndUna) - s.sb.sacked - s.sb.lost + s.sb.rexmitOut
}

// sackInput runs the scoreboard for an acceptable ACK: cumulative and selective
// acknowledgments, RACK loss detection, and recovery entry. ackAdvanced says SND.UNA moved.
func (c *Conn) sackInput(s *segment, ackAdvanced bool) {
	if c.sb.n == 0 {
		return
	}
	now := c.mono()
	if ackAdvanced {
		c.sbAck(s.ack, now)
	}
	if s.opts.NumSACK > 0 {
		c.sbSACK(&s.opts, s.ack, now)
	}
	c.detectLoss(now)
}

// detectLoss runs RACK and acts on its verdict: recovery for new losses, the reordering
// timer for records not yet due.
func (c *Conn) detectLoss(now time.Duration) {
	c.reoAt = 0
	if c.sb.sacked == 0 && c.sb.lost == 0 && c.sb.rexmitOut == 0 {
		if c.tkind == timerReorder {
			c.armLoss()
		}
		return
	}
	timeout, lost := c.rackDetectLoss(now)
	if timeout > 0 {
		c.reoAt = now + timeout
		c.arm(timerReorder, timeout)
	} else if c.tkind == timerReorder {
		c.armLoss()
	}
	if lost {
		if !c.inRecovery {
			c.enterRecovery()
		}
	}
}

// armLoss arms the send side's loss timer while data is in flight: the RACK reordering
// timer when a record is waiting to be declared lost, else a tail loss probe when one is
// allowed (RFC 8985 §7.2), else the retransmission timer.
func (c *Conn) armLoss() {
	if !c.sackOK {
		c.arm(timerRetransmit, c.rto)
		return
	}
	now := c.mono()
	if c.reoAt > 0 {
		c.arm(timerReorder, max(c.reoAt-now, time.Microsecond))
		return
	}
	if pto, ok := c.pto(); ok {
		c.arm(timerTLP, pto)
		return
	}
	c.arm(timerRetransmit, c.rto)
}

// pto is RFC 8985 §7.2's probe timeout: 2*SRTT (at least 10 ms, as Linux), plus the
// worst-case delayed-ACK time when a single segment is in flight, at most the RTO.
func (c *Conn) pto() (time.Duration, bool) {
	if c.inRecovery || c.tlpOut || c.srtt == 0 || c.sndMax == c.sndUna || !c.state.synchronized() {
		return 0, false
	}
	pto := max(2*c.srtt, 10*time.Millisecond)
	if int(c.sndMax-c.sndUna) <= c.mss {
		pto += 200 * time.Millisecond
	}
	// RFC 8985 §7.2: the PTO is at most the time left until the RTO. Linux then probes at
	// the RTO's time (tcp_schedule_loss_probe's min with rto_delta) rather than not at all,
	// and the RTO is re-armed from the probe: a lone FIN (tcp/user_timeout/user_timeout.pkt)
	// goes again at +RTO (the probe), +RTO, +2·RTO.
	return min(pto, c.rto), true
}

// onReorder: the reordering window of a record passed.
func (c *Conn) onReorder() {
	c.detectLoss(c.mono())
	c.output()
	if c.sndMax != c.sndUna {
		c.armLoss()
	}
}

// onTLP sends a tail loss probe (RFC 8985 §7.3): new data if the windows allow, else the
// last segment again, so that a lost tail is repaired by SACK recovery instead of a
// retransmission timeout.
func (c *Conn) onTLP() {
	if !c.state.sending() || c.sndMax == c.sndUna {
		c.updateTimer()
		return
	}
	c.tlpOut = true
	c.p.Stats.TLPs.Add(1)
	bufEnd := c.sndUna + uint32(c.sndBuf.n)
	sent := false
	if seqLT(c.sndNxt, bufEnd) && int(c.sndNxt-c.sndUna) < int(c.sndWnd) {
		used := c.sendData(c.sndNxt, min(c.mss, int(c.sndWnd)-int(c.sndNxt-c.sndUna)))
		c.sndNxt += uint32(used)
		sent = used > 0
	}
	if !sent && c.sb.n > 0 {
		r := c.sb.at(c.sb.n - 1)
		if r.flags&segSACKed == 0 {
			seq := r.end - uint32(min(int(r.end-r.start), c.mss))
			if c.sendData(seq, int(r.end-seq)) > 0 {
				if r.flags&segRexmitOut == 0 {
					c.sb.rexmitOut += int(r.end - r.start)
				}
				r.flags |= segRetrans | segRexmitOut
				r.sent = max(c.mono(), c.rackXmit+1)
			}
		}
	}
	c.arm(timerRetransmit, c.rto)
}
