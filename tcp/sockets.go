package tcp

import (
	"net/netip"
	"time"
)

// SocketInfo describes one TCP socket, as a line of `ss -tanoi`.
type SocketInfo struct {
	State         State          // the connection's state
	Local, Remote netip.AddrPort // its addresses
	// RecvQ and SendQ: for a connection, bytes not yet read and bytes not yet
	// acknowledged; for a listener, the accept queue's length and the backlog.
	RecvQ, SendQ int
	Timer        string        // "on" (retransmit), "persist", "timewait", "off"
	TimerLeft    time.Duration // until the timer fires
	Retrans      uint64        // segments retransmitted
	Backoff      int           // consecutive timeouts
	RTT, RTTVar  time.Duration
	RTO          time.Duration
	MSS          int
	CWnd         int // bytes
	SSThresh     int // bytes
	SndWnd       int
	RcvWnd       int
	// CongestionControl is the algorithm's name: "cubic" or "reno".
	CongestionControl string
	// What ss -i shows besides: the window-scale shifts (RFC 7323 §2; -1 when not
	// negotiated), whether timestamps and SACK are on, the minimum RTT, and the
	// scoreboard's SACKed and lost bytes, the bytes retransmitted and not yet acknowledged
	// nor lost again (Linux's retrans_out, tcpi_retrans), and whether reordering was seen
	// (RACK).
	SndWScale, RcvWScale     int
	Timestamps, SACK         bool
	MinRTT                   time.Duration
	SACKed, Lost, RetransOut int
	Reordering               bool
	// SynData: the connection's SYN carried data the server took, all of it, as its
	// SYN-ACK acknowledged (a client) or as accepted with a valid cookie (a server):
	// Fast Open succeeded (RFC 7413; Linux's TCPI_OPT_SYN_DATA). False while the
	// handshake is under way and when the SYN-ACK acknowledged only the SYN.
	SynData bool
	// What Linux's TCP_INFO reports besides. LastDataSent, LastDataRecv and LastAckRecv
	// are the times since data was last sent and received and since an ACK last came
	// (counted from the handshake's completion before any). BusyTime is how long data
	// was queued or in flight; RwndLimited and SndbufLimited the parts of it when the
	// peer's window held new data back and when a writer waited for send-buffer space
	// (Linux's chronographs, tcpi_busy_time and the rest).
	LastDataSent, LastDataRecv, LastAckRecv time.Duration
	BusyTime, RwndLimited, SndbufLimited    time.Duration
	// Delivered counts the segments the peer received, our SYN included (tcpi_delivered).
	Delivered uint64
	// CAState is the sender's congestion-avoidance state (tcpi_ca_state).
	CAState CAState
	// ReorderingSegs is the reordering the sender has seen, in segments: how far a
	// segment arrived behind data sent after it (3 until more is seen; tcpi_reordering).
	ReorderingSegs int
	// RcvMSS is the largest segment payload received, at most our MSS (tcpi_rcv_mss).
	RcvMSS int
	// ECN: the connection negotiated Explicit Congestion Notification (RFC 3168; Linux's
	// TCPI_OPT_ECN).
	ECN bool
}

// Sockets returns a snapshot of every TCP socket.
func (p *Protocol) Sockets() []SocketInfo {
	p.mu.Lock()
	socks := make([]any, 0, len(p.socks))
	for s := range p.socks {
		socks = append(socks, s)
	}
	p.mu.Unlock()
	out := make([]SocketInfo, 0, len(socks))
	now := p.clk.Now()
	for _, s := range socks {
		switch s := s.(type) {
		case *Listener:
			n, backlog := s.QueueLen()
			out = append(out, SocketInfo{State: StateListen, Local: s.local, RecvQ: n, SendQ: backlog, Timer: "off"})
		case *Conn:
			out = append(out, s.info(now))
		}
	}
	return out
}

// Info returns the connection's line for Sockets.
func (c *Conn) Info() SocketInfo { return c.info(c.p.clk.Now()) }

func (c *Conn) info(now time.Time) SocketInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	si := SocketInfo{
		State: c.state, Local: c.local, Remote: c.remote,
		RecvQ: c.rcvBuf.n, SendQ: int(c.sndMax - c.sndUna),
		Timer: timerNames[c.tkind], Retrans: c.retrans, Backoff: c.retries,
		RTT: c.srtt, RTTVar: c.rttvar, RTO: c.rto, MSS: c.mss,
		SndWnd: int(c.sndWnd), RcvWnd: int(c.rcvWnd()),
		SndWScale: -1, RcvWScale: -1,
		Timestamps: c.tsOK, SACK: c.sackOK, MinRTT: c.rackMinRTT,
		SACKed: c.sb.sacked, Lost: c.sb.lost, RetransOut: c.sb.rexmitOut, Reordering: c.rackReord,
		SynData: c.synDataAcked, ECN: c.ecn.ok,
	}
	if c.wsPeer && c.state != StateSynSent {
		si.SndWScale, si.RcvWScale = int(c.sndWscale), int(c.rcvWscale)
	}
	if c.tkind != timerNone {
		si.TimerLeft = max(c.tat.Sub(now), 0)
	}
	c.infoStats(&si, now)
	if c.cc != nil {
		si.CWnd, si.SSThresh = c.cc.Window(), c.cc.SSThresh()
		si.CongestionControl = c.cc.Name()
	}
	return si
}
