package tcp

import (
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/wire"
)

// maxOOO bounds the out-of-order ranges a connection remembers; together with the
// receive buffer it bounds reassembly memory.
const maxOOO = 16

type span struct{ start, end uint32 }

// receiver is the receive side of a connection: the receive sequence space, the receive
// buffer with the out-of-order ranges reassembled in it, the window we offer and its
// auto-tuning, and the ACK policy (delayed ACKs, quick ACKs, D-SACK). It is embedded in
// Conn and guarded by Conn.mu.
type receiver struct {
	// Receive sequence space.
	irs, rcvNxt uint32
	rcvAdv      uint32 // right edge of the window last advertised
	rcvWscale   uint8
	rcvBuf      ring
	rcvBufMax   int
	// Auto-tuning (Config.RMem): the limit the buffer may grow to (0: fixed), and the
	// receiver's measurement of what the reader takes per RTT.
	rcvAutoMax int
	rcvCopied  int
	rcvSpaceAt time.Time
	rcvRTT     time.Duration // the receiver's RTT estimate from timestamps
	rcvRTTOK   bool
	rcvPeak    int // most unread bytes seen since the last auto-tuning step
	ooo        [maxOOO]span
	nooo       int
	oooFin     bool
	oooFinSeq  uint32
	oooHeld    int // out-of-order bytes counted in the stack-wide cap
	finRcvd    bool

	// ACK policy.
	ackPending int  // in-order segments not yet acknowledged
	ackNow     bool // an ACK must go out when the current input is done
	dack       clock.Timer
	dackOn     bool
	quickAcks  int       // in-order segments still acknowledged at once (as Linux's quickack)
	pingpong   bool      // interactive: no quick ACKs (pingpong.go)
	lastRcvd   time.Time // when data last arrived, for pingpong
	atoOn      bool      // data arrived (or a writer waited): sends may count as replies
	// writePending: SetWritePending's writer waits for the connection.
	writePending bool
	dsack        span // a D-SACK block owed to the peer (RFC 2883)
	dsackOn      bool
	oowLast      time.Time // last ACK sent for an out-of-window segment without data
	// The urgent byte's sequence number while urgOn, until the reader passes it
	// (urgent.go).
	urgSeq uint32
	urgOn  bool
}

// windowField computes the window to advertise and remembers its right edge. Receiver SWS
// avoidance (RFC 9293 §3.8.6.2.2): the right edge moves only when it can move by at least
// min(buffer/2, MSS); it never moves left (RFC 9293 §3.8.6: do not shrink the window).
func (c *Conn) windowField(syn bool) uint16 {
	free := max(c.rcvBufMax-c.rcvBuf.n, 0)
	if syn {
		w := min(free, 0xffff) // RFC 7323 §2.2: the window in a SYN is never scaled
		c.rcvAdv = c.rcvNxt + uint32(w)
		return uint16(w)
	}
	cur := 0
	if seqGT(c.rcvAdv, c.rcvNxt) {
		cur = int(c.rcvAdv - c.rcvNxt)
	}
	w := cur
	if free >= cur+min(c.rcvBufMax/2, c.mss) {
		w = free
	}
	field := min(w>>c.rcvWscale, 0xffff)
	if field<<c.rcvWscale < cur {
		field = min((cur+(1<<c.rcvWscale)-1)>>c.rcvWscale, 0xffff)
	}
	c.rcvAdv = c.rcvNxt + uint32(field<<c.rcvWscale)
	return uint16(field)
}

// rcvWnd is the window currently offered to the peer.
func (rv *receiver) rcvWnd() uint32 {
	if seqGT(rv.rcvAdv, rv.rcvNxt) {
		return rv.rcvAdv - rv.rcvNxt
	}
	return 0
}

// sendAck sends a bare ACK. Its sequence number is SND.MAX, not SND.NXT (as BSD): after a
// timeout SND.NXT goes back, and an ACK numbered below what the peer already has would
// fail its acceptance test, so the acknowledgment in it would be ignored.
func (c *Conn) sendAck() {
	c.emit(c.sndMax, wire.TCPFlagACK, 0, nil)
}

// rcvAutotune grows the receive buffer toward what the reader takes in one RTT, twice
// over (Linux's tcp_rcv_space_adjust, "dynamic right-sizing"): the sender's window can
// double per RTT in slow start, and the window must not be what limits it. The RTT is
// the receiver's own estimate from timestamps when the millisecond clock can resolve it
// (2 ms or more), else SRTT (microseconds, from the handshake at least), else 100 ms: on
// a sub-millisecond path a 1 ms estimate would inflate buffers many times over.
func (c *Conn) rcvAutotune(n int) {
	if c.rcvAutoMax <= c.rcvBufMax {
		return
	}
	c.rcvCopied += n
	now := c.now()
	if c.rcvSpaceAt.IsZero() {
		c.rcvSpaceAt, c.rcvCopied = now, n
		return
	}
	rtt := c.rcvRTT
	if (!c.rcvRTTOK || rtt < 2*time.Millisecond) && c.srtt > 0 {
		rtt = c.srtt
	}
	if rtt == 0 {
		rtt = 100 * time.Millisecond
	}
	if now.Sub(c.rcvSpaceAt) < rtt {
		return
	}
	want := 2*c.rcvCopied + 16*c.advMSS
	peak := c.rcvPeak
	c.rcvSpaceAt, c.rcvCopied, c.rcvPeak = now, 0, 0
	// A reader that left half the buffer unread is what limits the transfer, not the
	// window: a bigger buffer would only hold more unread data (and cost cache).
	if want > c.rcvBufMax && peak <= c.rcvBufMax/2 {
		// Never beyond what the window field can announce with the fixed scale.
		c.rcvBufMax = min(want, c.rcvAutoMax, 0xffff<<c.rcvWscale)
	}
}

// windowUpdate sends an ACK when reading opened the window a lot: from (almost) zero to
// at least an MSS, or to twice what was offered.
func (c *Conn) windowUpdate() {
	if !c.state.receiving() {
		return
	}
	cur := int(c.rcvWnd())
	// The window can open only as far as the window field reaches (RFC 7323 §2.3: 65535
	// shifted by our scale): without window scale a large buffer's free space would make
	// every read look like a doubling, and an update would offer just the bytes read
	// (tcp/ioctl/ioctl-siocinq-fin.pkt: no update after reading 1000 of a 64 KB window).
	free := min(c.rcvBufMax-c.rcvBuf.n, 0xffff<<c.rcvWscale)
	step := min(c.rcvBufMax/2, c.mss)
	// Linux sends an update only when the window left is at most half of the one last
	// advertised (tcp_cleanup_rbuf), which its slowly growing window (rcv_ssthresh)
	// makes safe. With berth's window, which opens to the free buffer at once, that rule
	// stalled the sender: BenchmarkPairTransfer went from ~1,300 to ~70 MB/s (see
	// docs/conformance.md). berth keeps its own rule: an update whenever the window can
	// grow by an MSS and at least double.
	if free-cur >= step && (cur < step || free >= 2*cur) {
		c.sendAck()
	}
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
		c.pingpong = false // the reply missed the delayed ACK (pingpong.go)
		c.sendAck()
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
			c.noteDataRcvd(true)
			if c.quickAcks > 0 && !c.pingpong {
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
func (rv *receiver) oooFront(i int) {
	r := rv.ooo[i]
	copy(rv.ooo[1:i+1], rv.ooo[:i])
	rv.ooo[0] = r
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

func (rv *receiver) oooExtent() int {
	e := 0
	for i := 0; i < rv.nooo; i++ {
		e = max(e, int(rv.ooo[i].end-rv.rcvNxt))
	}
	return e
}

// addOOO records [start, end) as held out of order, merging with neighbours. When the
// table is full the range is forgotten (its bytes will come again).
func (rv *receiver) addOOO(start, end uint32) {
	for i := 0; i < rv.nooo; i++ {
		r := &rv.ooo[i]
		if seqLEQ(start, r.end) && seqGEQ(end, r.start) {
			if seqLT(start, r.start) {
				r.start = start
			}
			if seqGT(end, r.end) {
				r.end = end
			}
			// Absorb later ranges that now overlap.
			for j := 0; j < rv.nooo; j++ {
				if j == i {
					continue
				}
				o := rv.ooo[j]
				if seqLEQ(r.start, o.end) && seqGEQ(r.end, o.start) {
					r.start = min32seq(r.start, o.start)
					r.end = seqMax(r.end, o.end)
					rv.ooo[j] = rv.ooo[rv.nooo-1]
					rv.nooo--
					if i == rv.nooo {
						i = j
						r = &rv.ooo[i]
					}
					j = -1
				}
			}
			rv.oooFront(i)
			return
		}
	}
	if rv.nooo < maxOOO {
		copy(rv.ooo[1:rv.nooo+1], rv.ooo[:rv.nooo])
		rv.ooo[0] = span{start, end}
		rv.nooo++
	}
}

func min32seq(a, b uint32) uint32 {
	if seqLT(a, b) {
		return a
	}
	return b
}

// mergeOOO moves out-of-order ranges that now touch rcvNxt into the readable data.
func (rv *receiver) mergeOOO() {
	for moved := true; moved; {
		moved = false
		for i := 0; i < rv.nooo; i++ {
			r := rv.ooo[i]
			if seqLEQ(r.start, rv.rcvNxt) {
				if seqGT(r.end, rv.rcvNxt) {
					rv.rcvBuf.n += int(r.end - rv.rcvNxt)
					rv.rcvNxt = r.end
				}
				rv.ooo[i] = rv.ooo[rv.nooo-1]
				rv.nooo--
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

// sackBlocks fills the SACK option of an outgoing ACK (RFC 2018 §4): a D-SACK block first
// when a duplicate arrived (RFC 2883 §4), then the out-of-order ranges, most recently
// changed first.
func (rv *receiver) sackBlocks(o *wire.TCPOptions) {
	k := 0
	if rv.dsackOn {
		o.SACK[0] = wire.SACKBlock{Left: rv.dsack.start, Right: rv.dsack.end}
		k = 1
		rv.dsackOn = false
	}
	for i := 0; i < rv.nooo && k < wire.MaxSACKBlocks; i++ {
		o.SACK[k] = wire.SACKBlock{Left: rv.ooo[i].start, Right: rv.ooo[i].end}
		k++
	}
	o.NumSACK = k
}

// sackOptLen is the option space SACK blocks take in the next segment.
func (c *Conn) sackOptLen() int {
	if !c.sackOK {
		return 0
	}
	k := c.nooo
	if c.dsackOn {
		k++
	}
	if k == 0 {
		return 0
	}
	fit := 4
	if c.tsOK {
		fit = 3
	}
	return 4 + 8*min(k, fit)
}

// initRecv starts the receive sequence space after the peer's SYN, which took irs.
// Nothing is advertised past RCV.NXT yet: RCV.ADV left at zero would compare as far ahead
// of a random RCV.NXT half the time (serial arithmetic), and an active opener's first ACK
// would offer that as the window instead of its buffer's free space.
func (rv *receiver) initRecv(irs uint32) { rv.irs, rv.rcvNxt, rv.rcvAdv = irs, irs+1, irs+1 }
