package tcp

import (
	"math"
	"time"

	"github.com/berthnet/berth/clock"
)

// CUBIC's constants (RFC 9438 §4.1.1 and §5).
const (
	cubicC     = 0.4 // C, in segments/s³
	cubicBeta  = 0.7 // β_cubic, the multiplicative decrease factor
	cubicAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta)
)

// HyStart++'s constants (RFC 9406 §4.3, the recommended values). L is the one for a sender
// that does not pace.
const (
	hsMinRTTThresh    = 4 * time.Millisecond
	hsMaxRTTThresh    = 16 * time.Millisecond
	hsMinRTTDivisor   = 8
	hsNRTTSample      = 8
	hsCSSGrowthDiv    = 4
	hsCSSRounds       = 5
	hsL               = 8
	hsInf             = time.Duration(math.MaxInt64)
	cubicInitSSThresh = 1 << 30
)

// Cubic is RFC 9438 CUBIC congestion control with RFC 9406 HyStart++ for the initial slow
// start. Windows are kept in bytes; the cubic function works in segments and seconds, as
// the RFC writes it. Loss recovery itself (retransmissions, the window inflation of RFC
// 5681 §3.2 during fast recovery and RFC 6582's partial ACKs) is the connection's;
// CUBIC decides the reduction (β = 0.7) and the growth.
type Cubic struct {
	clk      clock.Clock
	mss      int
	cwnd     int
	ssthresh int
	srtt     time.Duration
	acc      float64 // fractional bytes of cwnd growth not yet applied

	// RFC 9438 §4.1.2 state variables, windows in segments.
	wMax      float64   // W_max: cwnd before the last reduction, after fast convergence
	cwndPrior float64   // cwnd_prior: cwnd before the last reduction (§4.3's α switch)
	k         float64   // K, seconds
	epoch     time.Time // t_epoch; zero: the next ACK in congestion avoidance starts one
	cwndEpoch float64   // cwnd_epoch
	wEst      float64   // W_est, the Reno-friendly estimate (§4.3)
	afterRTO  bool      // the coming epoch follows a timeout (§4.8: K = 0)
	lastAck   time.Time // the last OnAck in congestion avoidance, to spot idle periods

	hs hyStart
}

// hyStart is RFC 9406 §4.2's state. Rounds are counted in bytes delivered: a round ends
// when everything outstanding at its start (SND.NXT then, windowEnd) has been acknowledged.
type hyStart struct {
	on                bool // still in the initial slow start, where HyStart++ applies
	css               bool // in Conservative Slow Start
	delivered         int64
	windowEnd         int64
	lastRoundMinRTT   time.Duration
	curRoundMinRTT    time.Duration
	samples           int
	cssBaselineMinRTT time.Duration
	cssRounds         int
	cssCwnd           int // cwnd when CSS was last entered (diagnostics, tests)
}

// NewCubic returns CUBIC state for a connection with the given MSS; clk is the
// connection's clock (virtual in tests), the time base of the cubic function.
func NewCubic(mss int, clk clock.Clock) *Cubic {
	c := &Cubic{clk: clk, mss: mss, cwnd: initialWindow(mss), ssthresh: cubicInitSSThresh}
	c.hs = hyStart{on: true, lastRoundMinRTT: hsInf, curRoundMinRTT: hsInf, cssBaselineMinRTT: hsInf}
	return c
}

// Name returns CCCubic.
func (c *Cubic) Name() string { return CCCubic }

// Window returns cwnd in bytes.
func (c *Cubic) Window() int { return c.cwnd }

// SSThresh returns the slow-start threshold in bytes.
func (c *Cubic) SSThresh() int { return c.ssthresh }

// SetMSS sets the segment size the window counts in.
func (c *Cubic) SetMSS(mss int) {
	c.mss = mss
	c.cwnd = max(c.cwnd, mss)
}

func (c *Cubic) seed(cwnd, ssthresh int) {
	c.cwnd, c.ssthresh = max(cwnd, c.mss), ssthresh
	c.hs.on = ssthresh >= cubicInitSSThresh
}

// InSlowStart reports whether cwnd is below ssthresh; InCSS whether HyStart++ has the
// connection in Conservative Slow Start (RFC 9406 §4.2).
func (c *Cubic) InSlowStart() bool { return c.cwnd < c.ssthresh }

// InCSS reports HyStart++'s conservative slow start (RFC 9406 §4.2).
func (c *Cubic) InCSS() bool { return c.hs.on && c.hs.css }

// WMax and K return W_max (segments) and K of the current or coming epoch (RFC 9438 §4.2).
func (c *Cubic) WMax() float64 { return c.wMax }

// K is the time the window takes to grow back to WMax (RFC 9438 §4.2).
func (c *Cubic) K() time.Duration       { return time.Duration(c.k * float64(time.Second)) }
func (c *Cubic) segs(bytes int) float64 { return float64(bytes) / float64(c.mss) }

// wCubic is RFC 9438 §4.2 Figure 1: W_cubic(t) = C*(t-K)³ + W_max, t in seconds.
func (c *Cubic) wCubic(t float64) float64 {
	d := t - c.k
	return cubicC*d*d*d + c.wMax
}

// OnRTTSample feeds HyStart++'s round minimum (RFC 9406 §4.2).
func (c *Cubic) OnRTTSample(rtt, srtt time.Duration) {
	c.srtt = srtt
	if c.hs.on && c.cwnd < c.ssthresh {
		// RFC 9406 §4.2: keep track of the round's minimum RTT.
		c.hs.curRoundMinRTT = min(c.hs.curRoundMinRTT, rtt)
		c.hs.samples++
	}
}

// OnAck grows cwnd: slow start (with HyStart++), then the cubic function or the Reno-friendly estimate, whichever is larger (RFC 9438 §4).
func (c *Cubic) OnAck(acked, flight int) {
	if c.cwnd < c.ssthresh {
		c.slowStart(acked, flight)
		return
	}
	c.congestionAvoidance(acked)
}

// slowStart is RFC 5681 §3.1 slow start; in the initial slow start with HyStart++
// (RFC 9406 §4.2): L-limited byte counting, delay-increase detection once a round has
// N_RTT_SAMPLE samples, CSS, and the switch to congestion avoidance after CSS_ROUNDS.
func (c *Cubic) slowStart(acked, flight int) {
	if !c.hs.on {
		// Later slow starts (after a timeout) are standard, RFC 3465 with L = 2.
		c.cwnd += min(acked, 2*c.mss)
		return
	}
	h := &c.hs
	h.delivered += int64(acked)
	inc := min(acked, hsL*c.mss)
	if h.css {
		c.addBytes(float64(inc) / hsCSSGrowthDiv)
		if h.samples >= hsNRTTSample && h.curRoundMinRTT < h.cssBaselineMinRTT {
			// The exit was spurious: resume slow start.
			h.css, h.cssBaselineMinRTT = false, hsInf
		}
	} else {
		c.cwnd += inc
		if h.samples >= hsNRTTSample && h.curRoundMinRTT != hsInf && h.lastRoundMinRTT != hsInf {
			thresh := max(hsMinRTTThresh, min(h.lastRoundMinRTT/hsMinRTTDivisor, hsMaxRTTThresh))
			if h.curRoundMinRTT >= h.lastRoundMinRTT+thresh {
				h.css, h.cssBaselineMinRTT, h.cssRounds = true, h.curRoundMinRTT, 0
				h.cssCwnd = c.cwnd
			}
		}
	}
	if h.delivered < h.windowEnd {
		return
	}
	// This ACK ended a round.
	if h.css {
		h.cssRounds++
		if h.cssRounds >= hsCSSRounds {
			// RFC 9406 §4.2: enter congestion avoidance with ssthresh = cwnd.
			c.ssthresh = c.cwnd
			h.on, h.css = false, false
			return
		}
	}
	h.lastRoundMinRTT, h.curRoundMinRTT, h.samples = h.curRoundMinRTT, hsInf, 0
	h.windowEnd = h.delivered + int64(max(flight-acked, 0))
}

// addBytes grows cwnd by a possibly fractional number of bytes, carrying the fraction.
func (c *Cubic) addBytes(b float64) {
	c.acc += b
	if c.acc >= 1 {
		n := math.Floor(c.acc)
		c.cwnd += int(n)
		c.acc -= n
	}
}

// congestionAvoidance is RFC 9438 §4.2–§4.5.
func (c *Cubic) congestionAvoidance(acked int) {
	now := c.clk.Now()
	w := c.segs(c.cwnd)
	if c.epoch.IsZero() {
		// §4.2: a new epoch begins with the first ACK in congestion avoidance.
		c.epoch, c.cwndEpoch, c.wEst = now, w, w
		if c.afterRTO || c.wMax <= w {
			// §4.8: after a timeout K = 0 and W_max is cwnd at the start of the
			// epoch; above the old W_max (or before any loss) the same: probe convexly.
			c.wMax, c.k, c.afterRTO = w, 0, false
		} else {
			c.k = math.Cbrt((c.wMax - c.cwndEpoch) / cubicC)
		}
		c.acc = 0
	} else if gap := now.Sub(c.lastAck); c.srtt > 0 && gap > 2*c.srtt {
		// RFC 9438 §5.8: an application-limited or idle sender must not grow cwnd by the
		// time that passed; the connection stops calling OnAck when cwnd does not limit
		// it, so a gap of more than two RTTs is such a period: shift the epoch over it
		// (as Linux does on restart after idle).
		c.epoch = c.epoch.Add(gap)
	}
	c.lastAck = now
	segs := c.segs(acked)
	t := now.Sub(c.epoch).Seconds()

	// §4.3: W_est grows like Reno with AIMD(α_cubic, β_cubic); once it passes cwnd_prior,
	// α becomes 1.
	alpha := cubicAlpha
	if c.wEst >= c.cwndPrior {
		alpha = 1
	}
	c.wEst += alpha * segs / w

	if c.wCubic(t) < c.wEst {
		// §4.3 Reno-friendly region: cwnd = W_est.
		if nw := int(c.wEst * float64(c.mss)); nw > c.cwnd {
			c.cwnd = nw
		}
		return
	}
	// §4.4 concave and §4.5 convex regions: aim for W_cubic one RTT ahead, bounded to
	// [cwnd, 1.5 cwnd] (§4.2), and move (target - cwnd)/cwnd per segment acknowledged.
	target := c.wCubic(t + c.srtt.Seconds())
	target = min(max(target, w), 1.5*w)
	c.addBytes((target - w) / w * segs * float64(c.mss))
}

// reduce is RFC 9438 §4.6 (multiplicative decrease, ssthresh from the flight size) and
// §4.7 (fast convergence), common to fast retransmit and timeout. HyStart++ applies only
// to the initial slow start (RFC 9406 §4.2), so any loss ends it.
func (c *Cubic) reduce(flight int) {
	w := c.segs(c.cwnd)
	if w < c.wMax {
		// §4.7: a second loss below the previous W_max releases bandwidth.
		c.wMax = w * (1 + cubicBeta) / 2
	} else {
		c.wMax = w
	}
	c.cwndPrior = w
	c.ssthresh = max(int(float64(flight)*cubicBeta), 2*c.mss)
	c.epoch = time.Time{}
	c.acc = 0
	c.hs.on, c.hs.css = false, false
}

// OnCongestion implements CongestionControl: RFC 9438 §4.6 and §4.7 (reduce).
func (c *Cubic) OnCongestion(flight int) {
	c.reduce(flight)
	c.afterRTO = false
}

// SetWindow implements CongestionControl: recovery's cwnd becomes CUBIC's; the next
// epoch starts from it (RFC 9438 §4.2).
func (c *Cubic) SetWindow(cwnd int) { c.cwnd = cwnd }

// OnTimeout reduces as RFC 9438 §4.8 says on a retransmission timeout and restarts from one segment.
func (c *Cubic) OnTimeout(flight int) {
	// RFC 9438 §4.8: ssthresh by β as for a loss, cwnd to one segment as Reno (RFC 5681
	// §3.1), and the first epoch after it starts with K = 0 and W_max = cwnd then.
	// Backed-off repeated timeouts must not shrink W_max further.
	if c.cwnd > c.mss || !c.afterRTO {
		c.reduce(flight)
	}
	c.afterRTO = true
	c.cwnd = c.mss
}
