package tcp

import (
	"syscall"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/wire"
)

type timerKind uint8

const (
	timerNone       timerKind = iota
	timerRetransmit           // RFC 6298; also SYN and SYN-ACK retransmission
	timerPersist              // RFC 9293 §3.8.6.1 zero-window probes, and SWS override
	timerFinWait2             // orphaned FIN-WAIT-2 (tcp_fin_timeout)
	timerTimeWait             // 2*MSL
	timerKeepalive            // RFC 9293 §3.8.4 keep-alives, while idle
	timerReorder              // RFC 8985 §6.2 RACK reordering window
	timerTLP                  // RFC 8985 §7 tail loss probe
)

var timerNames = [...]string{"off", "on", "persist", "timewait", "timewait", "keepalive", "on", "on"}

// timers is a connection's one timer, multiplexed over the kinds above (the delayed ACK
// has its own, receiver.dack), with the RTT estimate and RTO (RFC 6298) and the backoff
// and probe counts. It is embedded in Conn and guarded by Conn.mu.
type timers struct {
	timer    clock.Timer
	tkind    timerKind
	tat      time.Time // when the current timer kind is due
	tsched   time.Time // when the underlying timer will fire; zero if not scheduled
	retries  int       // consecutive retransmission timeouts
	probes   int       // unanswered zero-window probes
	pbackoff int       // persist timer backoff, kept while the window stays shut
	srtt     time.Duration
	rttvar   time.Duration
	rto      time.Duration
	rttOn    bool
	rttSeq   uint32
	rttStart time.Time
	twStart  time.Time
	kaSeen   bool // a segment arrived since the keep-alive timer was armed
	kaProbes int
}

func (c *Conn) arm(kind timerKind, d time.Duration) {
	c.tkind = kind
	now := c.now()
	c.tat = now.Add(d)
	if c.timer == nil {
		c.timer = c.p.clk.AfterFunc(d, c.onTimer)
		c.tsched = c.tat
		return
	}
	if c.tsched.IsZero() || c.tat.Before(c.tsched) {
		c.timer.Reset(d)
		c.tsched = c.tat
	}
}

func (t *timers) disarm() {
	t.tkind = timerNone
	if t.timer != nil && !t.tsched.IsZero() {
		t.timer.Stop()
		t.tsched = time.Time{}
	}
}

func (c *Conn) onTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	c.tsched = time.Time{}
	if c.tkind == timerNone {
		return
	}
	now := c.p.clk.Now()
	if left := c.tat.Sub(now); left > 0 {
		c.timer.Reset(left)
		c.tsched = c.tat
		return
	}
	kind := c.tkind
	c.tkind = timerNone
	switch kind {
	case timerRetransmit:
		c.onRetransmit()
	case timerPersist:
		c.onPersist()
	case timerFinWait2, timerTimeWait:
		c.finish(nil)
	case timerKeepalive:
		c.onKeepalive()
	case timerReorder:
		c.onReorder()
	case timerTLP:
		c.onTLP()
	}
}

// updateTimer picks the timer the send side needs: retransmission while data is in
// flight, persist while data waits on a zero (or too small) window, none otherwise.
func (c *Conn) updateTimer() {
	switch c.state {
	case StateSynSent, StateSynReceived:
		return
	case StateTimeWait, StateClosed:
		return
	}
	inFlight := c.sndNxt != c.sndUna
	bufEnd := c.sndUna + uint32(c.sndBuf.n)
	pending := seqLT(c.sndNxt, bufEnd) || (c.finQueued && seqLEQ(c.sndNxt, c.finSeq))
	switch {
	case c.sndWnd == 0 && (pending || inFlight):
		if c.tkind != timerPersist {
			c.arm(timerPersist, c.backedOff())
		}
	case inFlight:
		if c.tkind != timerRetransmit && c.tkind != timerReorder && c.tkind != timerTLP {
			c.armLoss()
		}
	case pending:
		if c.tkind != timerPersist {
			c.arm(timerPersist, c.backedOff())
		}
	default:
		if c.keepAlive.Enable && (c.state == StateEstablished || c.state == StateCloseWait) {
			if c.tkind != timerKeepalive {
				c.kaSeen = false // the connection falls idle now
				c.arm(timerKeepalive, c.keepAliveIdle())
			}
		} else if c.tkind == timerRetransmit || c.tkind == timerPersist || c.tkind == timerKeepalive {
			c.disarm()
		}
	}
}

// onRetransmit handles an expired retransmission timer (RFC 6298 §5.4-5.6).
func (c *Conn) onRetransmit() {
	switch c.state {
	case StateSynSent, StateSynReceived:
		limit := c.p.cfg.SynRetries
		if !c.active {
			limit = c.p.cfg.SynAckRetries
		}
		if c.synRetries > 0 {
			limit = c.synRetries
		}
		if c.retries >= limit {
			c.fail(syscall.ETIMEDOUT)
			return
		}
		c.retries++
		c.backoff()
		c.rttOn = false
		c.retrans++
		c.p.Stats.RetransSegs.Add(1)
		c.sendSYN()
		c.arm(timerRetransmit, c.rto)
		return
	}
	if c.sndNxt == c.sndUna && c.sndMax == c.sndUna {
		c.updateTimer()
		return
	}
	if c.retries == 0 {
		c.utStart = c.now().Add(-c.rto) // the head went out an RTO ago
	}
	// TCP_USER_TIMEOUT (RFC 5482 §3): data unacknowledged for that long ends the
	// connection, however many retransmissions that was.
	if c.retries >= c.p.cfg.Retries || (c.userTimeout > 0 && c.now().Sub(c.utStart) >= c.userTimeout) {
		err := syscall.ETIMEDOUT
		if c.softErr != 0 {
			err = c.softErr
		}
		c.fail(err)
		return
	}
	c.retries++
	c.backoff()
	c.p.Stats.Timeouts.Add(1)
	c.cc.OnTimeout(int(c.sndMax - c.sndUna))
	c.inRecovery, c.dupAcks, c.recover = false, 0, c.sndMax
	c.rttOn = false
	if c.sbComplete() && c.sndWnd > 0 {
		c.rtoSACK()
		c.arm(timerRetransmit, c.rto)
		return
	}
	c.sb.reset()        // going back N: records of the old transmissions no longer apply
	c.sndNxt = c.sndUna // go back: resend from the first unacknowledged byte
	if c.sndWnd == 0 {
		c.updateTimer()
		return
	}
	c.sndNxt += uint32(c.sendData(c.sndUna, c.mss))
	c.arm(timerRetransmit, c.rto)
}

// onPersist sends a zero-window probe carrying one byte of new data (RFC 9293
// §3.8.6.1), or, when the window is open but too small for SWS avoidance, what fits.
// Probes back off exponentially; as long as the peer answers, the connection stays.
func (c *Conn) onPersist() {
	if c.probes > c.p.cfg.Retries {
		c.fail(syscall.ETIMEDOUT)
		return
	}
	c.probes++
	c.pbackoff++
	inFlight := int(c.sndNxt - c.sndUna)
	usable := min(int(c.sndWnd), c.cc.Window()) - inFlight
	if usable > 0 {
		// What the window takes, marked PSH as Linux's tcp_write_wakeup marks it (corked
		// or MSG_MORE data included).
		c.probePush = true
		c.sndNxt += uint32(c.sendData(c.sndNxt, min(usable, c.mss)))
		c.probePush = false
	} else {
		used := c.sendData(c.sndUna, 1)
		if seqLT(c.sndNxt, c.sndUna+uint32(used)) {
			c.sndNxt = c.sndUna + uint32(used)
		}
	}
	// Still shut: the next probe, backed off. Data sent into an open window: the
	// retransmission timer covers it.
	c.updateTimer()
}

func (c *Conn) backedOff() time.Duration {
	d := c.rto
	for i := 0; i < c.pbackoff && d < c.p.cfg.MaxRTO; i++ {
		d *= 2
	}
	return min(d, c.p.cfg.MaxRTO)
}

func (c *Conn) backoff() { c.rto = min(2*c.rto, c.p.cfg.MaxRTO) }

func (c *Conn) keepAliveIdle() time.Duration {
	if d := c.keepAlive.Idle; d > 0 {
		return d
	}
	return 15 * time.Second // Go's default
}

// onKeepalive probes an idle connection with <SEQ=SND.NXT-1> and no data, which the peer
// must acknowledge (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6); Count unanswered probes, Interval
// apart, end the connection with ETIMEDOUT. The timer is armed when the connection falls
// idle; segments arriving later only set kaSeen (no clock read per segment), so a
// connection that was active is given a fresh idle period: the first probe goes out
// between Idle and twice Idle after the last segment.
func (c *Conn) onKeepalive() {
	if !c.keepAlive.Enable || c.sndNxt != c.sndUna || !(c.state == StateEstablished || c.state == StateCloseWait) {
		c.updateTimer()
		return
	}
	if c.kaSeen {
		c.kaSeen, c.kaProbes = false, 0
		c.arm(timerKeepalive, c.keepAliveIdle())
		return
	}
	count := c.keepAlive.Count
	if count <= 0 {
		count = 9
	}
	if c.kaProbes >= count {
		c.fail(syscall.ETIMEDOUT)
		return
	}
	c.kaProbes++
	c.emit(c.sndNxt-1, wire.TCPFlagACK, 0, nil)
	iv := c.keepAlive.Interval
	if iv <= 0 {
		iv = 15 * time.Second
	}
	c.arm(timerKeepalive, iv)
}

// rttSample updates SRTT, RTTVAR and RTO (RFC 6298 §2), with the RTO floored at MinRTO.
func (c *Conn) rttSample(r time.Duration) {
	r = max(r, time.Microsecond)
	if c.minRTT == 0 || r < c.minRTT {
		c.minRTT = r // TSO autosizing (autosize.go)
	}
	if c.srtt == 0 {
		c.srtt, c.rttvar = r, r/2
	} else {
		d := c.srtt - r
		if d < 0 {
			d = -d
		}
		c.rttvar = (3*c.rttvar + d) / 4
		c.srtt = (7*c.srtt + r) / 8
	}
	c.rto = c.computedRTO()
	if c.cc != nil {
		c.cc.OnRTTSample(r, c.srtt) // CUBIC target, HyStart++ rounds (cc.go)
	}
}

func (c *Conn) computedRTO() time.Duration {
	if c.srtt == 0 {
		return c.p.cfg.InitialRTO
	}
	// RFC 6298 §2.3 says RTO = SRTT + max(G, 4·RTTVAR), then at least 1 s (§2.4; MinRTO
	// here). Linux floors the variance term instead, RTO = SRTT + max(4·RTTVAR, rto_min)
	// (tcp_set_rto: rttvar_us is kept at least tcp_rto_min), which is never below the RFC's
	// with the same floor and keeps an RTO margin over SRTT on long paths: berth does as
	// Linux, so that its timers fire when the kernel's do (tcp/user_timeout/*.pkt,
	// tcp/sack/*.pkt time retransmissions to it).
	return min(c.srtt+max(4*c.rttvar, c.p.cfg.MinRTO), c.p.cfg.MaxRTO)
}
