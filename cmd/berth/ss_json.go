package main

import (
	"time"

	"github.com/berthnet/berth/control"
)

// ssJSONSocket is one row of "berth ss --json". Every quantity's key names its unit, as
// the text columns do (rtt in ms there, rtt_us here; cwnd in segments): the control
// protocol's own JSON (control.Socket) is for programs that speak it, this is for people
// and scripts reading a command's output.
type ssJSONSocket struct {
	Netid string `json:"netid"`
	State string `json:"state"`
	// For a TCP listener ss shows the accept queue and the backlog in these columns:
	// connections, not bytes.
	RecvQ     *int       `json:"recv_q_bytes,omitempty"`
	SendQ     *int       `json:"send_q_bytes,omitempty"`
	AcceptQ   *int       `json:"accept_queue_conns,omitempty"`
	Backlog   *int       `json:"backlog_conns,omitempty"`
	Local     string     `json:"local"`
	Peer      string     `json:"peer"` // "" unless connected
	DropsDgms uint64     `json:"drops_datagrams,omitempty"`
	TCP       *ssJSONTCP `json:"tcp,omitempty"`
}

// ssJSONTCP is ss -i's and -o's TCP internals with their units.
type ssJSONTCP struct {
	RTOus    int64 `json:"rto_us"`
	RTTus    int64 `json:"rtt_us"`
	RTTVarus int64 `json:"rttvar_us"`
	MSS      int   `json:"mss_bytes"`
	CWndSegs int   `json:"cwnd_segments"`
	CWnd     int   `json:"cwnd_bytes"`
	// The slow-start threshold; omitted while it is still "infinite" (slow start has not
	// ended), as ss omits it.
	SSThreshSegs *int   `json:"ssthresh_segments,omitempty"`
	SndWnd       int    `json:"snd_wnd_bytes"`
	RcvWnd       int    `json:"rcv_wnd_bytes"`
	SndWScale    *int   `json:"snd_wscale_shift,omitempty"`
	RcvWScale    *int   `json:"rcv_wscale_shift,omitempty"`
	Congestion   string `json:"congestion,omitempty"`
	TS           bool   `json:"ts"`
	SACK         bool   `json:"sack"`
	RetransSegs  uint64 `json:"retrans_segments"`
	Backoff      int    `json:"backoff_timeouts"`
	Timer        string `json:"timer"`
	TimerLeftms  int64  `json:"timer_left_ms"`
}

func intp(v int) *int { return &v }

func ssJSON(socks []control.Socket) []ssJSONSocket {
	out := make([]ssJSONSocket, 0, len(socks))
	for _, s := range socks {
		r := ssJSONSocket{Netid: s.Netid, State: s.State, Local: s.Local.String(), DropsDgms: s.Drops}
		if s.Peer.IsValid() {
			r.Peer = s.Peer.String()
		}
		if s.Netid == "tcp" && s.State == "LISTEN" {
			r.AcceptQ, r.Backlog = intp(s.RecvQ), intp(s.SendQ)
		} else {
			r.RecvQ, r.SendQ = intp(s.RecvQ), intp(s.SendQ)
		}
		if t := s.TCP; t != nil {
			j := &ssJSONTCP{
				RTOus: t.RTO.Microseconds(), RTTus: t.RTT.Microseconds(), RTTVarus: t.RTTVar.Microseconds(),
				MSS: t.MSS, CWnd: t.CWnd, SndWnd: t.SndWnd, RcvWnd: t.RcvWnd,
				Congestion: t.Congestion, TS: t.TS, SACK: t.SACK,
				RetransSegs: t.Retrans, Backoff: t.Backoff, Timer: t.Timer,
				TimerLeftms: t.TimerLeft.Round(time.Millisecond).Milliseconds(),
			}
			if t.MSS > 0 {
				j.CWndSegs = t.CWnd / t.MSS
				if t.SSThresh > 0 && t.SSThresh < 1<<30 {
					j.SSThreshSegs = intp(t.SSThresh / t.MSS)
				}
			}
			if t.SndWScale >= 0 && t.RcvWScale >= 0 {
				j.SndWScale, j.RcvWScale = intp(t.SndWScale), intp(t.RcvWScale)
			}
			r.TCP = j
		}
		out = append(out, r)
	}
	return out
}
