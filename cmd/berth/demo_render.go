package main

// The demo's text report: demo (demo.go) runs the scenario and hands each step's findings
// to a demoWriter, which prints them as they come (or, with --json, the whole report at
// the end).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berthnet/berth/control"
	"github.com/berthnet/berth/ports"
)

// demoWriter prints the text report; with --json it prints nothing until end, which
// writes the report as JSON.
type demoWriter struct {
	w     io.Writer // the text's writer: io.Discard with --json
	jsonW io.Writer // nil without --json
	cfg   *demoConfig
	mu    sync.Mutex
	p     *palette
	bold  func(string) string
	dim   func(string) string
	red   func(string) string
	green func(string) string
}

func newDemoWriter(w io.Writer, cfg *demoConfig) *demoWriter {
	d := &demoWriter{w: w, cfg: cfg}
	plain := func(s string) string { return s }
	d.bold, d.dim, d.red, d.green = plain, plain, plain, plain
	if cfg.color {
		sgr := func(code string) func(string) string {
			return func(s string) string { return "\x1b[" + code + "m" + s + "\x1b[0m" }
		}
		d.bold, d.dim, d.red, d.green = sgr("1"), sgr("2"), sgr("31"), sgr("32")
		d.p = &palette{header: sgr("1"), state: sgr("32"), service: sgr("36")}
	}
	if cfg.json {
		d.w, d.jsonW = io.Discard, w
	}
	return d
}

func (d *demoWriter) printf(format string, a ...any) { fmt.Fprintf(d.w, format, a...) }

func (d *demoWriter) intro(rep *demoReport) {
	link := "no impairment"
	if d.cfg.loss > 0 || d.cfg.delay > 0 {
		link = fmt.Sprintf("%g%% loss and %v delay each way", d.cfg.loss, d.cfg.delay)
	}
	fam := "IPv4"
	if d.cfg.ipv6 {
		fam = "IPv6"
	}
	d.printf("%s %s and a server on an in-process %s network\n", d.bold("berth demo:"), plural(d.cfg.clients, "client"), fam)
	d.printf("  link   one in-memory pipe, MTU %d, %s\n", demoMTU, link)
	var svcs []string
	for _, s := range rep.Services {
		svcs = append(svcs, fmt.Sprintf("%s %d/%s", s.Name, s.Port, s.Network))
	}
	head := fmt.Sprintf("  server %s serves ", ssAddr(rep.Server, netip.Addr{}))
	d.printf("%s%s\n", head, wrapAt(strings.Join(svcs, ", "), ", ", len(head), 79, len(head)))
	d.printf("  client %s runs %s\n", ssAddr(rep.Client, netip.Addr{}), plural(d.cfg.clients, "client"))
	if d.cfg.pcap != "" {
		d.printf("  capture of the client's packets: %s\n", d.cfg.pcap)
	}
	d.printf("\n%s the client's stack picked an ephemeral source port for\n", d.bold("Multiplexing:"))
	d.printf("every connection and exchange, so they all share the address %s:\n", ssAddr(rep.Client, netip.Addr{}))
	d.printf("  %-6s %-12s %-15s    %-13s %s\n", "client", "service", "source", "destination", "result")
}

// plural is "1 client", "2 clients".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// wrapAt breaks s at each sep (keeping its punctuation: ", " leaves the comma at the end
// of the line) so that no line passes column width, indenting continuation lines by
// indent; s starts in column col.
func wrapAt(s, sep string, col, width, indent int) string {
	punct := strings.TrimRight(sep, " ")
	var b strings.Builder
	for i, part := range strings.Split(s, sep) {
		if i > 0 {
			b.WriteString(punct)
			col += len(punct)
			if col+1+len(part) > width {
				b.WriteString("\n" + strings.Repeat(" ", indent))
				col = indent
			} else {
				b.WriteString(" ")
				col++
			}
		}
		b.WriteString(part)
		col += len(part)
	}
	return b.String()
}

// exchange prints one finished exchange, as it happens.
func (d *demoWriter) exchange(e demoExchange) {
	d.mu.Lock()
	defer d.mu.Unlock()
	result := e.Result
	if !e.OK {
		result = "FAILED: " + e.Error
	}
	if r := []rune(result); len(r) > 25 {
		result = string(r[:24]) + "…"
	}
	if !e.OK {
		result = d.red(result)
	}
	src := "-"
	if e.Local.IsValid() {
		a, p := ssAddr(e.Local.Addr(), netip.Addr{}), strconv.Itoa(int(e.Local.Port()))
		src = a + ":" + d.bold(p) + strings.Repeat(" ", max(0, 15-len(a)-1-len(p)))
	} else {
		src = fmt.Sprintf("%-15s", src)
	}
	dst := ssAddr(e.Remote.Addr(), netip.Addr{}) + ":" + strconv.Itoa(int(e.Remote.Port()))
	d.printf("  %-6d %-12s %s -> %-13s %s\n", e.Client, e.Service+"/"+e.Network, src, dst, result)
}

func (d *demoWriter) flushExchanges(rep *demoReport) {
	ports := map[uint16]bool{}
	n := 0
	for _, e := range rep.Exchanges {
		if e.Local.IsValid() {
			ports[e.Local.Port()] = true
			n++
		}
	}
	d.printf("  %d connections and exchanges from %d different source ports.\n", n, len(ports))
}

func (d *demoWriter) demux(rep *demoReport) {
	d.printf("\n%s the server's stack told them apart by their socket\n", d.bold("Demultiplexing:"))
	d.printf("pairs (local address:port, peer address:port). Its socket table (ss -tuan):\n")
	writeSocketTable(d.w, sortSockets(rep.ServerSockets), ssOptions{all: true}, d.p)
	// One line per service port: how many peers share it.
	type key struct {
		network string
		port    uint16
	}
	peers := map[key][]string{}
	var keys []key
	for _, a := range append(slices.Clone(rep.Accepted), rep.Datagrams...) {
		k := key{a.Network, a.Local.Port()}
		if _, ok := peers[k]; !ok {
			keys = append(keys, k)
		}
		peers[k] = append(peers[k], strconv.Itoa(int(a.Peer.Port())))
	}
	slices.SortFunc(keys, func(a, b key) int {
		if a.network != b.network {
			return strings.Compare(a.network, b.network) // tcp, then udp
		}
		return int(a.port) - int(b.port)
	})
	d.printf("\n")
	for _, k := range keys {
		name := ports.ServiceName(ports.Port(k.port), k.network)
		what := "connections"
		if k.network == "udp" {
			what = "peers on one socket"
		}
		line := fmt.Sprintf("  %s %d/%s: %d %s, from ports %s", name, k.port, k.network, len(peers[k]), what, strings.Join(peers[k], " "))
		d.printf("%s\n", wrapAt(line, " ", 0, 80, 6))
	}
}

func (d *demoWriter) probes(rep *demoReport) {
	d.printf("\n%s nothing listens on %s port %d (discard):\n", d.bold("Closed ports:"), rep.Server, rep.Probes[0].Remote.Port())
	for _, p := range rep.Probes {
		how := "a TCP RST"
		if p.Network == "udp" {
			how = "ICMP port unreachable"
		}
		res := p.Error
		if p.Errno == "ECONNREFUSED" {
			res = d.green(res) + " (the server's stack sent " + how + ")"
		}
		d.printf("  %s: %s\n", p.Network, res)
	}
}

// demoCounterNames are the counters the text report shows, per family.
func demoCounterNames(v6 bool) []string {
	ip, icmp := "Ip", "Icmp"
	if v6 {
		ip, icmp = "Ip6", "Icmp6"
	}
	return []string{ip + "InReceives", ip + "OutRequests",
		"TcpActiveOpens", "TcpPassiveOpens", "TcpInSegs", "TcpOutSegs", "TcpRetransSegs",
		"TcpAttemptFails", "TcpOutRsts", "TcpCurrEstab",
		"UdpInDatagrams", "UdpOutDatagrams", "UdpNoPorts",
		icmp + "InDestUnreachs", icmp + "OutDestUnreachs"}
}

func (d *demoWriter) counters(rep *demoReport) {
	get := func(cs []control.Counter) map[string]uint64 {
		m := map[string]uint64{}
		for _, c := range cs {
			m[c.Name] = c.Value
		}
		return m
	}
	cl, sv := get(rep.ClientCounters), get(rep.ServerCounters)
	d.printf("\n%s (named like the kernel's; berth stats shows them all):\n", d.bold("Counters"))
	d.printf("  %-24s %10s %10s\n", "", "client", "server")
	for _, n := range demoCounterNames(d.cfg.ipv6) {
		d.printf("  %-24s %10d %10d\n", n, cl[n], sv[n])
	}
}

// end prints the last line of the text, or the whole report as JSON.
func (d *demoWriter) end(rep *demoReport) error {
	if d.jsonW != nil {
		enc := json.NewEncoder(d.jsonW)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "\nDone in %v.", time.Duration(rep.ElapsedMS)*time.Millisecond)
	if n := rep.failures(); n > 0 {
		fmt.Fprintf(&b, " %s", d.red(fmt.Sprintf("%d exchanges failed.", n)))
	}
	if rep.Pcap != "" {
		fmt.Fprintf(&b, " Capture: %s (tshark -r %s).", rep.Pcap, rep.Pcap)
	}
	d.printf("%s\n", b.String())
	return nil
}

// tableLines is the socket table as lines, for the http service's page.
func tableLines(socks []control.Socket) []string {
	var b strings.Builder
	writeSocketTable(&b, sortSockets(socks), ssOptions{all: true, numeric: true}, nil)
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
}
