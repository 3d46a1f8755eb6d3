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
	if c.state != StateSynSent && c.state != StateClosed && c.p.synFinDropped(s) {
		return true // SYN+FIN+ACK: only a SYN-ACK in SYN-SENT may carry FIN (parse)
	}
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
		// A TSecr that echoes no TSval of our SYNs (older than the first, or from the
		// future) marks an old or forged segment: answered as an unacceptable ACK, the
		// connection staying in SYN-SENT, as Linux's tcp_rcv_synsent_state_process
		// (PAWSActiveRejected; RFC 7323 §5's PAWS, before TS.Recent exists).
		if e := s.opts.TSEcr; c.p.timestamps() && s.opts.HasTimestamps && e != 0 && (seqLT(e, c.synTSVal) || seqGT(e, c.tsNow())) {
			if s.flags&flagRST == 0 {
				c.p.sendRST(c.local.Addr(), c.remote.Addr(), c.local.Port(), c.remote.Port(), s.ack, 0, false)
			}
			return
		}
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
	c.initRecv(s.seq)
	c.negotiate(&s.opts)
	c.ecnSynSent(s)
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
	// The SYN and the data it carried count as one delivered segment, as Linux's
	// tcp_rcv_fastopen_synack counts them.
	c.delivered++
	if c.rttOn && seqGT(s.ack, c.rttSeq) {
		c.rttOn = false
		c.rttSample(c.now().Sub(c.rttStart))
	}
	// The SYN-ACK's own text and FIN are taken when it answers a Fast Open SYN whose
	// data it acknowledged (or that had none), as Linux's tcp_rcv_fastopen_synack: RFC
	// 9293 §3.10.7.3 goes on to the text in SYN-SENT, and a Fast Open server may send
	// data in its SYN-ACK (RFC 7413 §4.2.2). Otherwise (not Fast Open, or our SYN's data
	// must go again) it is dropped, the ACK asking for it again.
	takeText := c.foSend && (!c.synData || c.sndUna == c.sndMax) && (len(s.payload) > 0 || s.flags&flagFIN != 0)
	c.tsoUpdate() // Linux's tcp_ack of the SYN-ACK sets the first pacing rate (autosize.go)
	pending := c.synAckFastOpen(s)
	// Linux's tcp_finish_connect: the SYN-ACK counts as received data (pingpong.go).
	c.noteDataRcvd(c.writePending)
	c.establish()
	c.disarm()
	if takeText {
		c.synAckText(s)
	}
	if pending {
		c.synDataResend()
		c.output() // the data of a Fast Open SYN the server did not take, with our ACK
	}
	switch {
	case !pending && c.writePending && c.p.cfg.DelayedACK >= 0:
		// A writer waits with data: it carries the ACK (SetWritePending), or the
		// delayed-ACK timer sends it, the SYN-ACK's text acknowledged with it.
		c.ackPending, c.ackNow = 1, false
		c.finishInput()
	case !pending || c.ackPending > 0 || c.lastAckSent != c.rcvNxt:
		c.sendAck()
	}
	c.cond.Broadcast()
}

// synAckText takes a SYN-ACK's text and FIN (inputSynSent), within the window our SYN
// offered: that window was not scaled (RFC 7323 §2.2) and nothing was advertised since.
func (c *Conn) synAckText(s *segment) {
	c.rcvAdv = c.rcvNxt + uint32(min(max(c.rcvBufMax-c.rcvBuf.n, 0), 0xffff))
	s.seq++ // past the SYN, which initRecv took
	s.len--
	s.flags &^= flagSYN
	if len(s.payload) > 0 {
		c.statsDataRecv(len(s.payload))
	}
	c.receive(s)
}

func (c *Conn) establish() {
	c.setState(StateEstablished)
	c.synced = true
	c.statsEstablished()
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
		// The SYN is a duplicate all the same: Linux's tcp_data_queue acknowledges it at
		// once, in a D-SACK block (RFC 2883 §4) when SACK is on.
		s.seq++
		s.len--
		s.flags &^= flagSYN
		s.unscaled = true // RFC 7323 §2.2: a SYN's window is never scaled
		c.dsack, c.dsackOn = span{c.irs, c.irs + 1}, c.sackOK
		c.ackNow = true
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
		// A Fast Open child's send queue starts after its SYN (fastopen.go): the ACK of the
		// SYN alone acknowledges SND.UNA.
		if (!seqGT(s.ack, c.sndUna) && !(c.tfoChild && s.ack == c.sndUna)) || seqGT(s.ack, c.sndMax) {
			c.p.sendRST(c.local.Addr(), c.remote.Addr(), c.local.Port(), c.remote.Port(), s.ack, 0, false)
			return
		}
		// A Fast Open child is in the accept queue since its SYN (fastopen.go): it must
		// not be queued again, nor wait for room its own entry takes.
		if l := c.listener; l != nil && !c.tfoChild {
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
			// New data for a socket nobody can read any more: the connection ends, and the
			// segment is answered as if it found none (RFC 9293 §3.10.7.1's RST, seq from
			// its ACK), as Linux's tcp_rcv_state_process then tcp_v4_send_reset.
			c.p.resetClosed(s)
			c.finish(nil)
			return
		}
		if len(s.payload) > 0 {
			c.statsDataRecv(len(s.payload))
		}
		if c.ecn.ok && len(s.payload) > 0 {
			c.ecnReceive(s) // RFC 3168 §6.1.3 (ecn.go)
		}
		c.urgentInput(s) // RFC 9293 §3.10.7.4, sixth (urgent.go)
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
	if c.listener != nil && c.state != StateSynReceived {
		// In the accept queue: a reset connection stays there, closed, its data still
		// readable, as Linux's (the accept queue holds the child socket itself).
		c.listener = nil
	}
	switch c.state {
	case StateSynReceived:
		if c.tfoChild {
			// A Fast Open child is in the accept queue already (fastopen.go): it stays
			// there, its SYN's data readable, then the reset (as Linux).
			c.listener = nil
			c.fail(syscall.ECONNRESET)
			return
		}
		if !c.active {
			c.finish(nil) // back to LISTEN: the listener never saw this connection
			return
		}
		c.fail(syscall.ECONNREFUSED)
	case StateEstablished, StateFinWait1, StateFinWait2:
		c.fail(syscall.ECONNRESET)
	case StateCloseWait:
		// As Linux's tcp_reset: the peer had closed its side already, so the reset is
		// reported as EPIPE to the next write; reads go on returning EOF.
		c.p.Stats.EstabResets.Add(1)
		c.fail(syscall.EPIPE)
	default:
		c.finish(nil)
	}
}

// enterTimeWait holds the 4-tuple for 2*MSL (RFC 9293 §3.6.1), on the same Conn with its
// buffers released.
//
// At most Config.MaxTimeWait connections of the stack are in TIME-WAIT at once, as
// Linux's tcp_max_tw_buckets: beyond it the connection closes at once (after the ACK the
// peer's FIN is owed), counted in TimeWaitOverflows. The peer is unharmed; only the
// protection from old duplicates that 2*MSL gives this 4-tuple is lost.
func (c *Conn) enterTimeWait() {
	if c.p.twCount.Add(1) > int64(max(c.p.cfg.MaxTimeWait, 0)) {
		c.p.twCount.Add(-1)
		c.p.Stats.TimeWaitOverflows.Add(1)
		if c.ackNow {
			c.sendAck()
		}
		c.finish(nil)
		return
	}
	c.setState(StateTimeWait)
	c.timeWait.Store(true)
	c.twStart = c.p.clk.Now()
	c.sndBuf.free()
	c.sb = scoreboard{} // everything is acknowledged: the scoreboard's storage goes too
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
