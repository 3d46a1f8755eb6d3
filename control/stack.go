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

// CountersOf returns the stack's counters in the order they were registered (the
// kernel's MIB order within each group), followed by TCP's when the stack's registry
// does not hold them, and TcpCurrEstab (a gauge in the kernel's Tcp group: connections in
// ESTABLISHED or CLOSE-WAIT, RFC 4022 tcpCurrEstab).
func CountersOf(s *berth.Stack) []Counter {
	var out []Counter
	have := map[string]bool{}
	for name, v := range s.Net().Counters().All() {
		out = append(out, Counter{name, v})
		have[name] = true
	}
	if p := s.TCP(); p != nil && !have["TcpActiveOpens"] {
		st := &p.Stats
		// Linux /proc/net/snmp "Tcp:" order, then the TcpExt ones.
		for _, c := range []struct {
			name string
			v    uint64
		}{
			{"TcpActiveOpens", st.ActiveOpens.Load()},
			{"TcpPassiveOpens", st.PassiveOpens.Load()},
			{"TcpAttemptFails", st.AttemptFails.Load()},
			{"TcpEstabResets", st.EstabResets.Load()},
			{"TcpInSegs", st.InSegs.Load()},
			{"TcpOutSegs", st.OutSegs.Load()},
			{"TcpRetransSegs", st.RetransSegs.Load()},
			{"TcpInErrs", st.InErrs.Load()},
			{"TcpOutRsts", st.OutRsts.Load()},
			{"TcpExtTCPChallengeACK", st.ChallengeACKs.Load()},
			{"TcpExtListenDrops", st.ListenDrops.Load()},
		} {
			out = append(out, Counter{c.name, c.v})
			have[c.name] = true
		}
	}
	if !have["TcpCurrEstab"] {
		n := 0
		for _, si := range s.Sockets() {
			if si.Protocol == "tcp" && (si.State == "ESTAB" || si.State == "CLOSE-WAIT") {
				n++
			}
		}
		out = append(out, Counter{"TcpCurrEstab", uint64(n)})
	}
	return out
}
