package tcp

import (
	"net/netip"
	"time"
)

// SocketInfo describes one TCP socket, as a line of `ss -tanoi`.
type SocketInfo struct {
	State         State
	Local, Remote netip.AddrPort
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
	}
	if c.tkind != timerNone {
		si.TimerLeft = max(c.tat.Sub(now), 0)
	}
	if c.cc != nil {
		si.CWnd, si.SSThresh = c.cc.Window(), c.cc.SSThresh()
	}
	return si
}
