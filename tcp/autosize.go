package tcp

import "time"

// TSO autosizing, as Linux's tcp_tso_autosize: a super-segment of new data carries about
// a millisecond's worth of the connection's pacing rate, and at least two segments
// (tcp_min_tso_segs), so that a slow or distant path gets its data in small bursts that
// keep the ACK clock running instead of one super-segment per window. Linux computes the
// pacing rate on every ACK (tcp_update_pacing_rate) as 200 % of cwnd/SRTT in slow start
// and 120 % after it; before the first rate (a passive open, whose handshake ACK finds
// no RTT yet on Linux, or a handshake without an RTT sample) nothing limits the size. On a
// short path the minimum RTT adds to the budget (tcp_tso_rtt_log: 64 KB >> (min RTT /
// 512 µs)), so that a LAN or loopback peer gets whole 64 KB super-segments.

const (
	tsoMinSegs    = 2     // tcp_min_tso_segs
	tsoMaxBytes   = 65536 // sk_gso_max_size
	pacingSSRatio = 200   // tcp_pacing_ss_ratio, percent
	pacingCARatio = 120   // tcp_pacing_ca_ratio, percent
)

// tsoUpdate recomputes the autosized super-segment after an ACK (c.mu held): tsoSegs
// segments, 0 for no limit.
func (c *Conn) tsoUpdate() {
	if c.gsoMax == 0 {
		return // no super-segments: nothing to size (and no cost per ACK)
	}
	if c.srtt <= 0 || c.cc == nil || c.mss <= 0 {
		c.tsoSegs = 0
		return
	}
	ratio := uint64(pacingCARatio)
	cwnd := c.cc.Window()
	if cwnd < c.cc.SSThresh()/2 {
		ratio = pacingSSRatio
	}
	w := uint64(max(cwnd, int(c.sndMax-c.sndUna)))
	us := uint64(max(c.srtt/time.Microsecond, 1))
	// bytes/s = ratio/100 · w / srtt; a millisecond of it is Linux's rate >> 10.
	bytes := ratio * w * 10000 / us >> 10
	if r := uint64(c.minRTT/time.Microsecond) >> 9; c.minRTT > 0 && r < 32 {
		bytes += tsoMaxBytes >> r
	}
	bytes = min(bytes, tsoMaxBytes)
	segs := max(int(bytes)/c.mss, tsoMinSegs)
	if segs*c.mss >= tsoMaxBytes {
		segs = 0 // the link's GSO limit is the smaller one
	}
	c.tsoSegs = segs
}
