package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/berthnet/berth/control"
)

func TestSelectCounters(t *testing.T) {
	cs := []control.Counter{{Name: "IpInReceives", Value: 5}, {Name: "TcpActiveOpens", Value: 0},
		{Name: "TcpRetransSegs", Value: 2}, {Name: "UdpNoPorts", Value: 0}}
	names := func(cs []control.Counter) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	for _, c := range []struct {
		patterns  []string
		zeros     bool
		want      []string
		unmatched []string
	}{
		{nil, false, []string{"IpInReceives", "TcpRetransSegs"}, nil},
		{nil, true, []string{"IpInReceives", "TcpActiveOpens", "TcpRetransSegs", "UdpNoPorts"}, nil},
		{[]string{"Tcp*"}, false, []string{"TcpRetransSegs"}, nil},
		{[]string{"Tcp*"}, true, []string{"TcpActiveOpens", "TcpRetransSegs"}, nil},
		{[]string{"UdpNoPorts"}, false, []string{"UdpNoPorts"}, nil}, // named exactly: shown at zero
		{[]string{"Ip*", "Nope", "X?"}, false, []string{"IpInReceives"}, []string{"Nope", "X?"}},
	} {
		got, unmatched := selectCounters(cs, c.patterns, c.zeros)
		if !slices.Equal(names(got), c.want) || !slices.Equal(unmatched, c.unmatched) {
			t.Errorf("%v zeros=%v: %v, unmatched %v; want %v, %v", c.patterns, c.zeros, names(got), unmatched, c.want, c.unmatched)
		}
	}
}

func TestWriteCountersJSON(t *testing.T) {
	var b bytes.Buffer
	cs := []control.Counter{{Name: "Zed", Value: 1}, {Name: "Alpha\"q", Value: 18446744073709551615}}
	if err := writeCountersJSON(&b, cs); err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]uint64
	err := json.Unmarshal(b.Bytes(), &doc)
	m := doc["berth"]
	if err != nil || len(doc) != 1 || m["Zed"] != 1 || m["Alpha\"q"] != 18446744073709551615 {
		t.Fatalf("%v %v:\n%s", m, err, b.String())
	}
	// The server's order is kept (not sorted).
	if bytes.Index(b.Bytes(), []byte("Zed")) > bytes.Index(b.Bytes(), []byte("Alpha")) {
		t.Errorf("order lost:\n%s", b.String())
	}
	b.Reset()
	writeCountersJSON(&b, nil)
	if b.String() != "{\"berth\": {}}\n" {
		t.Errorf("no counters: %q", b.String())
	}
}

func TestCounterDeltas(t *testing.T) {
	cur := []control.Counter{{Name: "IpInReceives", Value: 10}, {Name: "TcpCurrEstab", Value: 3},
		{Name: "UdpNoPorts", Value: 2}, {Name: "TcpActiveOpens", Value: 5}}
	hist := map[string]uint64{"IpInReceives": 4, "TcpCurrEstab": 1, "UdpNoPorts": 7}
	got := counterDeltas(cur, hist)
	want := []uint64{6, 3, 2, 5} // grew by 6; a gauge; restarted (smaller); new
	for i, c := range got {
		if c.Name != cur[i].Name || c.Value != want[i] {
			t.Errorf("%s = %d, want %d", c.Name, c.Value, want[i])
		}
	}
	if cur[0].Value != 10 {
		t.Error("counterDeltas changed its input")
	}
}

func TestStatsHistoryFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "hist")
	if h := readStatsHistory(file); len(h) != 0 {
		t.Fatalf("missing file read as %v", h)
	}
	cs := []control.Counter{{Name: "IpInReceives", Value: 18446744073709551615}, {Name: "UdpNoPorts", Value: 0}}
	if err := writeStatsHistory(file, "/run/berth/x.sock", cs); err != nil {
		t.Fatal(err)
	}
	h := readStatsHistory(file)
	if len(h) != 2 || h["IpInReceives"] != 18446744073709551615 || h["UdpNoPorts"] != 0 {
		t.Fatalf("read back %v", h)
	}
	// A damaged file is an empty history, not an error.
	os.WriteFile(file, []byte("garbage\x00\nIpInReceives notanumber\nOk 5\n"), 0o600)
	if h := readStatsHistory(file); len(h) != 1 || h["Ok"] != 5 {
		t.Fatalf("damaged file read as %v", h)
	}
	t.Setenv("BERTH_STATS_HISTORY", file)
	if statsHistoryPath("/a.sock") != file {
		t.Error("BERTH_STATS_HISTORY ignored")
	}
	t.Setenv("BERTH_STATS_HISTORY", "")
	if a, b := statsHistoryPath("/x/a.sock"), statsHistoryPath("/y/a.sock"); a == b {
		t.Errorf("two sockets share the history file %s", a)
	}
}
