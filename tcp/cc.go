package tcp

import (
	"syscall"
	"time"

	"github.com/berthnet/berth/clock"
)

// CongestionControl is the congestion-window policy of one connection: how the window
// grows and how much a loss or a timeout reduces it. Loss detection and recovery (RFC 5681
// fast retransmit, RFC 6582 NewReno partial ACKs, RFC 6675 SACK recovery with RFC 6937
// PRR, RFC 6298 timeouts) are the connection's: it tells the policy what
// happened and sets cwnd itself during fast recovery. CUBIC (RFC 9438, with HyStart++
// slow start, RFC 9406) is the default; NewReno is selectable per connection
// (Config.CongestionControl, Conn.SetCongestionControl). All byte counts are in bytes;
// calls are made with the connection's lock held.
type CongestionControl interface {
	// Name is the algorithm's name as Sockets and ss report it: "cubic", "reno".
	Name() string
	// Window is cwnd, in bytes.
	Window() int
	// SSThresh is the slow-start threshold, in bytes.
	SSThresh() int
	// SetMSS tells the policy the sender's maximum segment size (also when it changes).
	SetMSS(mss int)
	// OnRTTSample: the connection took an RTT measurement rtt (RFC 6298 §2, or RFC 7323
	// §4 with timestamps, possibly one per ACK); srtt is the smoothed RTT including it.
	// An ACK's sample is reported before that ACK's OnAck. CUBIC uses srtt for its target
	// (RFC 9438 §4.2) and HyStart++ the per-round minimum of the samples (RFC 9406 §4.2).
	OnRTTSample(rtt, srtt time.Duration)
	// OnAck: an ACK outside fast recovery (or in the slow start after a timeout)
	// acknowledged acked new bytes; flight is what was outstanding before it. The policy
	// grows cwnd.
	OnAck(acked, flight int)
	// OnCongestion: fast recovery begins (three duplicate ACKs, or RACK declared a loss)
	// with flight outstanding. The policy makes its multiplicative decrease: it sets
	// ssthresh and its own state; recovery then sets cwnd (SetWindow).
	OnCongestion(flight int)
	// SetWindow: recovery sets cwnd (RFC 5681 §3.2's inflation, RFC 6582's deflation, the
	// window recovery ends with); the policy takes it as its cwnd and grows from there.
	SetWindow(cwnd int)
	// OnTimeout: the retransmission timer expired with flight outstanding. The policy
	// sets ssthresh and cwnd (the loss window, RFC 5681 §3.1).
	OnTimeout(flight int)
}

// Congestion-control algorithm names (Config.CongestionControl, SetCongestionControl).
const (
	CCCubic = "cubic"
	CCReno  = "reno"
)

// canonicalCC maps the accepted names to the canonical ones; "" for an unknown name.
func canonicalCC(name string) string {
	switch name {
	case CCCubic:
		return CCCubic
	case CCReno, "newreno":
		return CCReno
	}
	return ""
}

// newCongestionControl makes the named (canonical) algorithm.
func newCongestionControl(name string, mss int, clk clock.Clock) CongestionControl {
	if name == CCReno {
		return NewNewReno(mss)
	}
	return NewCubic(mss, clk)
}

// newCC is the hook where a connection creates its congestion control once the MSS is
// known: SetCongestionControl's choice, else Config.Congestion, else
// Config.CongestionControl.
func (c *Conn) newCC(mss int) CongestionControl {
	if c.ccName == "" && c.p.cfg.Congestion != nil {
		return c.p.cfg.Congestion(mss)
	}
	name := c.ccName
	if name == "" {
		name = c.p.cfg.CongestionControl
	}
	return newCongestionControl(name, mss, c.p.clk)
}

// SetCongestionControl chooses the connection's congestion control by name ("cubic",
// "reno" or its alias "newreno"), like Linux's TCP_CONGESTION socket option; an unknown
// name is ENOENT, as there. It is meant for before data flows; on a connection already
// sending, the new algorithm starts from the current cwnd and ssthresh (as Linux's
// tcp_reinit_congestion_control keeps them).
func (c *Conn) SetCongestionControl(name string) error {
	n := canonicalCC(name)
	if n == "" {
		return syscall.ENOENT
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ccName = n
	if c.cc != nil && c.cc.Name() != n {
		old := c.cc
		c.cc = newCongestionControl(n, c.mss, c.p.clk)
		if s, ok := c.cc.(interface{ seed(cwnd, ssthresh int) }); ok {
			s.seed(old.Window(), old.SSThresh())
		}
	}
	return nil
}

// CongestionControl returns the name of the connection's congestion control (before the
// handshake completes, the one it will use).
func (c *Conn) CongestionControl() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc != nil {
		return c.cc.Name()
	}
	if c.ccName != "" {
		return c.ccName
	}
	if c.p.cfg.Congestion != nil {
		return "custom"
	}
	return c.p.cfg.CongestionControl
}

// initialWindow is RFC 6928's IW: min(10*MSS, max(2*MSS, 14600)).
func initialWindow(mss int) int { return min(10*mss, max(2*mss, 14600)) }

// NewReno is RFC 5681 congestion control: slow start, congestion avoidance and the halving
// on a loss (the fast recovery of RFC 5681 §3.2 and RFC 6582 is the connection's).
type NewReno struct {
	mss      int
	cwnd     int
	ssthresh int
	acc      int // bytes acknowledged in congestion avoidance towards the next +MSS
}

// NewNewReno returns NewReno state for a connection with the given MSS.
func NewNewReno(mss int) *NewReno {
	return &NewReno{mss: mss, cwnd: initialWindow(mss), ssthresh: 1 << 30}
}

// Name returns CCReno.
func (r *NewReno) Name() string { return CCReno }

// Window returns cwnd in bytes.
func (r *NewReno) Window() int { return r.cwnd }

// SSThresh returns the slow-start threshold in bytes.
func (r *NewReno) SSThresh() int { return r.ssthresh }

// OnRTTSample does nothing: NewReno does not use RTTs.
func (r *NewReno) OnRTTSample(_, _ time.Duration) {}
func (r *NewReno) seed(cwnd, ssthresh int)        { r.cwnd, r.ssthresh = max(cwnd, r.mss), ssthresh }

// SetMSS sets the segment size the window counts in.
func (r *NewReno) SetMSS(mss int) {
	r.mss = mss
	r.cwnd = max(r.cwnd, mss)
}

// OnAck grows cwnd for acked bytes: slow start below ssthresh, else by about one MSS per window (RFC 5681 §3.1).
func (r *NewReno) OnAck(acked, flight int) {
	if r.cwnd < r.ssthresh {
		// RFC 5681 §3.1 slow start, with RFC 3465's byte counting limited to one SMSS.
		r.cwnd += min(acked, r.mss)
		return
	}
	// RFC 5681 §3.1 congestion avoidance: about one SMSS per RTT.
	r.acc += acked
	if r.acc >= r.cwnd {
		r.acc -= r.cwnd
		r.cwnd += r.mss
	}
}

func (r *NewReno) lossThreshold(flight int) int { return max(flight/2, 2*r.mss) }

// OnCongestion implements CongestionControl: ssthresh halves (with a floor of 2*SMSS).
func (r *NewReno) OnCongestion(flight int) {
	// RFC 5681 §3.2 step 2 (eqn. 4).
	r.ssthresh = r.lossThreshold(flight)
	r.acc = 0
}

// SetWindow implements CongestionControl: recovery's cwnd becomes NewReno's.
func (r *NewReno) SetWindow(cwnd int) { r.cwnd = cwnd }

// OnTimeout halves ssthresh from the flight and restarts from one segment (RFC 5681 §3.1, eq. 4).
func (r *NewReno) OnTimeout(flight int) {
	// RFC 5681 §3.1 eqn. 4 and the loss window of one SMSS.
	r.ssthresh = r.lossThreshold(flight)
	r.cwnd = r.mss
	r.acc = 0
}
