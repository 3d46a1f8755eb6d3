package berth

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/tcp"
)

// SocketInfo describes one socket, like a line of `ss -uan`/`ss -tan`. Protocol-specific
// details live in optional fields (TCP's in TCP).
type SocketInfo struct {
	Protocol string         // "udp", "tcp"
	Local    netip.AddrPort // bound address (wildcard address when unbound to one)
	Remote   netip.AddrPort // zero unless connected
	State    string         // UDP: "UNCONN" or "ESTAB"; TCP: "LISTEN", "ESTAB", ...
	RecvQ    int            // bytes waiting to be read
	SendQ    int            // bytes waiting to be sent (always 0 for UDP)
	Drops    uint64         // datagrams dropped on a full receive queue (UDP)
	// TCP has the TCP details: timers, retransmissions, RTT, MSS, windows (like ss -tanoi).
	TCP *tcp.SocketInfo
}

// Sockets returns a snapshot of every socket, sorted by protocol, local and remote
// address.
func (s *Stack) Sockets() []SocketInfo {
	out := append(udpSockets(s), tcpSockets(s)...)
	slices.SortFunc(out, func(a, b SocketInfo) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), a.Local.Compare(b.Local), a.Remote.Compare(b.Remote))
	})
	return out
}

func udpSockets(s *Stack) []SocketInfo {
	eps := s.udp.Endpoints()
	out := make([]SocketInfo, 0, len(eps))
	for _, e := range eps {
		in := e.Info()
		state := "UNCONN"
		if in.Remote.IsValid() {
			state = "ESTAB"
		}
		out = append(out, SocketInfo{Protocol: "udp", Local: in.Local, Remote: in.Remote,
			State: state, RecvQ: in.RecvQ, Drops: in.Drops})
	}
	return out
}

// bindOptions are the options explicit binds use.
func (s *Stack) bindOptions() ports.BindOptions {
	return ports.BindOptions{Privileged: !s.cfg.Unprivileged}
}
