package tcp

import (
	"time"

	"github.com/berthnet/berth/wire"
)

// Loss recovery: which segments go again, and what cwnd is while they do. It is the
// sender's, apart from the congestion-control policy (CongestionControl), as gVisor keeps
// reno_recovery and sack_recovery apart from its congestion control: the policy grows the
// window (OnAck) and reduces it (OnCongestion, OnTimeout); recovery sets cwnd in between
// (SetWindow). Without SACK it is RFC 5681 fast retransmit with RFC 6582 NewReno partial
// ACKs; with SACK, RFC 6675 recovery driven by RACK (sack.go), with RFC 6937 proportional
// rate reduction.

// recoveryStart is RFC 5681 §3.2 steps 2 and 3: the policy's multiplicative decrease sets
// ssthresh, and cwnd = ssthresh + 3*SMSS for the segments the three duplicates say have
// left the network.
func recoveryStart(cc CongestionControl, flight, mss int) {
	cc.OnCongestion(flight)
	cc.SetWindow(cc.SSThresh() + 3*mss)
}

// recoveryDupAck is RFC 5681 §3.2 step 4: each further duplicate ACK inflates cwnd by
// SMSS.
func recoveryDupAck(cc CongestionControl, mss int) { cc.SetWindow(cc.Window() + mss) }

// recoveryPartialAck is RFC 6582 §3.2 step 5: deflate cwnd by the amount acknowledged,
// add back one SMSS if at least one SMSS was acknowledged.
func recoveryPartialAck(cc CongestionControl, acked, mss int) {
	w := cc.Window() - acked
	if acked >= mss {
		w += mss
	}
	cc.SetWindow(max(w, mss))
}

// recoveryExit is RFC 6582 §3.2 step 4, option (1): a full acknowledgment ends recovery
// with cwnd = min(ssthresh, FlightSize + SMSS), flight being what is outstanding now.
func recoveryExit(cc CongestionControl, flight, mss int) {
	cc.SetWindow(max(min(cc.SSThresh(), flight+mss), mss))
}

// recoveryAck handles an ACK of new data during recovery, flight being what was
// outstanding before it.
func (c *Conn) recoveryAck(ack uint32, acked, flight int) {
	if c.sackOK {
		// RFC 6675: RACK finds the holes; recovery ends when everything outstanding at
		// its start is acknowledged. After a timeout cwnd slow-starts meanwhile.
		if seqGEQ(ack, c.recover) {
			c.inRecovery, c.dupAcks = false, 0
			if !c.rtoRecovery {
				// RFC 6675 §5 step 4.2: cwnd was ssthresh throughout and stays so (as
				// Linux's PRR ends). RFC 6582's min(ssthresh, FlightSize+SMSS) would
				// collapse it to one segment when this ACK leaves little in flight.
				c.cc.SetWindow(max(c.cc.SSThresh(), c.mss))
			}
			c.rtoRecovery = false
		} else if c.rtoRecovery {
			c.cc.OnAck(acked, flight)
		}
		return
	}
	if seqGEQ(ack, c.recover) {
		c.inRecovery, c.dupAcks = false, 0
		recoveryExit(c.cc, int(c.sndMax-c.sndUna), c.mss)
		return
	}
	// RFC 6582 §3.2 step 5: a partial ACK retransmits the next hole at once.
	recoveryPartialAck(c.cc, acked, c.mss)
	c.sendData(c.sndUna, c.mss)
	c.arm(timerRetransmit, c.rto)
}

// dupAck counts a duplicate ACK (RFC 5681 §2) and starts fast retransmit and recovery on
// the third (RFC 5681 §3.2, RFC 6582 §3.2 step 2).
func (c *Conn) dupAck() {
	c.dupAcks++
	if c.sackOK {
		// RACK decides from the SACK blocks; this is RFC 6675's DupThresh for a peer
		// whose duplicate ACKs carry no SACK information.
		if c.dupAcks >= 3 && !c.inRecovery && c.sb.sacked == 0 && c.sb.n > 0 {
			c.markLost(c.sb.at(0))
			c.enterRecovery()
		}
		return
	}
	if c.inRecovery {
		recoveryDupAck(c.cc, c.mss)
		return
	}
	if c.dupAcks == 3 && seqGEQ(c.sndUna, c.recover) {
		c.inRecovery = true
		c.recover = c.sndMax
		recoveryStart(c.cc, int(c.sndMax-c.sndUna), c.mss)
		c.sendData(c.sndUna, c.mss)
		c.arm(timerRetransmit, c.rto)
	}
}

// cwndLimit is the congestion window that pipe must stay below: during SACK fast
// recovery what proportional rate reduction allows (RFC 6937, prrUpdate), during
// NewReno's ssthresh (RFC 6675 §5 step 4.2), otherwise cwnd.
func (c *Conn) cwndLimit() int {
	if c.inRecovery && !c.rtoRecovery {
		if c.sackOK {
			return c.prrLimit
		}
		return min(c.cc.Window(), max(c.cc.SSThresh(), c.mss))
	}
	return c.cc.Window()
}

// enterRecovery starts SACK-based fast recovery (RFC 6675 §5 step 4) when RACK or the
// duplicate-ACK threshold declares a loss.
func (c *Conn) enterRecovery() {
	if c.inRecovery {
		return
	}
	c.inRecovery, c.rtoRecovery = true, false
	c.recover = c.sndMax
	recoveryStart(c.cc, int(c.sndMax-c.sndUna), c.mss) // PRR, not cwnd, limits what is sent
	c.p.Stats.SACKRecoveries.Add(1)
	// RFC 6937 §3.1 initialization. Until the ACK's prrUpdate only the first
	// retransmission goes (RFC 6675 §5 step 4.3).
	c.prrDelivered, c.prrOut, c.prrRecoverFS, c.prrLimit = 0, 0, int(c.sndMax-c.sndUna), 0
	c.retransmitLost(true)
	c.prrForced = c.prrOut
}

// prrUpdate is RFC 6937 §3.1 for an ACK during SACK recovery that delivered bytes (the
// cumulative ACK's advance plus what it newly SACKed): it sets how far pipe may grow
// until the next ACK. While pipe is above ssthresh the sender sends in proportion to
// what the peer receives, ssthresh/RecoverFS of it, so that cwnd comes down to ssthresh
// by the end of recovery smoothly instead of in one step (RFC 6675 sends nothing until
// pipe falls below ssthresh, then everything at once); below ssthresh, slow start
// towards it (PRR-SSRB): as much as was delivered, and one segment more only when the
// ACK advanced SND.UNA and declared no new loss (as Linux's tcp_cwnd_reduction, and
// draft-ietf-tcpm-prr-rfc6937bis §5: a SACK alone, or an ACK that found new holes, is
// no sign that the path has room for more). An ACK that delivered nothing leaves the
// limit as it was. The ACK that entered recovery already sent its retransmission
// (prrForced): it is one of the segments the ACK allows, not one more; and until
// something was sent in recovery one segment always may go (RFC 6675 §5 step 4.3).
func (c *Conn) prrUpdate(delivered int, advanced, newlyLost bool) {
	forced := c.prrForced
	c.prrForced = 0
	if delivered <= 0 && forced == 0 {
		return
	}
	c.prrDelivered += delivered
	pipe := c.pipe() - forced
	out := c.prrOut - forced
	ssthresh := max(c.cc.SSThresh(), c.mss)
	var sndcnt int
	if pipe > ssthresh {
		fs := max(c.prrRecoverFS, 1)
		sndcnt = (c.prrDelivered*ssthresh+fs-1)/fs - out
	} else {
		sndcnt = max(c.prrDelivered-out, delivered)
		if advanced && !newlyLost {
			sndcnt += c.mss
		}
		sndcnt = min(ssthresh-pipe, sndcnt)
	}
	if out == 0 {
		sndcnt = max(sndcnt, c.mss) // the retransmission that begins recovery
	}
	c.prrLimit = pipe + max(sndcnt, 0)
}

// retransmitLost resends lost records while pipe stays below the congestion window (RFC
// 6675 §5 NextSeg rule 1); force sends the first one regardless (RFC 6675 §5 step 4.3).
// A record larger than the MSS (the path MTU shrank) goes as several segments.
func (c *Conn) retransmitLost(force bool) {
	sb := &c.sb
	if sb.lost == 0 || c.sndWnd == 0 {
		return
	}
	if seqLT(sb.rxHint, c.sndUna) || (sb.n > 0 && seqGT(sb.rxHint, sb.hi)) {
		sb.rxHint = c.sndUna
	}
	limit := c.cwndLimit()
	var now time.Duration
	for i := sb.find(sb.rxHint); i < sb.n; i++ {
		r := sb.at(i)
		if r.flags&(segLost|segRexmitOut|segSACKed) != segLost {
			continue
		}
		if !force && c.pipe() >= limit {
			return
		}
		if now == 0 {
			now = c.mono()
		}
		// Through a GSO link, the lost records that follow this one without a gap go in
		// the same super-segment while pipe allows each (Linux retransmits a lost TSO
		// skb whole, as far as cwnd lets it: one 4001:7001(3000) packet, not three).
		j, end := i, r.end
		if c.gsoMax > 0 && !force {
			room := limit - c.pipe() - int(r.end-r.start)
			most := c.gsoMax - (wire.TCPMinHeaderLen + tsOptLen + c.sackOptLen())
			for ; j+1 < sb.n && room > 0; j++ {
				q := sb.at(j + 1)
				if q.start != end || q.flags&(segLost|segRexmitOut|segSACKed) != segLost || int(q.end-r.start) > most {
					break
				}
				room -= int(q.end - q.start)
				end = q.end
			}
		}
		force = false
		if j > i {
			c.rtxGSO = true
			c.sendData(r.start, int(end-r.start))
			c.rtxGSO = false
		} else {
			for seq := r.start; seqLT(seq, r.end); {
				used := c.sendData(seq, min(int(r.end-seq), c.mss))
				if used == 0 {
					break
				}
				seq += uint32(used)
			}
		}
		for ; i <= j; i++ {
			q := sb.at(i)
			q.flags |= segRetrans | segRexmitOut
			// Sent after every segment delivered so far, even on a coarse clock.
			q.sent = max(now, c.rackXmit+1)
			sb.rexmitOut += int(q.end - q.start)
			sb.rxHint = q.end
		}
		i = j
	}
}

// rtoSACK handles a retransmission timeout with a scoreboard (RFC 6675 §5.1, RFC 8985
// §6.3): every record not SACKed is lost; recovery resends them from the first, within
// cwnd (one segment after the timeout, growing by slow start), skipping what the peer
// already has instead of going back N.
func (c *Conn) rtoSACK() {
	sb := &c.sb
	for i := 0; i < sb.n; i++ {
		r := sb.at(i)
		if r.flags&segSACKed != 0 {
			continue
		}
		c.markLost(r)
	}
	sb.rxHint = c.sndUna
	c.inRecovery, c.rtoRecovery, c.tlpOut = true, true, false
	c.recover = c.sndMax
	c.reoAt = 0
	c.retransmitLost(true)
}
