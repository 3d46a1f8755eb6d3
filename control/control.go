// Package control is the control socket of a running berth (berth up, run or attach): a
// unix socket through which `berth ss`, `berth stats` and `berth capture` read the socket
// table and the counters of a stack and start packet captures on it, and through which
// `berth forward` changes the port forwards of a run or attach session.
//
// The protocol is one request per connection. The client sends one line of JSON, a
// Request; the server answers with one line of JSON, a Response. A capture's Response
// ({"ok":true}) is followed by the capture itself, a pcap stream, until the requested
// number of packets has been recorded or either side closes the connection.
//
//	→ {"op":"sockets"}
//	← {"ok":true,"sockets":[{"netid":"tcp","state":"LISTEN","local":"0.0.0.0:7",...}]}
//	→ {"op":"counters"}
//	← {"ok":true,"counters":[{"name":"TcpActiveOpens","value":3},...]}
//	→ {"op":"capture","count":100}
//	← {"ok":true}
//	← pcap file header, records...
//	→ {"op":"forward","action":"add","mapping":"8080:80/tcp"}
//	← {"ok":true,"forwards":["8080:80/tcp"]}
//
// Serve runs the server for a Source (FromStack adapts a *berth.Stack); Client talks to
// it. Tap records the packets of the links it wraps for captures. A Source that is also a
// Capturer serves captures, one that is also a PortForwarder the forward op.
package control

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Socket is one line of the socket table, with ss's column meanings.
type Socket struct {
	Netid string `json:"netid"` // "tcp", "udp"
	// State is ss's name: LISTEN, ESTAB, SYN-SENT, SYN-RECV, FIN-WAIT-1, FIN-WAIT-2,
	// TIME-WAIT, CLOSE-WAIT, LAST-ACK, CLOSING, CLOSE; UNCONN for an unconnected UDP socket.
	State string `json:"state"`
	// RecvQ and SendQ: bytes not yet read and bytes not yet acknowledged; for a TCP
	// listener, the accept queue's length and the backlog (as ss shows them).
	RecvQ int            `json:"recv_q"`
	SendQ int            `json:"send_q"`
	Local netip.AddrPort `json:"local"`
	Peer  netip.AddrPort `json:"peer"`            // the zero value ("") unless connected
	Drops uint64         `json:"drops,omitempty"` // UDP: datagrams dropped on a full queue
	TCP   *TCPInfo       `json:"tcp,omitempty"`   // TCP internals (ss -i, ss -o)
}

// Listening reports whether ss counts the socket as listening (ss -l): a TCP listener or
// an unconnected UDP socket.
func (s Socket) Listening() bool { return s.State == "LISTEN" || s.State == "UNCONN" }

// TCPInfo are the TCP internals ss -i and ss -o show. Durations are in nanoseconds in
// JSON.
type TCPInfo struct {
	RTT      time.Duration `json:"rtt"`      // smoothed round-trip time (RFC 6298)
	RTTVar   time.Duration `json:"rttvar"`   // its variation
	RTO      time.Duration `json:"rto"`      // retransmission timeout
	MSS      int           `json:"mss"`      // sender's maximum segment size, bytes
	CWnd     int           `json:"cwnd"`     // congestion window, bytes
	SSThresh int           `json:"ssthresh"` // slow-start threshold, bytes
	SndWnd   int           `json:"snd_wnd"`  // peer's advertised window, bytes
	RcvWnd   int           `json:"rcv_wnd"`  // window we advertise, bytes
	// SndWScale and RcvWScale are the window scale shifts (RFC 7323 §2); -1 when the stack
	// does not report them.
	SndWScale int `json:"snd_wscale"`
	RcvWScale int `json:"rcv_wscale"`
	// Congestion is the congestion-control algorithm ("cubic", "reno"); TS and SACK say
	// whether timestamps and SACK are on — ss -i prints all three first.
	Congestion string        `json:"congestion,omitempty"`
	TS         bool          `json:"ts,omitempty"`
	SACK       bool          `json:"sack,omitempty"`
	Retrans    uint64        `json:"retrans"`    // segments retransmitted
	Backoff    int           `json:"backoff"`    // consecutive timeouts
	Timer      string        `json:"timer"`      // "on", "persist", "keepalive", "timewait", "off"
	TimerLeft  time.Duration `json:"timer_left"` // until the timer fires
}

// Counter is one named counter, named like the kernel's (nstat, netstat -s).
type Counter struct {
	Name  string `json:"name"`  // counter name, as Stack.Stats names it
	Value uint64 `json:"value"` // its value
}

// Request is what a client sends: Op is "sockets", "counters", "capture" or "forward".
type Request struct {
	Op    string `json:"op"`              // the operation: "sockets", "counters", "capture" or "forward"
	Count int    `json:"count,omitempty"` // capture: stop after this many packets (0: no limit)
	// Action is the forward op's "add", "rm" or "ls"; Mapping the port mapping added or
	// removed ([HOSTIP:]HOSTPORT:NSPORT[/tcp|/udp]).
	Action  string `json:"action,omitempty"`
	Mapping string `json:"mapping,omitempty"`
}

// Response is the server's answer. Error is set (and OK false) when the request failed.
type Response struct {
	OK       bool      `json:"ok"`                 // whether the request succeeded
	Error    string    `json:"error,omitempty"`    // why it did not, when OK is false
	Sockets  []Socket  `json:"sockets,omitempty"`  // the socket table (op "sockets")
	Counters []Counter `json:"counters,omitempty"` // the counters (op "counters")
	// Forwards are the port forwards in place after a forward op (also when it failed).
	Forwards []string `json:"forwards,omitempty"`
}

// maxRequest bounds a request line.
const maxRequest = 4096

// RunDir is where a berth running as root keeps its control sockets.
const RunDir = "/run/berth"

// Dir is the directory of the default control sockets: $XDG_RUNTIME_DIR/berth when
// XDG_RUNTIME_DIR is set, RunDir for root, and otherwise a per-user directory under the
// system's temporary directory.
func Dir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "berth")
	}
	if os.Geteuid() == 0 {
		return RunDir
	}
	return filepath.Join(os.TempDir(), "berth-"+strconv.Itoa(os.Geteuid()))
}

// DefaultPath is the control socket of the host named name (berth up uses its TUN
// device's name): Dir()/name.sock.
func DefaultPath(name string) string { return filepath.Join(Dir(), name+".sock") }

// Find returns the one control socket in Dir() (and RunDir, where a berth started with
// sudo puts its socket). It fails with ErrNotRunning when there is none, and with an
// error listing them when there are several.
func Find() (string, error) { return find([]string{Dir(), RunDir}) }

// find looks for control sockets in dirs.
func find(dirs []string) (string, error) {
	seen := map[string]bool{}
	var found []string
	for _, d := range dirs {
		m, _ := filepath.Glob(filepath.Join(d, "*.sock"))
		for _, p := range m {
			if !seen[p] {
				seen[p] = true
				found = append(found, p)
			}
		}
	}
	switch len(found) {
	case 0:
		where := slices.Compact(slices.Clone(dirs))
		return "", fmt.Errorf("%w: no control socket in %s", ErrNotRunning, strings.Join(where, " or "))
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("several berth hosts are running (%s): choose one with --control PATH or --tun NAME", strings.Join(found, ", "))
}

// ErrNotRunning is matched (errors.Is) by the errors of Find and Client when no berth
// serves the control socket.
var ErrNotRunning = errors.New("no berth running")
