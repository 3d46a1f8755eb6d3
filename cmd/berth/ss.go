package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthnet/berth/control"
	"github.com/berthnet/berth/ports"
)

// ssUsage is the synopsis of berth ss (after "berth "); main.go's table lists the
// command.
const ssUsage = "ss [-t] [-u] [-l] [-a] [-n] [-i] [-o] [-4|-6] [--json] [--control PATH | --tun NAME]"

// ssDoc is the text of berth help ss.
var ssDoc = `Prints the socket table of a running "berth up", "berth run" or "berth attach",
read through its control socket, with the columns and state names of ss: Netid,
State, Recv-Q, Send-Q, Local Address:Port, Peer Address:Port. For run and attach
these are the berth side of the namespace's forwarded connections.

  -t, --tcp        TCP sockets            -u, --udp        UDP sockets
  -l, --listening  only listening sockets (TCP LISTEN, unconnected UDP)
  -a, --all        every socket (default: connected sockets, as ss: neither
                   listening nor in TIME-WAIT or SYN-RECV)
  -n, --numeric    port numbers instead of the registry's service names
  -i, --info       TCP internals: rto, rtt/rttvar (ms), mss, cwnd and ssthresh
                   (segments), windows, retrans (current/total)
  -o, --options    timers: timer:(name,time left,retransmits)
  -4, -6           IPv4 or IPv6 sockets only
  --json           the table as JSON, each key with its unit: recv_q_bytes,
                   rtt_us, cwnd_segments, timer_left_ms, ... (a listener's queues:
                   accept_queue_conns, backlog_conns)
  --control PATH   the control socket (default: the only one in ` + control.Dir() + `)
  --tun NAME       the control socket of "berth up --tun NAME"

Short flags combine: -tln. Exit status 1 when no berth is running there.

Examples:
  berth ss -tln
  berth ss -ti --tun berth0
  berth ss -ua --control /run/berth/berth0.sock`

// ssOptions are the flags of `berth ss`; demo uses the same table.
type ssOptions struct {
	tcp, udp       bool
	listening, all bool
	numeric        bool
	info, timers   bool
	v4, v6         bool
	json           bool
	target         controlTarget
}

// controlTarget is where a control-socket client connects: --control, --tun, or found.
type controlTarget struct {
	path, tun string
}

// resolve returns the control socket's path.
func (t controlTarget) resolve() (string, error) {
	switch {
	case t.path != "":
		return t.path, nil
	case t.tun != "":
		return control.DefaultPath(t.tun), nil
	}
	return control.Find()
}

// controlError turns a client error into a message that says what to do.
func controlError(c *command, path string, err error) int {
	if errors.Is(err, control.ErrNotRunning) {
		where := path
		if where == "" {
			where = strings.TrimPrefix(err.Error(), control.ErrNotRunning.Error()+": ")
			return fail(c.name, "no berth running (%s); start one with: berth up --tun NAME --addr PREFIX, or berth run", where)
		}
		return fail(c.name, "no berth running at %s; start one with: berth up --tun NAME --addr PREFIX, or give its socket with --control PATH", where)
	}
	return fail(c.name, "%v", err)
}

// shortFlags maps a short flag letter to what it sets; parseFlags handles the rest.
type flagSpec struct {
	short  byte
	long   string
	bool   *bool
	value  *string // flags with a value: --control PATH, --control=PATH
	valueN string  // the value's name in messages
}

// parseFlags parses ss-style flags: combined short flags (-tln), long flags (--tcp), and
// flags with values anywhere among the positional arguments, which it returns.
func parseFlags(specs []flagSpec, args []string) (pos []string, help bool, err error) {
	find := func(long string, short byte) *flagSpec {
		for i := range specs {
			if (long != "" && specs[i].long == long) || (short != 0 && specs[i].short == short) {
				return &specs[i]
			}
		}
		return nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return append(pos, args[i+1:]...), false, nil
		case a == "-h" || a == "-help" || a == "--help":
			return nil, true, nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			s := find(name, 0)
			if s == nil {
				return nil, false, fmt.Errorf("unknown flag --%s", name)
			}
			if s.bool != nil {
				if hasVal {
					return nil, false, fmt.Errorf("flag --%s takes no value", name)
				}
				*s.bool = true
				continue
			}
			if !hasVal {
				if i+1 >= len(args) {
					return nil, false, fmt.Errorf("flag --%s needs a value (%s)", name, s.valueN)
				}
				i++
				val = args[i]
			}
			*s.value = val
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				s := find("", a[j])
				if s == nil {
					return nil, false, fmt.Errorf("unknown flag -%c", a[j])
				}
				if s.bool != nil {
					*s.bool = true
					continue
				}
				// A flag with a value ends the cluster: -cPATH or -c PATH.
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, false, fmt.Errorf("flag -%c needs a value (%s)", a[j], s.valueN)
					}
					i++
					val = args[i]
				}
				*s.value = val
				break
			}
		default:
			pos = append(pos, a)
		}
	}
	return pos, false, nil
}

func targetFlags(t *controlTarget) []flagSpec {
	return []flagSpec{
		{long: "control", value: &t.path, valueN: "PATH"},
		{long: "tun", value: &t.tun, valueN: "NAME"},
	}
}

func runSS(c *command, args []string) int {
	var o ssOptions
	specs := append([]flagSpec{
		{short: 't', long: "tcp", bool: &o.tcp},
		{short: 'u', long: "udp", bool: &o.udp},
		{short: 'l', long: "listening", bool: &o.listening},
		{short: 'a', long: "all", bool: &o.all},
		{short: 'n', long: "numeric", bool: &o.numeric},
		{short: 'i', long: "info", bool: &o.info},
		{short: 'o', long: "options", bool: &o.timers},
		{short: '4', long: "ipv4", bool: &o.v4},
		{short: '6', long: "ipv6", bool: &o.v6},
		{long: "json", bool: &o.json},
	}, targetFlags(&o.target)...)
	pos, help, err := parseFlags(specs, args)
	switch {
	case help:
		return runHelp([]string{c.name}) // the same text as berth help NAME
	case err != nil:
		return usageError(c, "%v", err)
	case len(pos) > 0:
		return usageError(c, "unexpected argument %q (berth ss takes no filter expressions)", pos[0])
	case o.v4 && o.v6:
		return usageError(c, "-4 and -6 exclude each other")
	}
	path, err := o.target.resolve()
	if err != nil {
		return controlError(c, "", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	socks, err := (&control.Client{Path: path}).Sockets(ctx)
	if err != nil {
		return controlError(c, path, err)
	}
	socks = o.filter(socks)
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(ssJSON(sortSockets(socks))); err != nil {
			return fail(c.name, "%v", err)
		}
		return exitOK
	}
	writeSocketTable(stdout, sortSockets(socks), o, nil)
	return exitOK
}

// sortSockets orders a table for reading: TCP then UDP, by local port, a port's
// listening socket first, then by local and peer address.
func sortSockets(socks []control.Socket) []control.Socket {
	out := slices.Clone(socks)
	slices.SortStableFunc(out, func(a, b control.Socket) int {
		return cmp.Or(cmp.Compare(a.Netid, b.Netid), cmp.Compare(a.Local.Port(), b.Local.Port()),
			-cmp.Compare(btoi(a.Listening()), btoi(b.Listening())),
			a.Local.Addr().Compare(b.Local.Addr()), a.Peer.Compare(b.Peer))
	})
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// filter keeps the sockets ss would show with these flags.
func (o ssOptions) filter(socks []control.Socket) []control.Socket {
	var out []control.Socket
	for _, s := range socks {
		if (o.tcp || o.udp) && !(o.tcp && s.Netid == "tcp" || o.udp && s.Netid == "udp") {
			continue
		}
		// ss: -a shows every socket, -l the listening ones; by default the connected ones,
		// which for ss (SS_CONN) leaves out TIME-WAIT and SYN-RECV as well.
		switch {
		case o.all:
		case o.listening:
			if !s.Listening() {
				continue
			}
		case s.Listening(), s.State == "TIME-WAIT", s.State == "SYN-RECV", s.State == "CLOSE":
			continue
		}
		is4 := s.Local.Addr().Is4() || s.Local.Addr().Is4In6()
		if o.v4 && !is4 || o.v6 && (is4 || !s.Local.Addr().IsValid()) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// palette colours parts of the table; nil fields mean plain text.
type palette struct {
	header, state, service func(string) string
}

// writeSocketTable prints socks in ss's layout: addresses right-aligned and ports
// left-aligned around the ':' so the columns line up.
func writeSocketTable(w io.Writer, socks []control.Socket, o ssOptions, p *palette) {
	type row struct {
		netid, state, recvq, sendq, laddr, lport, paddr, pport string
		named                                                  [2]bool // port shown by name
		extra                                                  string
	}
	rows := make([]row, 0, len(socks))
	wNetid, wState, wRecv, wSend := len("Netid"), len("State"), len("Recv-Q"), len("Send-Q")
	wLA, wLP, wPA, wPP := len("Local Address"), len("Port"), len("Peer Address"), len("Port")
	for _, s := range socks {
		r := row{netid: s.Netid, state: s.State, recvq: strconv.Itoa(s.RecvQ), sendq: strconv.Itoa(s.SendQ)}
		r.laddr = ssAddr(s.Local.Addr(), netip.Addr{})
		r.lport, r.named[0] = ssPort(s.Local.Port(), s.Netid, o.numeric)
		if s.Peer.IsValid() {
			r.paddr = ssAddr(s.Peer.Addr(), netip.Addr{})
			r.pport, r.named[1] = ssPort(s.Peer.Port(), s.Netid, o.numeric)
		} else {
			// ss shows the wildcard of the socket's family and port '*'.
			r.paddr = ssAddr(netip.Addr{}, s.Local.Addr())
			r.pport = "*"
		}
		if o.timers && s.TCP != nil {
			r.extra = fmt.Sprintf(" timer:(%s,%s,%d)", s.TCP.Timer, ssDuration(s.TCP.TimerLeft), s.TCP.Backoff)
		}
		wNetid, wState = max(wNetid, len(r.netid)), max(wState, len(r.state))
		wRecv, wSend = max(wRecv, len(r.recvq)), max(wSend, len(r.sendq))
		wLA, wLP = max(wLA, len(r.laddr)), max(wLP, len(r.lport))
		wPA, wPP = max(wPA, len(r.paddr)), max(wPP, len(r.pport))
		rows = append(rows, r)
	}
	paint := func(f func(string) string, s string) string {
		if p == nil || f == nil {
			return s
		}
		return f(s)
	}
	// Padding is computed on the plain text so colour codes do not disturb it.
	pad := func(s string, width int, right bool) string {
		fill := strings.Repeat(" ", max(width-len(s), 0))
		if right {
			return fill + s
		}
		return s + fill
	}
	var hp func(string) string
	if p != nil {
		hp = p.header
	}
	header := fmt.Sprintf("%s %s %s %s %s:%s %s:%s",
		pad("Netid", wNetid, false), pad("State", wState, false), pad("Recv-Q", wRecv, false), pad("Send-Q", wSend, false),
		pad("Local Address", wLA, true), pad("Port", wLP, false), pad("Peer Address", wPA, true), "Port")
	fmt.Fprintln(w, paint(hp, header))
	for i, r := range rows {
		var sp, np func(string) string
		if p != nil {
			sp, np = p.state, p.service
		}
		port := func(s string, named bool, width int) string {
			if named {
				return paint(np, s) + strings.Repeat(" ", max(width-len(s), 0))
			}
			return pad(s, width, false)
		}
		line := pad(r.netid, wNetid, false) + " " + paint(sp, r.state) + strings.Repeat(" ", wState-len(r.state)) + " " +
			pad(r.recvq, wRecv, false) + " " + pad(r.sendq, wSend, false) + " " +
			pad(r.laddr, wLA, true) + ":" + port(r.lport, r.named[0], wLP) + " " +
			pad(r.paddr, wPA, true) + ":" + port(r.pport, r.named[1], 0)
		fmt.Fprintln(w, strings.TrimRight(line, " ")+r.extra)
		if o.info && socks[i].TCP != nil && socks[i].State != "LISTEN" {
			fmt.Fprintln(w, "\t"+tcpInfoLine(socks[i].TCP))
		}
	}
}

// ssAddr formats an address as ss does: IPv6 in brackets; a missing address is the
// wildcard of like's family ("*" when like is missing too).
func ssAddr(a, like netip.Addr) string {
	if !a.IsValid() {
		switch {
		case like.Is4():
			return "0.0.0.0"
		case like.Is6():
			return "[::]"
		}
		return "*"
	}
	if a.Is4() {
		return a.String()
	}
	return "[" + a.String() + "]"
}

// ssPort is the registry's service name for port (unless numeric), else the number;
// named reports which.
func ssPort(port uint16, netid string, numeric bool) (s string, named bool) {
	if port == 0 {
		return "*", false
	}
	if !numeric {
		if n := ports.ServiceName(ports.Port(port), netid); n != "" {
			return n, true
		}
	}
	return strconv.Itoa(int(port)), false
}

// tcpInfoLine is the -i line: ss's names and units (times in ms, windows in segments).
func tcpInfoLine(t *control.TCPInfo) string {
	var b strings.Builder
	// ss -i order: the options in use, the algorithm, then the window scales.
	if t.TS {
		b.WriteString("ts ")
	}
	if t.SACK {
		b.WriteString("sack ")
	}
	if t.Congestion != "" {
		b.WriteString(t.Congestion + " ")
	}
	if t.SndWScale >= 0 && t.RcvWScale >= 0 {
		fmt.Fprintf(&b, "wscale:%d,%d ", t.SndWScale, t.RcvWScale)
	}
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64)
	}
	fmt.Fprintf(&b, "rto:%s rtt:%s/%s mss:%d", ms(t.RTO.Round(time.Millisecond)), ms(t.RTT.Round(time.Microsecond)), ms(t.RTTVar.Round(time.Microsecond)), t.MSS)
	if t.MSS > 0 {
		fmt.Fprintf(&b, " cwnd:%d", t.CWnd/t.MSS)
		// The kernel prints ssthresh only once slow start has ended (it starts "infinite").
		if t.SSThresh > 0 && t.SSThresh < 1<<30 {
			fmt.Fprintf(&b, " ssthresh:%d", t.SSThresh/t.MSS)
		}
	}
	fmt.Fprintf(&b, " snd_wnd:%d rcv_wnd:%d retrans:%d/%d", t.SndWnd, t.RcvWnd, t.Backoff, t.Retrans)
	return b.String()
}

// ssDuration formats a timer as ss does: 200ms, 14sec, 9min59sec.
func ssDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return strconv.Itoa(int(d/time.Millisecond)) + "ms"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "sec"
	}
	return fmt.Sprintf("%dmin%dsec", int(d/time.Minute), int(d%time.Minute/time.Second))
}
