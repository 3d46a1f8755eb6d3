package main

import (
	"bytes"
	"encoding/json"
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
	var m map[string]uint64
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["Zed"] != 1 || m["Alpha\"q"] != 18446744073709551615 {
		t.Fatalf("%v %v:\n%s", m, err, b.String())
	}
	// The server's order is kept (not sorted).
	if bytes.Index(b.Bytes(), []byte("Zed")) > bytes.Index(b.Bytes(), []byte("Alpha")) {
		t.Errorf("order lost:\n%s", b.String())
	}
	b.Reset()
	writeCountersJSON(&b, nil)
	if b.String() != "{}\n" {
		t.Errorf("no counters: %q", b.String())
	}
}
