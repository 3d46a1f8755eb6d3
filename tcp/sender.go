package tcp

import "time"

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
	gsoMax                      int    // largest super-segment the route takes (GSONetwork); 0: none
	segPay                      int    // payload per segment of the super-segment being built
	advMSS                      int    // the MSS we announce: route MTU minus headers

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
}
