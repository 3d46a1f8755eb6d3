package tcp

// Congestion window validation (RFC 7661's question, answered as Linux's
// tcp_cwnd_validate and tcp_is_cwnd_limited do): cwnd grows on an ACK only if it limited
// the sender. An application-limited sender that never fills cwnd must not have it grow
// without bound, since a window that was never used says nothing about the path (RFC
// 7661 §4.1). In slow start Linux grows cwnd as long as it is below twice the most that
// was in flight in the current window, so that a flow that sends exactly its initial
// window still ends the round with twice it (tcp/slow_start/slow-start-app-limited.pkt:
// ten segments sent, cwnd 10 → 20), although each ACK leaves less in flight.

// cwndUsage is how fully the current window used cwnd. It is embedded in sender and
// guarded by Conn.mu.
type cwndUsage struct {
	// isCwndLimited: output stopped on cwnd in the current window. maxOut: the most that
	// was outstanding in it, in bytes (Linux's max_packets_out). usageSeq: SND.NXT when
	// the window began; once SND.UNA passes it a new window starts.
	isCwndLimited bool
	maxOut        int
	usageSeq      uint32
}

// cwndValidate records the end of an output pass that sent something or was stopped by
// cwnd (limited).
func (c *Conn) cwndValidate(limited bool) {
	out := int(c.sndNxt - c.sndUna)
	if !seqLT(c.sndUna, c.usageSeq) || limited || (!c.isCwndLimited && out > c.maxOut) {
		c.isCwndLimited, c.maxOut, c.usageSeq = limited, out, c.sndNxt
	}
}

// cwndLimited reports whether an ACK may grow cwnd: the current window was cwnd-limited,
// or, in slow start, cwnd is below twice the most that was in flight.
func (c *Conn) cwndLimited() bool {
	if c.isCwndLimited {
		return true
	}
	w := c.cc.Window()
	return w < c.cc.SSThresh() && w < 2*c.maxOut
}
