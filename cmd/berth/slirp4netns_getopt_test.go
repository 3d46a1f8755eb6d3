package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestGNUParse(t *testing.T) {
	type got struct {
		c, six  bool
		mtu, fd string
		ops     []string
	}
	parse := func(args []string, permute bool) (got, error) {
		var g got
		opts := []gnuOpt{
			{short: 'c', long: "configure", set: func(string) error { g.c = true; return nil }},
			{short: '6', long: "enable-ipv6", set: func(string) error { g.six = true; return nil }},
			{short: 'm', long: "mtu", hasArg: true, set: func(v string) error { g.mtu = v; return nil }},
			{short: 'r', long: "ready-fd", hasArg: true, set: func(v string) error { g.fd = v; return nil }},
			{long: "enable-sandbox", set: func(string) error { return nil }},
			{long: "enable-seccomp", set: func(string) error { return nil }},
		}
		ops, err := gnuParse(opts, args, permute)
		g.ops = ops
		return g, err
	}
	tests := []struct {
		args    string
		permute bool
		want    got
	}{
		{"-c -6 --mtu 65520 -r 3 1234 tap0", true, got{true, true, "65520", "3", []string{"1234", "tap0"}}},
		{"-c6 -m1500 -r3 1234", true, got{true, true, "1500", "3", []string{"1234"}}},
		{"--mtu=9000 --ready-fd=4 --configure x", true, got{c: true, mtu: "9000", fd: "4", ops: []string{"x"}}},
		{"1234 tap0 --mtu 1500", true, got{mtu: "1500", ops: []string{"1234", "tap0"}}},
		{"--mt 1500 -- -c", true, got{mtu: "1500", ops: []string{"-c"}}},
		{"--config cmd -c", false, got{c: true, ops: []string{"cmd", "-c"}}},
	}
	for _, tt := range tests {
		g, err := parse(strings.Fields(tt.args), tt.permute)
		if err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		if !reflect.DeepEqual(g, tt.want) {
			t.Errorf("%q: got %+v, want %+v", tt.args, g, tt.want)
		}
	}
	for _, bad := range []string{"--nope", "-x", "--mtu", "-m", "--configure=1", "--enable-s"} {
		if _, err := parse(strings.Fields(bad), true); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
