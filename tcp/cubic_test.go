package tcp

import (
	"math"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
)

const ccMSS = 1000

// cubicAfterLoss returns CUBIC that was in congestion avoidance at w segments, took a
// fast retransmit with w segments in flight and left recovery, with srtt rtt; the clock is
// at the end of recovery.
func cubicAfterLoss(t *testing.T, w int, rtt time.Duration) (*Cubic, *clock.Manual) {
	t.Helper()
	clk := clock.NewManual(time.Unix(1e9, 0))
	c := NewCubic(ccMSS, clk)
	c.seed(w*ccMSS, w*ccMSS/2) // in congestion avoidance at w segments
	c.OnRTTSample(rtt, rtt)
	recoveryStart(c, w*ccMSS, ccMSS)
	if want := int(float64(w*ccMSS) * cubicBeta); c.SSThresh() != want {
		t.Fatalf("ssthresh after loss at %d segments: %d, want β·flight = %d", w, c.SSThresh(), want)
	}
	if c.Window() != c.SSThresh()+3*ccMSS {
		t.Fatalf("cwnd in recovery %d, want ssthresh+3*MSS", c.Window())
	}
	recoveryExit(c, c.SSThresh(), ccMSS)
	if c.Window() != c.SSThresh() {
		t.Fatalf("cwnd after recovery %d, want ssthresh %d", c.Window(), c.SSThresh())
	}
	return c, clk
}

// runRTTs acknowledges a full window every rtt for d, one ACK per segment, and calls f
// after each round with the time since the start.
func runRTTs(c *Cubic, clk *clock.Manual, rtt, d time.Duration, f func(t time.Duration)) {
	start := clk.Now()
	for clk.Now().Sub(start) < d {
		// The ACKs of a window arrive spread over the RTT.
		n := c.Window() / ccMSS
		for i := 0; i < n; i++ {
			c.OnRTTSample(rtt, rtt)
			c.OnAck(ccMSS, c.Window())
			clk.Advance(rtt / time.Duration(n))
		}
		if f != nil {
			f(clk.Now().Sub(start))
		}
	}
}

// TestCubicWindowCurve checks RFC 9438 §4.2's W_cubic after a loss: K = cbrt(W_max(1-β)/C),
// the concave approach to W_max, cwnd ≈ W_max at t = K, the convex probe beyond it, and
// cwnd following C(t-K)³ + W_max (one RTT ahead, §4.2's target) all along.
func TestCubicWindowCurve(t *testing.T) {
	// W_max 1000 segments and an RTT of 100 ms: the cubic region throughout (W_est only
	// reaches about 775 segments in the 14 s simulated).
	const wmax = 1000
	rtt := 100 * time.Millisecond
	c, clk := cubicAfterLoss(t, wmax, rtt)
	if c.WMax() != wmax {
		t.Fatalf("W_max %v, want %d", c.WMax(), wmax)
	}
	// The first ACK in congestion avoidance starts the epoch and computes K.
	c.OnRTTSample(rtt, rtt)
	c.OnAck(ccMSS, c.Window())
	wantK := math.Cbrt(wmax * (1 - cubicBeta) / cubicC) // 9.086 s
	if got := c.K().Seconds(); math.Abs(got-wantK) > 1e-6 {
		t.Fatalf("K = %.4f s, want %.4f s", got, wantK)
	}
	var ts, ws []float64
	runRTTs(c, clk, rtt, 14*time.Second, func(d time.Duration) {
		ts = append(ts, d.Seconds())
		ws = append(ws, float64(c.Window())/ccMSS)
	})
	atK := -1.0
	for i, tt := range ts {
		// cwnd tracks the target W_cubic(t+RTT), reached over an RTT: it stays between
		// W_cubic(t) and W_cubic(t+RTT), with a segment of slack for the per-ACK steps.
		lo, hi := c.wCubic(tt)-1, c.wCubic(tt+rtt.Seconds())+1
		if ws[i] < lo || ws[i] > hi {
			t.Errorf("t=%.1fs: cwnd %.1f segments, want W_cubic in [%.1f, %.1f]", tt, ws[i], lo, hi)
		}
		if atK < 0 && tt >= wantK {
			atK = ws[i]
		}
	}
	if math.Abs(atK-wmax) > 2 {
		t.Errorf("cwnd at t=K: %.1f segments, want W_max = %d", atK, wmax)
	}
	// Growth per second: shrinking towards K (concave), growing after it (convex).
	growth := func(from, to float64) float64 {
		a, b := -1.0, 0.0
		for i, tt := range ts {
			if a < 0 && tt >= from {
				a = ws[i]
			}
			if tt <= to {
				b = ws[i]
			}
		}
		return (b - a) / (to - from)
	}
	g0, g1, g2, g3 := growth(1, 2), growth(6, 7), growth(11, 12), growth(13, 14)
	if !(g0 > 2*g1 && g1 > 0) {
		t.Errorf("concave region: growth %.1f then %.1f segments/s, want decreasing", g0, g1)
	}
	if !(g3 > 2*g2 && g2 > 0) {
		t.Errorf("convex region: growth %.1f then %.1f segments/s, want increasing", g2, g3)
	}
	t.Logf("K=%.3fs cwnd(K)=%.1f growth/s: %.1f %.1f | %.1f %.1f", wantK, atK, g0, g1, g2, g3)
}

// TestCubicAppLimited: time without ACKs in congestion avoidance (the sender was not
// cwnd-limited) does not count towards the cubic curve (RFC 9438 §5.8).
func TestCubicAppLimited(t *testing.T) {
	rtt := 100 * time.Millisecond
	c, clk := cubicAfterLoss(t, 1000, rtt)
	c.OnAck(ccMSS, c.Window())
	runRTTs(c, clk, rtt, 2*time.Second, nil)
	w0 := c.Window()
	clk.Advance(20 * time.Second) // idle far past K
	c.OnRTTSample(rtt, rtt)
	c.OnAck(ccMSS, c.Window())
	runRTTs(c, clk, rtt, time.Second, nil)
	// Not counting the idle period: about 1 s more of the concave curve from t = 2 s
	// (rounds overrun their second by up to an RTT each); counting it, t would be past
	// K = 9.1 s and cwnd far above W_max.
	want := c.wCubic(3+3*rtt.Seconds()) + 1
	if w := float64(c.Window()) / ccMSS; w > want {
		t.Fatalf("after 20 s idle and 1 s of ACKs: cwnd %.1f segments (from %.1f), want ≤ W_cubic(3 s) ≈ %.1f", w, float64(w0)/ccMSS, want)
	}
}

// TestCubicRenoFriendly checks RFC 9438 §4.3: with a small W_max and a short RTT Reno's
// AIMD(α_cubic, β) grows faster than the cubic curve, and cwnd follows W_est.
func TestCubicRenoFriendly(t *testing.T) {
	rtt := time.Millisecond
	c, clk := cubicAfterLoss(t, 20, rtt)
	// W_est model: starts at cwnd_epoch = 14, +α_cubic per RTT until cwnd_prior = 20,
	// then +1 per RTT; 400 RTTs in 0.4 s.
	runRTTs(c, clk, rtt, 400*rtt, nil)
	w := float64(c.Window()) / ccMSS
	tt := 0.4
	cub := c.wCubic(tt + rtt.Seconds())
	renoRTTs := (20 - 14) / cubicAlpha // RTTs to reach cwnd_prior with α_cubic
	est := 20 + (400 - renoRTTs)
	if w <= cub+10 {
		t.Fatalf("cwnd %.1f segments, not above the cubic curve %.1f: Reno-friendly region not used", w, cub)
	}
	if math.Abs(w-est)/est > 0.1 {
		t.Fatalf("cwnd %.1f segments, want W_est ≈ %.1f", w, est)
	}
	t.Logf("after 400 RTTs of 1 ms: cwnd %.1f, W_est model %.1f, W_cubic %.1f", w, est, cub)
}

// TestCubicFastConvergence checks RFC 9438 §4.7: a loss below the previous W_max sets
// W_max to cwnd(1+β)/2; a loss above it to cwnd.
func TestCubicFastConvergence(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	c := NewCubic(ccMSS, clk)
	c.seed(100*ccMSS, 50*ccMSS)
	recoveryStart(c, 100*ccMSS, ccMSS)
	if c.WMax() != 100 {
		t.Fatalf("W_max %v, want 100", c.WMax())
	}
	recoveryExit(c, 70*ccMSS, ccMSS)
	c.seed(80*ccMSS, c.SSThresh()) // grew to 80 only, then another loss
	recoveryStart(c, 80*ccMSS, ccMSS)
	if want := 80 * (1 + cubicBeta) / 2; math.Abs(c.WMax()-want) > 1e-9 {
		t.Fatalf("W_max %v after a loss below the old one, want %v", c.WMax(), want)
	}
	recoveryExit(c, 56*ccMSS, ccMSS)
	c.seed(120*ccMSS, c.SSThresh())
	recoveryStart(c, 120*ccMSS, ccMSS)
	if c.WMax() != 120 {
		t.Fatalf("W_max %v after a loss above the old one, want 120", c.WMax())
	}
	// The lower W_max shortens K: the plateau moves to the released bandwidth.
	c2, _ := cubicAfterLoss(t, 100, 10*time.Millisecond)
	c2.OnAck(ccMSS, c2.Window())
	kNoFC := c2.K()
	c2.seed(80*ccMSS, c2.SSThresh())
	recoveryStart(c2, 80*ccMSS, ccMSS)
	recoveryExit(c2, 56*ccMSS, ccMSS)
	c2.OnAck(ccMSS, c2.Window())
	if want := math.Cbrt((80*(1+cubicBeta)/2 - 56) / cubicC); math.Abs(c2.K().Seconds()-want) > 1e-3 || c2.K() >= kNoFC {
		t.Fatalf("K after fast convergence %v, want %.3fs (< %v)", c2.K(), want, kNoFC)
	}
}

// TestCubicTimeout checks RFC 9438 §4.8: ssthresh = β·flight, cwnd = 1 segment, slow start
// to ssthresh, then an epoch with K = 0 and W_max = cwnd at its start; a backed-off second
// timeout changes neither ssthresh nor W_max.
func TestCubicTimeout(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	c := NewCubic(ccMSS, clk)
	c.seed(100*ccMSS, 50*ccMSS)
	c.OnRTTSample(50*time.Millisecond, 50*time.Millisecond)
	c.OnTimeout(100 * ccMSS)
	if c.Window() != ccMSS || c.SSThresh() != 70*ccMSS {
		t.Fatalf("after RTO cwnd %d ssthresh %d, want %d and %d", c.Window(), c.SSThresh(), ccMSS, 70*ccMSS)
	}
	c.OnTimeout(100 * ccMSS) // backed off, still nothing acknowledged
	if c.Window() != ccMSS || c.SSThresh() != 70*ccMSS || c.WMax() != 100 {
		t.Fatalf("after second RTO cwnd %d ssthresh %d W_max %v", c.Window(), c.SSThresh(), c.WMax())
	}
	for c.InSlowStart() {
		c.OnAck(ccMSS, c.Window())
	}
	if c.Window() < 70*ccMSS || c.Window() > 72*ccMSS {
		t.Fatalf("slow start ended at %d", c.Window())
	}
	c.OnAck(ccMSS, c.Window()) // first congestion-avoidance ACK: the epoch starts
	if c.K() != 0 || math.Abs(c.WMax()-float64(c.cwndEpoch)) > 1e-9 || c.cwndEpoch < 70 {
		t.Fatalf("epoch after RTO: K %v W_max %v cwnd_epoch %v, want K=0, W_max=cwnd_epoch", c.K(), c.WMax(), c.cwndEpoch)
	}
	// With K = 0 the window grows (convex) from the start.
	w0 := c.Window()
	runRTTs(c, clk, 50*time.Millisecond, 2*time.Second, nil)
	if c.Window() <= w0 {
		t.Fatalf("no growth after RTO epoch: %d -> %d", w0, c.Window())
	}
}

// hsRounds drives CUBIC through slow-start rounds: in round i every ACK carries RTT
// rtt(i). It returns the round in which CSS began (-1 if never) and calls f after each.
func hsRounds(c *Cubic, rounds int, rtt func(i int) time.Duration, f func(i int)) int {
	css := -1
	for i := 0; i < rounds && c.InSlowStart(); i++ {
		// One round: the window at its start is acknowledged segment by segment.
		n := c.Window() / ccMSS
		for j := 0; j < n; j++ {
			r := rtt(i)
			c.OnRTTSample(r, r)
			c.OnAck(ccMSS, c.Window())
			if css < 0 && c.InCSS() {
				css = i
			}
			if !c.InSlowStart() {
				break
			}
		}
		if f != nil {
			f(i)
		}
	}
	return css
}

// TestHyStartExit checks RFC 9406 §4.2: a round whose minimum RTT is RttThresh above the
// last round's enters CSS (growth 1/CSS_GROWTH_DIVISOR), and CSS_ROUNDS later
// congestion avoidance begins with ssthresh = cwnd.
func TestHyStartExit(t *testing.T) {
	c := NewCubic(ccMSS, clock.NewManual(time.Unix(1e9, 0)))
	base := 40 * time.Millisecond // RttThresh = max(4 ms, min(40/8, 16)) = 5 ms
	var cssStart, cssEnd int
	var lastW int
	css := hsRounds(c, 40, func(i int) time.Duration {
		if i >= 4 {
			return base + 8*time.Millisecond
		}
		return base + time.Duration(i%2)*time.Millisecond // jitter below the threshold
	}, func(i int) {
		if c.InCSS() && cssStart == 0 {
			cssStart = c.Window()
		}
		lastW = c.Window()
	})
	cssEnd = lastW
	if css < 4 || css > 5 {
		t.Fatalf("CSS began in round %d, want the first round with the higher RTT (4)", css)
	}
	if c.InSlowStart() || c.SSThresh() != c.Window() || c.InCSS() {
		t.Fatalf("after CSS: slow start %v, ssthresh %d, cwnd %d", c.InSlowStart(), c.SSThresh(), c.Window())
	}
	// 5 CSS rounds at growth 1/4 per round: ×1.25⁵ ≈ 3, far below slow start's ×32.
	if r := float64(cssEnd) / float64(cssStart); r > 1.25*1.25*1.25*1.25*1.25*1.3 || r < 2 {
		t.Fatalf("CSS grew cwnd %d -> %d (×%.2f), want about 1.25 per round", cssStart, cssEnd, r)
	}
	t.Logf("CSS from round %d, cwnd %d -> %d; ssthresh %d", css, cssStart, cssEnd, c.SSThresh())
}

// TestHyStartFlatRTT: with the RTT flat (jitter under RttThresh) slow start continues,
// doubling each round.
func TestHyStartFlatRTT(t *testing.T) {
	c := NewCubic(ccMSS, clock.NewManual(time.Unix(1e9, 0)))
	css := hsRounds(c, 10, func(i int) time.Duration {
		return 40*time.Millisecond + time.Duration(i%3)*time.Millisecond
	}, nil)
	if css >= 0 || !c.InSlowStart() {
		t.Fatalf("flat RTT: CSS in round %d, slow start %v", css, c.InSlowStart())
	}
	if c.Window() < 10*ccMSS<<9 {
		t.Fatalf("cwnd %d after 10 slow-start rounds from 10 segments, want ≥ ×512", c.Window())
	}
}

// TestHyStartSpuriousCSS: if the RTT falls back below the CSS baseline, slow start
// resumes (RFC 9406 §4.2).
func TestHyStartSpuriousCSS(t *testing.T) {
	c := NewCubic(ccMSS, clock.NewManual(time.Unix(1e9, 0)))
	base := 40 * time.Millisecond
	sawCSS := false
	hsRounds(c, 8, func(i int) time.Duration {
		if i == 3 || i == 4 {
			return base + 10*time.Millisecond
		}
		return base
	}, func(i int) {
		if c.InCSS() {
			sawCSS = true
		}
	})
	if !sawCSS {
		t.Fatal("the RTT increase did not enter CSS")
	}
	if c.InCSS() || !c.InSlowStart() || c.SSThresh() != cubicInitSSThresh {
		t.Fatalf("RTT back at the baseline: CSS %v slow start %v ssthresh %d, want slow start resumed", c.InCSS(), c.InSlowStart(), c.SSThresh())
	}
}

// TestHyStartOnlyInitial: after a loss, slow start is standard (RFC 9406 §4.2: HyStart++
// only in the initial slow start) and RTT increases do not matter.
func TestHyStartOnlyInitial(t *testing.T) {
	c := NewCubic(ccMSS, clock.NewManual(time.Unix(1e9, 0)))
	c.OnTimeout(1000 * ccMSS) // ssthresh 700 segments: ten rounds of slow start
	css := hsRounds(c, 10, func(i int) time.Duration { return time.Duration(10+10*i) * time.Millisecond }, nil)
	if css >= 0 {
		t.Fatalf("CSS after a timeout, in round %d", css)
	}
}

// TestCubicOnAckAllocs: the per-ACK path allocates nothing.
func TestCubicOnAckAllocs(t *testing.T) {
	c, _ := cubicAfterLoss(t, 100, 10*time.Millisecond)
	if n := testing.AllocsPerRun(1000, func() {
		c.OnRTTSample(10*time.Millisecond, 10*time.Millisecond)
		c.OnAck(ccMSS, c.Window())
	}); n != 0 {
		t.Fatalf("%v allocations per ACK", n)
	}
}

func BenchmarkCubicOnAck(b *testing.B) {
	c := NewCubic(1460, clock.Real{})
	c.seed(100*1460, 50*1460)
	b.ReportAllocs()
	for b.Loop() {
		c.OnRTTSample(10*time.Millisecond, 10*time.Millisecond)
		c.OnAck(1460, c.Window())
		if c.Window() > 1<<20 { // stay in a realistic range
			recoveryStart(c, c.Window(), 1460)
			recoveryExit(c, c.SSThresh(), 1460)
		}
	}
}
