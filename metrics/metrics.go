// Package metrics serves a berth host's counters and socket counts in the Prometheus
// text exposition format (version 0.0.4), for `berth up --metrics ADDR`.
//
// Each kernel-style counter becomes a metric named berth_ and its name in snake case,
// with the _total suffix of Prometheus counters: TcpActiveOpens is
// berth_tcp_active_opens_total, Ip6InReceives berth_ip6_in_receives_total. The HELP
// line keeps the kernel's name, so the numbers can be compared with nstat's. TcpCurrEstab,
// a gauge in the kernel's MIB too, is berth_tcp_curr_estab; berth_sockets counts the
// sockets by netid and state.
package metrics

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"unicode"

	"github.com/berthnet/berth/control"
)

// ContentType is the media type of the text exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// gauges are the counters that are levels, not running totals.
var gauges = map[string]bool{"TcpCurrEstab": true}

// Handler serves src's counters and socket counts at any path, for GET and HEAD.
func Handler(src control.Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		if r.Method == http.MethodHead {
			return
		}
		Write(w, src)
	})
}

// Write writes src's metrics in the text exposition format.
func Write(w io.Writer, src control.Source) error {
	bw := bufio.NewWriter(w)
	seen := map[string]bool{}
	for _, c := range src.Counters() {
		name, typ := "berth_"+SnakeCase(c.Name), "gauge"
		if !gauges[c.Name] && !control.ProcessGauges[c.Name] {
			name, typ = name+"_total", "counter"
		}
		if seen[name] {
			continue // two kernel names with one snake-case form: keep the first
		}
		seen[name] = true
		fmt.Fprintf(bw, "# HELP %s %s (kernel name %s).\n# TYPE %s %s\n%s %d\n",
			name, describe(typ), c.Name, name, typ, name, c.Value)
	}
	type key struct{ netid, state string }
	counts := map[key]int{}
	for _, s := range src.Sockets() {
		counts[key{s.Netid, s.State}]++
	}
	keys := make([]key, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.netid, b.netid), cmp.Compare(a.state, b.state)) })
	bw.WriteString("# HELP berth_sockets Open sockets by protocol and ss state.\n# TYPE berth_sockets gauge\n")
	for _, k := range keys {
		fmt.Fprintf(bw, "berth_sockets{netid=%q,state=%q} %d\n", escape(k.netid), escape(k.state), counts[k])
	}
	return bw.Flush()
}

func describe(typ string) string {
	if typ == "gauge" {
		return "Current value"
	}
	return "Events counted"
}

// escape makes v safe inside a label value (%q handles the quoting; Prometheus accepts
// Go's escapes for backslash, quote and newline only, so anything else is replaced).
func escape(v string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' || r > unicode.MaxASCII {
			return '_'
		}
		return r
	}, v)
}

// SnakeCase turns a kernel counter name into a metric name fragment: IcmpOutDestUnreachs
// is icmp_out_dest_unreachs, TcpExtTCPChallengeACK tcp_ext_tcp_challenge_ack. Characters
// a metric name cannot hold become '_'.
func SnakeCase(s string) string {
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		upper := unicode.IsUpper(r)
		if i > 0 && upper {
			prev := rs[i-1]
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
				b.WriteByte('_')
			}
		}
		switch {
		case r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			b.WriteRune(unicode.ToLower(r))
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
