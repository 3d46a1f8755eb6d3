package tcp

import (
	"syscall"
	"time"

	"github.com/berthnet/berth/wire"
)

const (
	flagFIN = wire.TCPFlagFIN
	flagSYN = wire.TCPFlagSYN
	flagRST = wire.TCPFlagRST
	flagACK = wire.TCPFlagACK
)

// input processes one segment for this connection (RFC 9293 §3.10.7). It returns false
// when the connection is not the segment's owner after all (it is closed, or a TIME-WAIT
// record gave way to a new SYN): the caller then looks for a listener or answers RST.
func (c *Conn) input(s *segment) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	switch c.state {
	case StateClosed:
		return false
	case StateSynSent:
		c.inputSynSent(s)
		return true
	case StateTimeWait:
		return c.inputTimeWait(s)
	}
	c.kaSeen = true
	c.inputSynchronized(s)
	// A segment of a link batch: what it made sendable goes at the end of the batch
	// (Protocol.EndBatch), together with what the batch's other ACKs allow. Not in loss
	// recovery, where each ACK's retransmissions and new data should go at once (measured:
	// deferring there cost throughput under 2% loss), nor when an ACK is due now.
	if s.batched && !c.ackNow && !c.inRecovery && c.sb.n == 0 && c.state != StateClosed {
		if !c.outPending {
			c.outPending = true
			c.p.pendMu.Lock()
			c.p.pend = append(c.p.pend, c)
			c.p.pendMu.Unlock()
		}
		return true
	}
	c.outPending = false
	c.finishInput()
	return true
}

// flushPending runs the finishInput that HandleBatched deferred (Protocol.EndBatch).
func (c *Conn) flushPending() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.outPending {
		return
	}
	c.outPending = false
	c.nowOK = false
	c.finishInput()
}

// finishInput sends what the segment made sendable and the ACK it asked for.
func (c *Conn) finishInput() {
	if c.state == StateClosed {
		return
	}
	c.output()
	switch {
	case c.ackNow:
		c.sendAck()
	case c.ackPending > 0 && !c.dackOn:
		if c.p.cfg.DelayedACK < 0 {
			c.sendAck()
			return
		}
		c.dackOn = true
		if c.dack == nil {
			c.dack = c.p.clk.AfterFunc(c.p.cfg.DelayedACK, c.onDelayedAck)
		} else {
			c.dack.Reset(c.p.cfg.DelayedACK)
		}
	}
}

func (c *Conn) onDelayedAck() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	if !c.dackOn {
		return
	}
	c.dackOn = false
	if c.ackPending > 0 && c.state != StateClosed && c.state != StateTimeWait {
		c.sendAck()
	}
}

// inputSynSent is RFC 9293 §3.10.7.3.
func (c *Conn) inputSynSent(s *segment) {
	ackOK := false
	if s.flags&flagACK != 0 {
		if seqLEQ(s.ack, c.iss) || seqGT(s.ack, c.sndMax) {
			if s.flags&flagRST == 0 {
				c.p.sendRST(c.local.Addr(), c.remote.Addr(), c.local.Port(), c.remote.Port(), s.ack, 0, false)
			}
			return
		}
		ackOK = true
	}
	if s.flags&flagRST != 0 {
		// RFC 5961 §3.2: in SYN-SENT a RST is acceptable if it acknowledges our SYN.
		if ackOK {
			c.fail(syscall.ECONNREFUSED)
		}
		return
	}
	if s.flags&flagSYN == 0 {
		return
	}
	c.irs, c.rcvNxt = s.seq, s.seq+1
	c.negotiate(&s.opts)
	// RFC 7323 §2.2: the window in a SYN is not scaled.
	c.sndWnd, c.sndWl1, c.sndWl2 = s.wnd, s.seq, s.ack
	c.maxSndWnd = s.wnd
	if !ackOK {
		// Simultaneous open: SYN-RECEIVED, answer SYN-ACK with our ISS.
		c.setState(StateSynReceived)
		c.sendSYN()
		c.arm(timerRetransmit, c.rto)
		return
	}
	c.sndUna = s.ack
	if c.rttOn && seqGT(s.ack, c.rttSeq) {
		c.rttOn = false
		c.rttSample(c.now().Sub(c.rttStart))
	}
	c.establish()
	c.disarm()
	c.sendAck()
	c.cond.Broadcast()
}

func (c *Conn) establish() {
	c.setState(StateEstablished)
	c.synced = true
	c.retries = 0
	c.rto = c.computedRTO()
	if c.srtt == 0 && c.retrans > 0 {
		// RFC 6298 §5.7: the SYN (or SYN-ACK) timed out and the handshake gave no RTT
		// sample (Karn's rule): data starts with an RTO of 3 s, not the 1 s initial one,
		// as Linux's TCP_TIMEOUT_FALLBACK.
		c.rto = synFallbackRTO
	}
}

// synFallbackRTO is RFC 6298 §5.7's RTO after a handshake whose SYN was retransmitted.
const synFallbackRTO = 3 * time.Second

// inputTimeWait is RFC 9293 §3.10.7.4 for TIME-WAIT.
func (c *Conn) inputTimeWait(s *segment) bool {
	if s.flags&flagRST != 0 {
		if s.seq == c.rcvNxt {
			c.finish(nil)
		}
		return true
	}
	if s.flags&flagSYN != 0 && s.flags&flagACK == 0 {
		// RFC 9293 §3.10.7.4 note / RFC 6191: a new SYN beyond the old connection's
		// sequence space may reopen the 4-tuple.
		if seqGT(s.seq, c.rcvNxt) {
			c.finish(nil)
			return false
		}
	}
	if s.flags&flagFIN != 0 && s.seq+uint32(s.len) == c.rcvNxt {
		// The peer retransmitted its FIN: our ACK was lost. Acknowledge, restart 2*MSL.
		c.arm(timerTimeWait, c.p.cfg.TimeWait)
	}
	c.sendAck()
	return true
}

// acceptable is the segment acceptance test of RFC 9293 §3.10.7.4.
func (c *Conn) acceptable(s *segment, wnd uint32) bool {
	if s.len == 0 {
		if wnd == 0 {
			return s.seq == c.rcvNxt
		}
		return seqInWindow(s.seq, c.rcvNxt, wnd)
	}
	if wnd == 0 {
		return false
	}
	return seqInWindow(s.seq, c.rcvNxt, wnd) || seqInWindow(s.seq+uint32(s.len)-1, c.rcvNxt, wnd)
}

// inputSynchronized handles SYN-RECEIVED and the synchronized states except TIME-WAIT.
func (c *Conn) inputSynchronized(s *segment) {
	if c.state == StateSynReceived && s.flags&(flagSYN|flagACK|flagRST) == flagSYN && s.seq == c.irs {
		// The peer retransmitted its SYN: our SYN-ACK was lost.
		c.sendSYN()
		return
	}
	if c.state == StateSynReceived && c.active && s.flags&(flagSYN|flagACK|flagRST) == flagSYN|flagACK &&
		s.seq+1 == c.rcvNxt && s.ack == c.sndNxt {
		// Simultaneous open (RFC 9293 Figure 7): the peer's SYN-ACK acknowledges our SYN;
		// its SYN we already have. Take it as the ACK (as Linux does), not as a new SYN.
		s.seq++
		s.len--
		s.flags &^= flagSYN
		s.unscaled = true // RFC 7323 §2.2: a SYN's window is never scaled
	}
	// RFC 7323 §5.3 R1 (PAWS): a segment whose TSval is older than TS.Recent is a duplicate
	// from an earlier wrap of the sequence space: acknowledge and drop it. TS.Recent older
	// than 24 days is no longer trusted (RFC 7323 §5.5). A RST is not subject to PAWS.
	if c.tsOK && s.opts.HasTimestamps && s.flags&flagRST == 0 && int32(c.tsRecent-s.opts.TSVal) > pawsWindow && !c.disorderedAck(s) {
		if c.now().Sub(c.tsRecentAt) < 24*24*time.Hour {
			c.p.Stats.PAWSDrops.Add(1)
			if !c.oowLimited(s) {
				c.ackNow = true
			}
			return
		}
		c.tsRecent = s.opts.TSVal
	}
	wnd := c.rcvWnd()
	if !c.acceptable(s, wnd) {
		// RFC 9293 §3.10.7.4: with a zero window, ACKs (and RSTs) at RCV.NXT still count.
		if !(wnd == 0 && s.seq == c.rcvNxt) {
			if end := s.seq + uint32(len(s.payload)); len(s.payload) > 0 && seqLEQ(end, c.rcvNxt) && s.flags&flagRST == 0 {
				// RFC 2883 §4.1: data we already have; report it in a D-SACK block.
				c.dsack, c.dsackOn = span{s.seq, end}, c.sackOK
			}
			if s.flags&flagRST == 0 && !c.oowLimited(s) {
				c.ackNow = true
			}
			return
		}
	}
	// RFC 7323 §4.3: TS.Recent takes the TSval of the segment that the next ACK will
	// acknowledge (SEG.SEQ <= Last.ACK.sent), so the peer measures the whole RTT.
	if c.tsOK && s.opts.HasTimestamps && s.flags&flagRST == 0 && seqLEQ(s.seq, c.lastAckSent) && seqGEQ(s.opts.TSVal, c.tsRecent) {
		if s.opts.TSVal != c.tsRecent {
			c.tsRecent, c.tsRecentAt = s.opts.TSVal, c.now()
		}
	}
	// RFC 5961 §3.2: a RST resets only with the exact sequence number; in the window it
	// earns a challenge ACK.
	if s.flags&flagRST != 0 {
		if s.seq == c.rcvNxt {
			c.reset()
		} else if c.challengeAllowed() {
			c.sendAck()
		}
		return
	}
	// RFC 5961 §4.2: a SYN in a synchronized state earns a challenge ACK, nothing more.
	if s.flags&flagSYN != 0 {
		if c.challengeAllowed() {
			c.sendAck()
		}
		return
	}
	if s.flags&flagACK == 0 {
		return
	}
	if c.state == StateSynReceived {
		if !seqGT(s.ack, c.sndUna) || seqGT(s.ack, c.sndMax) {
			c.p.sendRST(c.local.Addr(), c.remote.Addr(), c.local.Port(), c.remote.Port(), s.ack, 0, false)
			return
		}
		if l := c.listener; l != nil {
			switch l.ready(c) {
			case readyFull:
				return // accept queue full: stay in SYN-RECEIVED, the peer will retransmit
			case readyClosed:
				c.listener = nil
				c.abort()
				return
			}
		}
		c.establish()
		c.sndWnd = s.window(c.sndWscale)
		c.sndWl1, c.sndWl2 = s.seq, s.ack
		c.maxSndWnd = max(c.maxSndWnd, c.sndWnd)
		c.cond.Broadcast()
	}
	if !c.processAck(s) {
		return
	}
	if c.state == StateClosed {
		return
	}
	// Our FIN acknowledged?
	if c.finQueued && seqGT(c.sndUna, c.finSeq) {
		switch c.state {
		case StateFinWait1:
			c.setState(StateFinWait2)
			if c.userClosed {
				c.arm(timerFinWait2, c.p.cfg.FinTimeout)
			}
		case StateClosing:
			c.enterTimeWait()
			return
		case StateLastAck:
			c.finish(nil)
			return
		}
	}
	// Segment text (RFC 9293 §3.10.7.4, seventh) and FIN (eighth).
	if c.state.receiving() {
		if c.userClosed && len(s.payload) > 0 && seqGT(s.seq+uint32(len(s.payload)), c.rcvNxt) {
			// New data for a socket nobody can read any more: reset, as Linux does.
			c.abort()
			return
		}
		c.receive(s)
	} else if s.flags&flagFIN != 0 || len(s.payload) > 0 {
		c.ackNow = true // a retransmission of what we already have
	}
}

// pawsWindow is the tolerance of the PAWS test in TSval ticks, as Linux's
// TCP_PAWS_WINDOW: a segment sent in the same millisecond as one that overtook it (or
// the one before) is not an old duplicate.
const pawsWindow = 1

// disorderedAck reports whether a segment failing PAWS is a duplicate ACK merely
// overtaken by later segments (as Linux's tcp_disordered_ack): no data, at RCV.NXT,
// acknowledging SND.UNA, and older than TS.Recent by less than an RTO. Dropping it would
// lose the SACK information it carries, and it cannot harm the byte stream.
func (c *Conn) disorderedAck(s *segment) bool {
	return s.len == 0 && s.flags&flagACK != 0 && s.seq == c.rcvNxt && s.ack == c.sndUna &&
		time.Duration(int32(c.tsRecent-s.opts.TSVal))*time.Millisecond <= c.rto
}

// challengeAllowed applies the challenge-ACK rate limit (RFC 5961 §7) per socket, as
// Linux since 5.x: a global limit is a side channel (CVE-2016-5696) that lets an
// off-path attacker infer sequence numbers, and lets one flood silence every connection.
func (c *Conn) challengeAllowed() bool {
	now := c.p.clk.Now()
	if now.Sub(c.chStart) >= time.Second || now.Before(c.chStart) {
		c.chStart, c.chCount = now, 0
	}
	if c.chCount >= c.p.cfg.ChallengeACKLimit {
		return false
	}
	c.chCount++
	c.p.Stats.ChallengeACKs.Add(1)
	return true
}

// oowLimited rate-limits the duplicate ACKs that answer out-of-window segments without
// data (as Linux's tcp_invalid_ratelimit, 500 ms): two confused endpoints must not start
// an ACK storm. Segments with data are always answered.
func (c *Conn) oowLimited(s *segment) bool {
	if s.len > 0 {
		return false
	}
	now := c.p.clk.Now()
	if !c.oowLast.IsZero() && now.Sub(c.oowLast) < 500*time.Millisecond {
		return true
	}
	c.oowLast = now
	return false
}

// reset handles an acceptable RST (RFC 9293 §3.10.7.4, second).
func (c *Conn) reset() {
	switch c.state {
	case StateSynReceived:
		if !c.active {
			c.finish(nil) // back to LISTEN: the listener never saw this connection
			return
		}
		c.fail(syscall.ECONNREFUSED)
	case StateEstablished, StateFinWait1, StateFinWait2, StateCloseWait:
		c.fail(syscall.ECONNRESET)
	default:
		c.finish(nil)
	}
}

// processAck is RFC 9293 §3.10.7.4, fifth, with RFC 5961 §5.2's ACK check, RFC 6298
// timing and RFC 5681/6582 loss recovery. It returns false if the segment is to be dropped.
func (c *Conn) processAck(s *segment) bool {
	ack := s.ack
	if seqGT(ack, c.sndMax) {
		c.ackNow = true
		return false
	}
	if seqLT(ack, c.sndUna-c.maxSndWnd) {
		if c.challengeAllowed() {
			c.ackNow = true
		}
		return false
	}
	c.probes = 0
	wnd := s.window(c.sndWscale)
	advanced := seqGT(ack, c.sndUna)
	delivered := 0
	if c.sackOK {
		// Scoreboard first: RACK learns from what this ACK delivered (sack.go).
		sacked := c.sb.sacked
		c.sackInput(s, advanced)
		delivered = c.sb.sacked - sacked // RFC 6937: DeliveredData = Δsnd.una + ΔSACKd
		if advanced {
			delivered += int(ack - c.sndUna)
		}
	}
	if advanced {
		c.ackNew(ack, s)
	} else if ack == c.sndUna && len(s.payload) == 0 && s.flags&(flagSYN|flagFIN) == 0 &&
		wnd == c.sndWnd && c.sndMax != c.sndUna {
		c.dupAck()
	}
	if c.sackOK && c.inRecovery && !c.rtoRecovery {
		c.prrUpdate(delivered)
	}
	if seqLT(c.sndWl1, s.seq) || (c.sndWl1 == s.seq && seqLEQ(c.sndWl2, ack)) {
		c.sndWnd, c.sndWl1, c.sndWl2 = wnd, s.seq, ack
		c.maxSndWnd = max(c.maxSndWnd, wnd)
		if wnd > 0 {
			c.pbackoff = 0
		}
	}
	return true
}

// ackNew handles an ACK of new data.
func (c *Conn) ackNew(ack uint32, s *segment) {
	flight := int(c.sndMax - c.sndUna)
	acked := int(ack - c.sndUna)
	data := acked
	if c.sndUna == c.iss {
		data-- // our SYN
	}
	if c.finQueued && seqGT(ack, c.finSeq) {
		data-- // our FIN
	}
	c.sndBuf.consume(min(max(data, 0), c.sndBuf.n))
	c.sndUna = ack
	if seqLT(c.sndNxt, ack) {
		c.sndNxt = ack
	}
	if c.rttOn && seqGT(ack, c.rttSeq) {
		c.rttOn = false
		c.rttSample(c.now().Sub(c.rttStart))
	} else if c.tsOK && s.opts.HasTimestamps && s.opts.TSEcr != 0 {
		// RFC 7323 §4: the echoed timestamp measures the RTT also of retransmitted data,
		// where Karn's rule leaves the timer without a sample (RFC 7323 §4.2: only ACKs
		// that advance the left edge).
		if d := int32(c.tsNow() - s.opts.TSEcr); d >= 0 {
			c.rttSample(time.Duration(d) * time.Millisecond)
		}
	}
	c.retries = 0
	c.rto = c.computedRTO()
	c.tlpOut = false
	c.sndAutotune()
	if c.inRecovery && c.sackOK {
		// RFC 6675: RACK finds the holes; recovery ends when everything outstanding at
		// its start is acknowledged. After a timeout cwnd slow-starts meanwhile.
		if seqGEQ(ack, c.recover) {
			c.inRecovery, c.dupAcks = false, 0
			if !c.rtoRecovery {
				// RFC 6675 §5 step 4.2: cwnd was ssthresh throughout and stays so (as
				// Linux's PRR ends). RFC 6582's min(ssthresh, FlightSize+SMSS) would
				// collapse it to one segment when this ACK leaves little in flight.
				c.cc.OnRecoveryExit(max(int(c.sndMax-c.sndUna), c.cc.SSThresh()))
			}
			c.rtoRecovery = false
		} else if c.rtoRecovery {
			c.cc.OnAck(acked, flight)
		}
	} else if c.inRecovery {
		if seqGEQ(ack, c.recover) {
			c.inRecovery, c.dupAcks = false, 0
			c.cc.OnRecoveryExit(int(c.sndMax - c.sndUna))
		} else {
			// RFC 6582 §3.2 step 5: a partial ACK retransmits the next hole at once.
			c.cc.OnPartialAck(acked)
			c.sendData(c.sndUna, c.mss)
			c.arm(timerRetransmit, c.rto)
		}
	} else {
		c.dupAcks = 0
		// Grow cwnd only when it limits the sender (RFC 7661 §4.1's spirit).
		if 2*flight >= c.cc.Window() {
			c.cc.OnAck(acked, flight)
		}
	}
	if c.sndUna == c.sndMax {
		c.disarm()
	} else {
		c.armLoss() // RFC 6298 §5.3; RACK-TLP's timers when SACK is on
	}
	if c.sndWritable() || c.sndUna == c.sndMax {
		c.cond.Broadcast()
	}
}

// sndWritable reports whether a writer blocked on a full send buffer should be woken: a
// third of the buffer is free, as Linux's sk_stream_write_space decides. Waking it for
// every ACK that frees a few segments would cost a context switch and a contended lock
// per ACK, and let it copy a few kilobytes each time.
func (c *Conn) sndWritable() bool { return c.sndBufMax-c.sndBuf.n >= c.sndBufMax/3 }

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
		c.cc.OnRecoveryDupAck()
		return
	}
	if c.dupAcks == 3 && seqGEQ(c.sndUna, c.recover) {
		c.inRecovery = true
		c.recover = c.sndMax
		c.cc.OnFastRetransmit(int(c.sndMax - c.sndUna))
		c.sendData(c.sndUna, c.mss)
		c.arm(timerRetransmit, c.rto)
	}
}

// receive takes the segment's text and FIN: in-order bytes go to the reader, out-of-order
// bytes into the receive buffer at their place (RFC 9293 §3.10.7.4, seventh and eighth).
func (c *Conn) receive(s *segment) {
	seq, data := s.seq, s.payload
	fin := s.flags&flagFIN != 0
	// Trim what we already have.
	if seqLT(seq, c.rcvNxt) {
		if len(data) > 0 {
			// RFC 2883 §4 (D-SACK): tell the sender what arrived twice.
			c.dsack, c.dsackOn = span{seq, seqMin(seq+uint32(len(data)), c.rcvNxt)}, c.sackOK
		}
		d := int(c.rcvNxt - seq)
		if d > len(data) {
			if fin && d == len(data)+1 {
				fin = false // a retransmitted FIN we already took
			}
			data = data[:0]
			seq = c.rcvNxt
		} else {
			data, seq = data[d:], c.rcvNxt
		}
		c.ackNow = true
	}
	if c.tsOK && len(data) > 0 && s.opts.HasTimestamps && s.opts.TSEcr != 0 && c.rcvAutoMax > c.rcvBufMax {
		// The receiver's RTT for auto-tuning (as Linux's tcp_rcv_rtt_measure_ts), its
		// minimum: the buffer is to cover the path's bandwidth-delay product, not the
		// delay of the queues the sender builds (which would feed itself).
		if d := int32(c.tsNow() - s.opts.TSEcr); d >= 0 {
			if r := time.Duration(d) * time.Millisecond; !c.rcvRTTOK || r < c.rcvRTT {
				c.rcvRTT, c.rcvRTTOK = r, true // 0: below the clock's resolution
			}
		}
	}
	// Trim to the window and to the buffer.
	off := int(seq - c.rcvNxt)
	limit := c.rcvBufMax + 1<<c.rcvWscale
	room := min(int(c.rcvWnd()), limit-c.rcvBuf.n) - off
	if room < len(data) {
		data, fin = data[:max(room, 0)], false
		c.ackNow = true
	}
	if len(data) > 0 && off > 0 {
		if c.oooDuplicate(seq, seq+uint32(len(data))) {
			c.ackNow = true
			return
		}
		// The stack-wide out-of-order cap: drop and count, the sender will resend.
		if c.p.oooBytes.Load()+int64(len(data)) > int64(c.p.cfg.MaxOutOfOrder) {
			c.p.Stats.OFODrops.Add(1)
			c.ackNow = true
			return
		}
	}
	if len(data) > 0 {
		keep := c.rcvBuf.n + c.oooExtent()
		c.rcvBuf.reserve(c.rcvBuf.n+off+len(data), limit, keep)
		c.rcvBuf.writeAt(data, c.rcvBuf.n+off)
		if off == 0 {
			c.rcvBuf.n += len(data)
			c.rcvNxt += uint32(len(data))
			c.rcvPeak = max(c.rcvPeak, c.rcvBuf.n)
			if c.nooo > 0 {
				c.mergeOOO()
				c.syncOOO()
				c.ackNow = true // RFC 5681 §4.2: ACK at once when a hole fills
			}
			c.ackPending++
			if c.ackPending >= 2 {
				c.ackNow = true // RFC 5681 §4.2: at least every second full segment
			}
			if c.quickAcks > 0 {
				// Quick-ack at the start (as Linux's quickack mode): a sender in slow
				// start grows cwnd per ACK, so delaying ACKs would slow it down.
				c.quickAcks--
				c.ackNow = true
			}
		} else {
			c.addOOO(seq, seq+uint32(len(data)))
			c.syncOOO()
			c.ackNow = true // RFC 5681 §4.2: out of order, a duplicate ACK at once
		}
		if c.rdShut {
			c.rcvBuf.consume(c.rcvBuf.n)
		}
		c.cond.Broadcast()
	}
	if fin {
		if finSeq := seq + uint32(len(data)); finSeq == c.rcvNxt {
			c.receiveFIN()
		} else {
			c.oooFin, c.oooFinSeq = true, finSeq
			c.ackNow = true
		}
	} else if c.oooFin && c.oooFinSeq == c.rcvNxt {
		c.receiveFIN()
	}
}

func seqMin(a, b uint32) uint32 { return min32seq(a, b) }

// oooDuplicate reports whether [start, end) is already held out of order; if so it owes
// the sender a D-SACK for it (RFC 2883 §4).
func (c *Conn) oooDuplicate(start, end uint32) bool {
	for i := 0; i < c.nooo; i++ {
		if r := c.ooo[i]; seqGEQ(start, r.start) && seqLEQ(end, r.end) {
			c.dsack, c.dsackOn = span{start, end}, c.sackOK
			c.oooFront(i) // RFC 2883 §4: the second block holds the first
			return true
		}
	}
	return false
}

// oooFront moves range i to the front: SACK blocks go most recent first (RFC 2018 §4).
func (c *Conn) oooFront(i int) {
	r := c.ooo[i]
	copy(c.ooo[1:i+1], c.ooo[:i])
	c.ooo[0] = r
}

// syncOOO brings the stack-wide out-of-order byte count up to date with this connection's
// ranges.
func (c *Conn) syncOOO() {
	held := 0
	for i := 0; i < c.nooo; i++ {
		held += int(c.ooo[i].end - c.ooo[i].start)
	}
	if d := held - c.oooHeld; d != 0 {
		c.p.oooBytes.Add(int64(d))
		c.oooHeld = held
	}
}

// releaseOOO gives the connection's out-of-order bytes back to the stack-wide cap.
func (c *Conn) releaseOOO() {
	c.nooo = 0
	c.syncOOO()
}

func (c *Conn) oooExtent() int {
	e := 0
	for i := 0; i < c.nooo; i++ {
		e = max(e, int(c.ooo[i].end-c.rcvNxt))
	}
	return e
}

// addOOO records [start, end) as held out of order, merging with neighbours. When the
// table is full the range is forgotten (its bytes will come again).
func (c *Conn) addOOO(start, end uint32) {
	for i := 0; i < c.nooo; i++ {
		r := &c.ooo[i]
		if seqLEQ(start, r.end) && seqGEQ(end, r.start) {
			if seqLT(start, r.start) {
				r.start = start
			}
			if seqGT(end, r.end) {
				r.end = end
			}
			// Absorb later ranges that now overlap.
			for j := 0; j < c.nooo; j++ {
				if j == i {
					continue
				}
				o := c.ooo[j]
				if seqLEQ(r.start, o.end) && seqGEQ(r.end, o.start) {
					r.start = min32seq(r.start, o.start)
					r.end = seqMax(r.end, o.end)
					c.ooo[j] = c.ooo[c.nooo-1]
					c.nooo--
					if i == c.nooo {
						i = j
						r = &c.ooo[i]
					}
					j = -1
				}
			}
			c.oooFront(i)
			return
		}
	}
	if c.nooo < maxOOO {
		copy(c.ooo[1:c.nooo+1], c.ooo[:c.nooo])
		c.ooo[0] = span{start, end}
		c.nooo++
	}
}

func min32seq(a, b uint32) uint32 {
	if seqLT(a, b) {
		return a
	}
	return b
}

// mergeOOO moves out-of-order ranges that now touch rcvNxt into the readable data.
func (c *Conn) mergeOOO() {
	for moved := true; moved; {
		moved = false
		for i := 0; i < c.nooo; i++ {
			r := c.ooo[i]
			if seqLEQ(r.start, c.rcvNxt) {
				if seqGT(r.end, c.rcvNxt) {
					c.rcvBuf.n += int(r.end - c.rcvNxt)
					c.rcvNxt = r.end
				}
				c.ooo[i] = c.ooo[c.nooo-1]
				c.nooo--
				moved = true
				break
			}
		}
	}
}

// receiveFIN processes the peer's FIN once everything before it has arrived.
func (c *Conn) receiveFIN() {
	c.oooFin = false
	c.rcvNxt++
	c.finRcvd = true
	c.ackNow = true
	switch c.state {
	case StateSynReceived, StateEstablished:
		c.setState(StateCloseWait)
	case StateFinWait1:
		if c.finQueued && seqGT(c.sndUna, c.finSeq) {
			c.enterTimeWait()
		} else {
			c.setState(StateClosing)
		}
	case StateFinWait2:
		c.enterTimeWait()
	}
	c.cond.Broadcast()
}

// enterTimeWait holds the 4-tuple for 2*MSL (RFC 9293 §3.6.1), on the same Conn with its
// buffers released.
func (c *Conn) enterTimeWait() {
	c.setState(StateTimeWait)
	c.timeWait.Store(true)
	c.twStart = c.p.clk.Now()
	c.sndBuf.free()
	if c.userClosed {
		c.rcvBuf.free()
	}
	if c.dackOn {
		c.dackOn = false
		c.dack.Stop()
	}
	c.arm(timerTimeWait, c.p.cfg.TimeWait)
	c.cond.Broadcast()
}
