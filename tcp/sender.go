package tcp

import (
	"syscall"
	"time"

	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// sender is the send side of a connection: the send sequence space, the send buffer and
// its segmentation, congestion control and loss recovery (NewReno's in recovery.go; with
// SACK the scoreboard, RACK and tail loss probes in sack.go). It is embedded in Conn and
// guarded by Conn.mu.
type sender struct {
	// Send sequence space (RFC 9293 §3.3.1). The send buffer holds the bytes from sndUna
	// on; sndMax is the highest sequence number sent so far (sndNxt goes back to sndUna on
	// a retransmission timeout).
	iss, sndUna, sndNxt, sndMax uint32
	sndWnd, maxSndWnd           uint32
	sndWl1, sndWl2              uint32
	sndWscale                   uint8
	wsPeer                      bool // the peer's SYN offered window scale
	sndBuf                      ring
	sndBufMax                   int
	sndAutoMax                  int // the limit auto-tuning may grow sndBufMax to (0: fixed)
	finQueued                   bool
	finSeq                      uint32 // sequence number of our FIN, once queued
	mss                         int    // effective send MSS
	gsoMax                      int    // largest super-segment the route takes (transport.GSONetwork); 0: none
	segPay                      int    // payload per segment of the super-segment being built
	burstEnd                    bool   // the segment being built ends output's burst (PSH)
	rtxGSO                      bool   // retransmitLost sends a run of lost segments as one super-segment
	tsoSegs                     int    // autosize.go: segments per super-segment of new data (0: no limit)
	minRTT                      time.Duration
	sndSml                      uint32 // end of the last new segment shorter than MSS (Minshall's Nagle)
	noGather                    bool   // the route's link does not take super-segments in pieces (EOPNOTSUPP)
	// cork.go: TCP_CORK, the last write's MSG_MORE, a one-time push through either
	// (TCP_NODELAY set while corked).
	cork, more, pushOnce bool
	// moreNow: the write under way has MSG_MORE. It corks only that write's output, as
	// Linux's tcp_push passes MSG_MORE as TCP_NAGLE_CORK for the one call: what it left
	// behind goes out on the next ACK by the socket's own Nagle and cork settings. more
	// stays set until a write without MSG_MORE, so that such data carries no PSH.
	moreNow bool
	// sendopts.go: the TCP_NOTSENT_LOWAT set on the connection (0: Config's), and where
	// the chunk of unsent data being filled began (the write queue's tail skb on Linux).
	lowat    int
	lowChunk uint32
	// sendopts.go: MSG_EOR record ends, ascending sequence numbers after SND.UNA: no
	// segment spans one (Linux's tcp_skb_can_collapse_to).
	eor       []uint32
	probePush bool // onPersist's send: PSH as Linux's tcp_write_wakeup
	advMSS    int  // the MSS we announce: route MTU minus headers
	// Path MTU discovery (conn.go's icmpError): the MSS as negotiated, and when an ICMP
	// error last lowered mss below it (zero: not lowered).
	mssNeg int
	pmtuAt time.Time

	// Congestion control and loss recovery.
	cc         CongestionControl
	ccName     string // SetCongestionControl's choice; "" means Config's (cc.go)
	dupAcks    int
	inRecovery bool
	recover    uint32
	retrans    uint64 // segments retransmitted, for Sockets
	// rtoRecovery: the recovery began with a timeout (cwnd slow-starts, RFC 6675 §5.1).
	rtoRecovery bool
	// RFC 6937 proportional rate reduction during SACK recovery (sack.go, prrUpdate):
	// bytes delivered to the peer and sent by us since recovery began, the flight then,
	// and the limit for pipe until the next ACK.
	prrDelivered, prrOut, prrRecoverFS, prrLimit int
	// prrForced: the bytes of the retransmission that entered recovery, sent before the
	// ACK's prrUpdate (recovery.go). lostMarks counts records marked lost (markLost), so
	// that prrUpdate knows whether an ACK declared new losses.
	prrForced int
	lostMarks uint32

	// The scoreboard and RACK-TLP state (sack.go), used once SACK is negotiated.
	sb                scoreboard
	rackValid         bool
	rackReord         bool // reordering seen (RFC 8985 §6.1 step 3)
	rackReoMult       int
	rackXmit          time.Duration
	rackEnd, rackFack uint32
	rackRTT           time.Duration
	rackMinRTT        time.Duration
	reoAt             time.Duration // when the RACK reordering timer is due; 0: not needed
	tlpOut            bool          // a tail loss probe is unanswered

	connStats // statistics for Info (info.go)
	cwndUsage // cwnd validation (cwnd_limited.go)
}

// emit builds one segment in a scratch buffer and hands it to the network: payload n
// bytes from the send buffer at seq. Timestamps and SACK blocks are added here unless the
// caller gives the options (a SYN). The caller holds c.mu.
func (c *Conn) emit(seq uint32, flags uint8, n int, opts *wire.TCPOptions) {
	var o wire.TCPOptions
	if opts == nil && (c.tsOK || c.sackOK) {
		if c.tsOK {
			o.HasTimestamps, o.TSVal, o.TSEcr = true, c.tsNow(), c.tsRecent
		}
		if c.sackOK && flags&wire.TCPFlagACK != 0 && (c.nooo > 0 || c.dsackOn) {
			c.sackBlocks(&o)
		}
		opts = &o
	}
	ecn := transport.NotECT
	if c.ecn.ok && flags&wire.TCPFlagSYN == 0 {
		ecn = c.ecnOut(seq, &flags, n) // ecn.go: ECE, CWR, ECT(0) on new data
	}
	f := wire.TCPFields{
		SrcPort: c.local.Port(),
		DstPort: c.remote.Port(),
		Seq:     seq,
		Flags:   flags,
		Options: opts,
	}
	if flags&wire.TCPFlagACK != 0 {
		f.Ack = c.rcvNxt
		f.Window = c.windowField(flags&wire.TCPFlagSYN != 0)
		c.lastAckSent = c.rcvNxt
		c.ackPending, c.ackNow = 0, false
		if c.dackOn {
			c.dackOn = false
			c.dack.Stop()
		}
	} else if flags&wire.TCPFlagSYN != 0 {
		// The active-open SYN: the window of the receive buffer, never scaled (RFC 7323
		// §2.2), as Linux's tcp_select_initial_window. RCV.NXT is not known yet, so
		// nothing is recorded as advertised: the first ACK sets RCV.ADV.
		f.Window = uint16(min(max(c.rcvBufMax-c.rcvBuf.n, 0), 0xffff))
	}
	hl := f.HeaderLen()
	if c.gsoMax > 0 && n > 0 && c.p.gatherNet != nil && !c.noGather {
		// The payload goes from the send buffer to the link as it lies in the ring (one
		// piece, or two where it wraps), behind a header built here: no copy of it into a
		// packet (transport.GSOGatherNetwork). The rest is as below.
		mss := c.segPay
		if mss == 0 || n <= mss {
			mss = n
		}
		bp := c.p.scratch(wire.NetworkHeadroom + hl)
		b := *bp
		f.Encode(b[wire.NetworkHeadroom:])
		p1, p2 := c.sndBuf.slices(int(seq-c.sndUna), n)
		err := c.p.gatherNet.OutputGSOGather(c.local.Addr(), c.remote.Addr(), b[:wire.NetworkHeadroom+hl], p1, p2, mss, ecn)
		c.p.release(bp)
		switch {
		case err == syscall.EOPNOTSUPP:
			c.noGather = true // a link that does not gather: the joined packet from now on
		case err == nil || n > mss:
			if err != nil {
				c.gsoMax = 0 // the route changed under us: segment ourselves from now on
			}
			c.p.Stats.OutSegs.Add(uint64((n + mss - 1) / mss))
			return
		default:
			// One segment the route would not take whole: send it the ordinary way.
			c.gsoMax = 0
		}
	}
	total := wire.NetworkHeadroom + hl + n
	bp := c.p.scratch(total)
	b := *bp
	f.Encode(b[wire.NetworkHeadroom:])
	if n > 0 {
		c.sndBuf.readAt(b[wire.NetworkHeadroom+hl:total], int(seq-c.sndUna))
	}
	if c.gsoMax > 0 && n > 0 {
		// Through the GSO link: a super-segment is cut there, copying our header into
		// each piece, and the link computes every piece's checksum (link.GSOEndpoint), a
		// single segment's too (the kernel behind a TUN device then needs no check of
		// its own): no pass over the payload here.
		mss := c.segPay
		if mss == 0 || n <= mss {
			mss = n
		}
		var err error
		if ecn != transport.NotECT {
			err = c.p.ecnNet.OutputGSOECN(c.local.Addr(), c.remote.Addr(), b[:total], mss, ecn)
		} else {
			err = c.p.net.(transport.GSONetwork).OutputGSO(c.local.Addr(), c.remote.Addr(), b[:total], mss)
		}
		if err == nil || n > mss {
			if err != nil {
				c.gsoMax = 0 // the route changed under us: segment ourselves from now on
			}
			c.p.release(bp)
			c.p.Stats.OutSegs.Add(uint64((n + mss - 1) / mss))
			return
		}
		// One segment the route would not take whole: send it the ordinary way.
		c.gsoMax = 0
	}
	wire.SetTCPChecksum(b[wire.NetworkHeadroom:total], c.local.Addr(), c.remote.Addr())
	if ecn != transport.NotECT {
		c.p.ecnNet.OutputECN(c.local.Addr(), c.remote.Addr(), wire.ProtoTCP, b[:total], ecn)
	} else {
		c.p.net.Output(c.local.Addr(), c.remote.Addr(), wire.ProtoTCP, b[:total])
	}
	c.p.release(bp)
	c.p.Stats.OutSegs.Add(1)
}

// sendData sends one segment at seq with up to limit bytes from the send buffer, with FIN if
// it reaches our FIN. It returns the sequence space used.
func (c *Conn) sendData(seq uint32, limit int) int {
	off := int(seq - c.sndUna)
	n := min(max(c.sndBuf.n-off, 0), limit)
	pay := c.mss
	if sl := c.sackOptLen(); sl > 0 {
		pay = max(c.mss-sl, 1) // SACK blocks share the segment's option space
	}
	c.segPay = 0
	recEnd := false
	if len(c.eor) > 0 {
		// MSG_EOR (sendopts.go): a segment ends at a record's end, and is pushed there
		// as Linux pushes each send(2)'s last byte.
		if l := c.eorLimit(seq); l > 0 && l <= n {
			n, recEnd = l, true
		}
	}
	if n > pay {
		if c.gsoMax > 0 && (seq == c.sndMax || c.rtxGSO) {
			// New data as a super-segment of whole segments (and a last partial one);
			// likewise a run of lost segments retransmitted together.
			c.segPay = pay
		} else {
			n, recEnd = pay, false // a record's head: its end is in a later segment
		}
	}
	flags := wire.TCPFlagACK
	fin := c.finQueued && seq+uint32(n) == c.finSeq
	if fin {
		flags |= wire.TCPFlagFIN
	}
	if n == 0 && !fin {
		return 0
	}
	// PSH (RFC 9293 §3.9.1 SEND): on the segment that empties the send queue, and, as
	// Linux marks it, on the last segment of each burst of new data (its TSO burst: the
	// skb split off the write queue keeps PSH on its tail, tso_fragment).
	if n > 0 && (recEnd || (c.probePush && off+n == c.sndBuf.n) || (!c.more && (off+n == c.sndBuf.n || (c.burstEnd && seq == c.sndMax)))) {
		flags |= wire.TCPFlagPSH
	}
	used := n
	if fin {
		used++
	}
	end := seq + uint32(used)
	if c.inRecovery {
		c.prrOut += n // RFC 6937: prr_out counts retransmissions and new data alike
	}
	if seqLT(seq, c.sndMax) {
		// A retransmission: Karn's rule, no RTT sample from it (RFC 6298 §3).
		c.rttOn = false
		segs := 1
		if c.segPay > 0 {
			segs = (n + c.segPay - 1) / c.segPay
		}
		c.retrans += uint64(segs)
		c.p.Stats.RetransSegs.Add(uint64(segs))
	} else {
		if !c.rttOn {
			c.rttOn, c.rttSeq, c.rttStart = true, seq, c.now()
		}
		if n > 0 {
			c.noteDataSent()
			if n%c.mss != 0 {
				c.sndSml = seq + uint32(n) // Minshall's Nagle (output)
			}
		}
		if c.sackOK {
			now := c.mono()
			for s := seq; seqLT(s, end); {
				e := end
				if c.segPay > 0 && int(end-s) > c.segPay {
					e = s + uint32(c.segPay) // one record per segment the link will cut
				}
				c.sb.push(s, e, now, c.mss)
				s = e
			}
		}
	}
	c.emit(seq, flags, n, nil)
	c.segPay = 0
	if n > 0 {
		c.lastDataSent = c.now()
	}
	if seqGT(end, c.sndMax) {
		c.sndMax = end
	}
	return used
}

// output sends what the windows allow: new data, segmented by MSS, with sender SWS
// avoidance (RFC 9293 §3.8.6.2.1) and Nagle's algorithm when NoDelay is off; then the FIN.
func (c *Conn) output() {
	if !c.state.sending() && !(c.tfoChild && c.state == StateSynReceived) {
		return
	}
	if c.sackOK && c.sb.lost > 0 {
		c.retransmitLost(false)
	}
	// What held new data back when the loop ends: the peer's window (for the rwnd
	// chronograph, info.go) and cwnd (for cwnd validation, cwnd_limited.go).
	queued, sent, rwndLimited, cwndRoom := false, false, false, 0
	for {
		bufEnd := c.sndUna + uint32(c.sndBuf.n)
		pending := 0
		if seqLT(c.sndNxt, bufEnd) {
			pending = int(bufEnd - c.sndNxt)
		}
		finPending := c.finQueued && seqLEQ(c.sndNxt, c.finSeq)
		inFlight := int(c.sndNxt - c.sndUna)
		if c.sackOK {
			// RFC 6675 §5: the congestion window limits pipe, which leaves out what the
			// peer SACKed and what is lost.
			cwndRoom = c.cwndLimit() - c.pipe()
		} else {
			cwndRoom = c.cc.Window() - inFlight
		}
		if pending == 0 && !finPending {
			rwndLimited = false
			break
		}
		queued = true
		usable := min(int(c.sndWnd)-inFlight, cwndRoom)
		// Linux's tcp_write_xmit: with room in cwnd, the send window stops a segment
		// that does not fit in it.
		rwndLimited = pending > 0 && cwndRoom > 0 && int(c.sndWnd)-inFlight < min(pending, c.mss)
		seg, tsoCut := c.mss, false
		if c.gsoMax > 0 && c.sndNxt == c.sndMax {
			// GSO: as many whole segments as the windows allow in one super-segment, and
			// the autosized number at most (autosize.go).
			hdr := wire.TCPMinHeaderLen + tsOptLen + c.sackOptLen()
			segs := min(usable/c.mss, (c.gsoMax-hdr)/c.mss)
			if c.tsoSegs > 0 && c.tsoSegs < segs {
				segs, tsoCut = c.tsoSegs, true
			}
			seg = max(c.mss, segs*c.mss)
		}
		n := min(pending, usable, seg)
		if pending > 0 {
			if n <= 0 {
				break
			}
			l := 0
			if len(c.eor) > 0 {
				l = c.eorLimit(c.sndNxt)
			}
			if l > 0 && l <= n && l < pending {
				// A record ends within reach and more follows it: the record's tail goes as
				// it is, as Linux tests Nagle and the cork only on the write queue's last
				// skb (tcp_write_xmit).
				n = l
			} else if n < c.mss && n < pending && n < int(c.maxSndWnd/2) {
				break // SWS avoidance: wait for a bigger window
			}
			if n < c.mss && n == pending && !c.nodelay && inFlight > 0 && seqGT(c.sndNxt+uint32(n), c.sndMax) &&
				seqGT(c.sndSml, c.sndUna) && seqLEQ(c.sndSml, c.sndNxt) {
				// Nagle (RFC 9293 §3.7.4), for new data only (what was sent once goes again
				// as it fits), in Minshall's variant as Linux's tcp_nagle_check: a short
				// segment waits while an earlier short one is unacknowledged, not whenever
				// data is (the tail of a burst the autosizing cut, autosize.go, goes with it).
				break
			}
			if (c.cork || c.moreNow) && !c.pushOnce && !c.finQueued && n == pending {
				if n < c.mss {
					break // TCP_CORK / MSG_MORE (cork.go): only full segments until uncorked
				}
				n -= n % c.mss // a super-segment's partial tail waits too
			}
		}
		// The burst ends here unless the windows leave room for another full segment of
		// what is queued. In loss recovery new data goes out a segment at a time as the
		// ACKs allow, and Linux marks none of those (the write's skb is split from its
		// head).
		// An autosized super-segment ends a burst of its own: Linux sends each with PSH.
		c.burstEnd = !c.inRecovery && (n >= pending || usable-n < c.mss || (tsoCut && n == seg))
		used := c.sendData(c.sndNxt, max(n, 0))
		c.burstEnd = false
		if used == 0 {
			break
		}
		sent = true
		c.sndNxt += uint32(used)
	}
	if queued {
		if rwndLimited {
			c.chronoStart(chronoRwnd)
		} else {
			c.chronoStop(chronoRwnd)
		}
	}
	if limited := cwndRoom < c.mss; sent || limited {
		c.cwndValidate(limited)
	}
	if c.lowat > 0 || c.p.cfg.NotSentLowat > 0 {
		// TCP_NOTSENT_LOWAT (sendopts.go): sending is what lowers the unsent data, so
		// a writer held back by the mark is woken here, not by the ACK that freed space.
		if c.lowatWritable() {
			c.cond.Broadcast()
		}
	}
	c.updateTimer()
}

// sndAutotune grows the send buffer to twice the window the sender can use (Linux's
// tcp_sndbuf_expand), so that a write can always fill the path.
func (c *Conn) sndAutotune() {
	if c.sndAutoMax <= c.sndBufMax {
		return
	}
	if want := 2 * min(c.cc.Window(), int(c.maxSndWnd)); want > c.sndBufMax {
		c.sndBufMax = min(want, c.sndAutoMax)
		c.cond.Broadcast()
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
	c.lastAckRecv = c.now()
	flight, synAck := c.sndMax-c.sndUna, c.sndUna == c.iss
	wnd := s.window(c.sndWscale)
	advanced := seqGT(ack, c.sndUna)
	delivered := 0
	lostMarks := c.lostMarks
	if c.sackOK {
		// Scoreboard first: RACK learns from what this ACK delivered (sack.go).
		sacked := c.sb.sacked
		c.sackInput(s, advanced)
		delivered = c.sb.sacked - sacked // RFC 6937: DeliveredData = Δsnd.una + ΔSACKd
		if advanced {
			delivered += int(ack - c.sndUna)
		}
	}
	if advanced || delivered > 0 {
		c.statsDelivered(ack, delivered)
	}
	if c.ecn.ok {
		c.ecnAck(s) // RFC 3168 §6.1.2 (ecn.go): before the ACK's cwnd growth, on the flight it found
	}
	if advanced {
		c.ackNew(ack, s)
	} else if ack == c.sndUna && len(s.payload) == 0 && s.flags&(flagSYN|flagFIN) == 0 &&
		wnd == c.sndWnd && c.sndMax != c.sndUna {
		c.dupAck()
	}
	if c.sackOK && c.inRecovery && !c.rtoRecovery {
		c.prrUpdate(delivered, advanced, c.lostMarks != lostMarks)
	}
	if seqLT(c.sndWl1, s.seq) || (c.sndWl1 == s.seq && seqLEQ(c.sndWl2, ack)) {
		c.sndWnd, c.sndWl1, c.sndWl2 = wnd, s.seq, ack
		c.maxSndWnd = max(c.maxSndWnd, wnd)
		if wnd > 0 {
			c.pbackoff = 0
		}
	}
	if flight > 0 && !synAck {
		// Linux's tcp_ack updates the pacing rate only with something outstanding, and
		// not on a passive open's handshake ACK (its SYN-ACK is the request's, not the
		// socket's): the first burst after accept goes at full size.
		c.tsoUpdate()
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
	if len(c.eor) > 0 {
		c.eorAcked()
	}
	if !c.pmtuAt.IsZero() && c.now().Sub(c.pmtuAt) >= pmtuExpires {
		c.pmtuRecover()
	}
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
	if c.inRecovery {
		c.recoveryAck(ack, acked, flight)
	} else {
		c.dupAcks = 0
		// Grow cwnd only when it limits the sender (RFC 7661 §4.1's spirit; Linux's
		// tcp_is_cwnd_limited, cwnd_limited.go).
		if c.cwndLimited() && !c.ecn.reducing {
			c.cc.OnAck(acked, flight)
		}
	}
	if c.sndUna == c.sndMax {
		c.disarm()
		c.chronoStop(chronoBusy)
	} else {
		c.armLoss() // RFC 6298 §5.3; RACK-TLP's timers when SACK is on
	}
	if c.sndWritable() || c.sndUna == c.sndMax {
		if c.chronoKind == chronoSndbuf {
			c.chronoStop(chronoSndbuf)
		}
		c.cond.Broadcast()
	}
}

// sndWritable reports whether a writer blocked on a full send buffer should be woken: a
// third of the buffer is free, as Linux's sk_stream_write_space decides. Waking it for
// every ACK that frees a few segments would cost a context switch and a contended lock
// per ACK, and let it copy a few kilobytes each time.
func (s *sender) sndWritable() bool { return s.sndBufMax-s.sndBuf.n >= s.sndBufMax/3 }

// initSend starts the send sequence space at our initial sequence number, which the SYN
// takes (RFC 9293 §3.3.1).
func (s *sender) initSend(iss uint32) {
	s.iss = iss
	s.sndUna, s.sndNxt, s.sndMax, s.recover = iss, iss+1, iss+1, iss
	s.sndSml = iss
}
