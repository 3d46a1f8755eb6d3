package tcp

import "time"

// What a connection records for its statistics (Info, Linux's TCP_INFO): when data and
// ACKs last came and went, how long the sender was busy and what limited it, how much
// the peer received, how far reordering reached, the largest segment the peer sent.
// Every update is a store of a time the connection already read (now is cached per
// locked operation) or a counter increment: nothing here costs the packet path a clock
// read or an allocation.

// CAState is the sender's congestion-avoidance state as Linux reports it in
// tcpi_ca_state (the values are Linux's TCP_CA_* numbers).
type CAState uint8

// Congestion-avoidance states (SocketInfo.CAState).
const (
	// CAOpen: no loss suspected, nothing SACKed out of order.
	CAOpen CAState = 0
	// CADisorder: duplicate ACKs or SACK blocks arrived, but no loss was declared.
	CADisorder CAState = 1
	// CACWR: cwnd is being reduced for a congestion signal other than loss (ECN); berth
	// does not enter it, since it does not negotiate ECN.
	CACWR CAState = 2
	// CARecovery: fast recovery (RFC 5681 §3.2, RFC 6675 §5) is under way.
	CARecovery CAState = 3
	// CALoss: recovery after a retransmission timeout (RFC 5681 §3.1, RFC 6675 §5.1).
	CALoss CAState = 4
)

// The sender's chronograph (Linux's tcp_chrono): at any time the connection is in at most
// one of these, the highest that applies, and the time spent in each is summed.
const (
	chronoNone   uint8 = iota
	chronoBusy         // data is queued or in flight
	chronoRwnd         // the peer's receive window stops new data (RFC 9293 §3.8.6.2.1)
	chronoSndbuf       // a writer waits for send-buffer space
)

// defaultReordering is Linux's tcp_reordering default, the degree of reordering assumed
// until more is seen; maxReordering its tcp_max_reordering.
const (
	defaultReordering = 3
	maxReordering     = 300
)

// connStats is the statistics state; it is embedded in sender and guarded by Conn.mu.
type connStats struct {
	lastDataSent, lastDataRecv, lastAckRecv time.Time
	chronoKind                              uint8
	chronoAt                                time.Time
	chronoStat                              [3]time.Duration // by chrono kind - 1
	delivered                               uint64           // segments, our SYN included
	reordering                              int              // in segments; 0 means defaultReordering
	rcvMSS                                  int              // largest payload received, at most advMSS
}

// chronoSet ends the current chrono period and begins one of kind.
func (c *Conn) chronoSet(kind uint8) {
	now := c.now()
	if c.chronoKind != chronoNone {
		c.chronoStat[c.chronoKind-1] += now.Sub(c.chronoAt)
	}
	c.chronoAt, c.chronoKind = now, kind
}

// chronoStart enters kind unless a higher-priority period is running.
func (c *Conn) chronoStart(kind uint8) {
	if kind > c.chronoKind {
		c.chronoSet(kind)
	}
}

// chronoStop ends kind if it is the running period: the connection is then idle if
// nothing is queued or in flight, else busy.
func (c *Conn) chronoStop(kind uint8) {
	if c.sndBuf.n == 0 && c.sndUna == c.sndMax {
		if c.chronoKind != chronoNone {
			c.chronoSet(chronoNone)
		}
	} else if kind == c.chronoKind && kind != chronoBusy {
		c.chronoSet(chronoBusy)
	}
}

// sndbufWait: a writer found the send buffer full. It starts the send-buffer-limited
// period when the sender has sent all it has (what is queued is in flight): the
// connection could send more but for the buffer's size, which is what Linux's
// tcpi_sndbuf_limited is meant to show (a buffer too small for the path).
func (c *Conn) sndbufWait() {
	if seqLEQ(c.sndUna+uint32(c.sndBuf.n), c.sndNxt) {
		c.chronoStart(chronoSndbuf)
	}
}

// chronoTimes returns the busy, receive-window-limited and send-buffer-limited times,
// the running period included; busy counts all three, as Linux's tcpi_busy_time.
func (c *Conn) chronoTimes(now time.Time) (busy, rwnd, sndbuf time.Duration) {
	st := c.chronoStat
	if c.chronoKind != chronoNone {
		st[c.chronoKind-1] += max(now.Sub(c.chronoAt), 0)
	}
	return st[0] + st[1] + st[2], st[1], st[2]
}

// statsEstablished starts the idle clocks when the handshake completes, as Linux's
// tcp_finish_connect and tcp_create_openreq_child do.
func (c *Conn) statsEstablished() {
	now := c.now()
	c.lastDataSent, c.lastDataRecv, c.lastAckRecv = now, now, now
	if c.rcvMSS == 0 {
		// Linux's tcp_initialize_rcv_mss: a guess until segments arrive.
		c.rcvMSS = max(min(c.advMSS, c.mss, 536), 88)
	}
}

// statsDataRecv records a segment carrying n bytes of data.
func (c *Conn) statsDataRecv(n int) {
	c.lastDataRecv = c.now()
	if n > c.rcvMSS {
		c.rcvMSS = min(n, max(c.advMSS, c.rcvMSS))
	}
}

// statsDelivered counts what an ACK of ack delivered, before SND.UNA moves: bytes is
// RFC 6937's DeliveredData with SACK, else 0. Linux counts tcpi_delivered in segments,
// our SYN as one, and so do we; our FIN is not data.
func (c *Conn) statsDelivered(ack uint32, bytes int) {
	if !c.sackOK && seqGT(ack, c.sndUna) {
		bytes = int(ack - c.sndUna)
	}
	if seqGT(ack, c.sndUna) {
		if c.sndUna == c.iss {
			bytes--
			c.delivered++
		}
		if c.finQueued && seqGT(ack, c.finSeq) {
			bytes--
		}
	}
	if bytes > 0 {
		c.delivered += uint64((bytes + c.mss - 1) / max(c.mss, 1))
	}
}

// noteReordering: a segment starting at start arrived after data up to fack, which was
// sent later. As Linux's tcp_check_sack_reordering, the reordering degree becomes the
// distance in segments when it exceeds the current one.
func (c *sender) noteReordering(start, fack uint32) {
	if !seqLT(start, fack) || c.mss <= 0 {
		return
	}
	cur := c.reordering
	if cur == 0 {
		cur = defaultReordering
	}
	if d := int(fack - start); d > cur*c.mss {
		c.reordering = min((d+c.mss-1)/c.mss, maxReordering)
	}
}

// caState is the state Linux would report in tcpi_ca_state.
func (c *Conn) caState() CAState {
	switch {
	case c.inRecovery && c.rtoRecovery:
		return CALoss
	case c.inRecovery:
		return CARecovery
	case c.dupAcks > 0 || c.sb.sacked > 0:
		return CADisorder
	}
	return CAOpen
}

// infoStats fills the statistics fields of si.
func (c *Conn) infoStats(si *SocketInfo, now time.Time) {
	since := func(t time.Time) time.Duration {
		if t.IsZero() {
			return 0
		}
		return max(now.Sub(t), 0)
	}
	si.LastDataSent, si.LastDataRecv, si.LastAckRecv = since(c.lastDataSent), since(c.lastDataRecv), since(c.lastAckRecv)
	si.BusyTime, si.RwndLimited, si.SndbufLimited = c.chronoTimes(now)
	si.Delivered = c.delivered
	si.CAState = c.caState()
	si.ReorderingSegs = c.reordering
	if si.ReorderingSegs == 0 {
		si.ReorderingSegs = defaultReordering
	}
	si.RcvMSS = c.rcvMSS
}
