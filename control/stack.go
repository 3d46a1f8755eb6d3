package control

import (
	"context"
	"io"

	"github.com/berthnet/berth"
)

// FromStack returns the Source of a berth stack. With a Tap that wraps the stack's links
// (tap.Wrap before AddInterface), the Source is also a Capturer; tap may be nil.
func FromStack(s *berth.Stack, tap *Tap) Source {
	st := stackSource{s: s}
	if tap != nil {
		return &capturingStackSource{stackSource: st, tap: tap}
	}
	return st
}

type stackSource struct{ s *berth.Stack }

func (st stackSource) Sockets() []Socket { return SocketsOf(st.s) }

// Counters are the stack's counters, then the process's own figures (ProcessCounters).
func (st stackSource) Counters() []Counter { return append(CountersOf(st.s), ProcessCounters()...) }

type capturingStackSource struct {
	stackSource
	tap *Tap
}

func (c *capturingStackSource) Capture(ctx context.Context, w io.Writer, count int) error {
	return c.tap.Capture(ctx, w, count)
}

// SocketsOf returns the stack's socket table.
func SocketsOf(s *berth.Stack) []Socket {
	infos := s.Sockets()
	out := make([]Socket, 0, len(infos))
	for _, si := range infos {
		so := Socket{Netid: si.Protocol, State: si.State, RecvQ: si.RecvQ, SendQ: si.SendQ,
			Local: si.Local, Peer: si.Remote, Drops: si.Drops}
		if t := si.TCP; t != nil {
			so.TCP = &TCPInfo{RTT: t.RTT, RTTVar: t.RTTVar, RTO: t.RTO, MSS: t.MSS,
				CWnd: t.CWnd, SSThresh: t.SSThresh, SndWnd: t.SndWnd, RcvWnd: t.RcvWnd,
				SndWScale: t.SndWScale, RcvWScale: t.RcvWScale, // -1 when not negotiated
				Congestion: t.CongestionControl, TS: t.Timestamps, SACK: t.SACK,
				Retrans: t.Retrans, Backoff: t.Backoff, Timer: t.Timer, TimerLeft: t.TimerLeft}
		}
		out = append(out, so)
	}
	return out
}

// CountersOf returns every counter of the stack (Stack.Stats: the network layer's, UDP's
// and TCP's, TcpCurrEstab a gauge among them) in the order they were registered, the
// kernel's MIB order within each group.
func CountersOf(s *berth.Stack) []Counter {
	var out []Counter
	for name, v := range s.Net().Counters().All() {
		out = append(out, Counter{name, v})
	}
	return out
}
