package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/berthnet/berth/control"
)

type src struct {
	counters []control.Counter
	socks    []control.Socket
}

func (s src) Counters() []control.Counter { return s.counters }
func (s src) Sockets() []control.Socket   { return s.socks }

func TestSnakeCase(t *testing.T) {
	for in, want := range map[string]string{
		"TcpActiveOpens":        "tcp_active_opens",
		"IcmpOutDestUnreachs":   "icmp_out_dest_unreachs",
		"Ip6InReceives":         "ip6_in_receives",
		"Icmp6OutPktTooBigs":    "icmp6_out_pkt_too_bigs",
		"TcpExtTCPChallengeACK": "tcp_ext_tcp_challenge_ack",
		"UdpNoPorts":            "udp_no_ports",
		"Odd-Name.x":            "odd_name_x",
	} {
		if got := SnakeCase(in); got != want {
			t.Errorf("SnakeCase(%q) = %q, want %q", in, got, want)
		}
	}
}

// Lines of the text format (https://prometheus.io/docs/instrumenting/exposition_formats/).
var (
	helpRE   = regexp.MustCompile(`^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$`)
	typeRE   = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$`)
	sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? ([0-9]+)$`)
)

// parse checks the exposition's syntax and the rules that every sample follows its
// family's TYPE line and that a family appears once; it returns sample lines' values.
func parse(t *testing.T, text string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	types := map[string]string{}
	current := ""
	if !strings.HasSuffix(text, "\n") {
		t.Error("exposition does not end with a newline")
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		switch {
		case helpRE.MatchString(line):
		case typeRE.MatchString(line):
			m := typeRE.FindStringSubmatch(line)
			if _, dup := types[m[1]]; dup {
				t.Errorf("line %d: family %s declared twice", i+1, m[1])
			}
			types[m[1]], current = m[2], m[1]
		case sampleRE.MatchString(line):
			m := sampleRE.FindStringSubmatch(line)
			if m[1] != current {
				t.Errorf("line %d: sample %s outside its family (%s)", i+1, m[1], current)
			}
			if types[m[1]] == "counter" && !strings.HasSuffix(m[1], "_total") {
				t.Errorf("line %d: counter %s lacks _total", i+1, m[1])
			}
			v, _ := strconv.ParseUint(m[4], 10, 64)
			out[m[1]+m[2]] = v
		default:
			t.Errorf("line %d malformed: %q", i+1, line)
		}
	}
	return out
}

func TestHandler(t *testing.T) {
	s := src{
		counters: []control.Counter{{Name: "TcpActiveOpens", Value: 3}, {Name: "UdpNoPorts", Value: 1}, {Name: "TcpCurrEstab", Value: 2}, {Name: "Ip6InReceives", Value: 18446744073709551615}},
		socks: []control.Socket{
			{Netid: "tcp", State: "LISTEN", Local: netip.MustParseAddrPort("0.0.0.0:80")},
			{Netid: "tcp", State: "ESTAB"}, {Netid: "tcp", State: "ESTAB"},
			{Netid: "udp", State: "UNCONN"},
		},
	}
	srv := httptest.NewServer(Handler(s))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		t.Errorf("Content-Type %q", ct)
	}
	got := parse(t, string(body))
	want := map[string]uint64{
		"berth_tcp_active_opens_total":              3,
		"berth_udp_no_ports_total":                  1,
		"berth_tcp_curr_estab":                      2,
		"berth_ip6_in_receives_total":               18446744073709551615,
		`berth_sockets{netid="tcp",state="ESTAB"}`:  2,
		`berth_sockets{netid="tcp",state="LISTEN"}`: 1,
		`berth_sockets{netid="udp",state="UNCONN"}`: 1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d\n%s", k, got[k], v, body)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d samples, want %d:\n%s", len(got), len(want), body)
	}
	if !strings.Contains(string(body), "# TYPE berth_tcp_curr_estab gauge") || !strings.Contains(string(body), "(kernel name TcpActiveOpens)") {
		t.Errorf("types or help wrong:\n%s", body)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
}
