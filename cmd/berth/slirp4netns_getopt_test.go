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

// TestSlirp4netnsHelp: callers detect slirp4netns's features by searching --help for
// option names (rootlesskit: --netns-type, --enable-ipv6, --cidr, --disable-host-loopback,
// --api-socket, --enable-sandbox, --enable-seccomp; Podman: --disable-dns,
// --outbound-addr, --macaddress, ...): every option berth takes is named there, and
// each one named parses.
func TestSlirp4netnsHelp(t *testing.T) {
	for _, opt := range []string{"--configure", "--exit-fd", "--ready-fd", "--mtu", "--enable-ipv6", "--api-socket", "--cidr",
		"--disable-host-loopback", "--netns-type", "--userns-path", "--enable-sandbox", "--enable-seccomp", "--outbound-addr",
		"--outbound-addr6", "--disable-dns", "--macaddress", "--target-type", "--help", "--version"} {
		if !strings.Contains(slirp4netnsHelp, opt) {
			t.Errorf("--help does not name %s", opt)
		}
	}
	for _, line := range strings.Split(slirp4netnsHelp, "\n") {
		// An option's line: its names first, then what it does.
		for _, w := range strings.Fields(strings.ReplaceAll(line, ",", " ")) {
			if !strings.HasPrefix(w, "-") {
				break
			}
			if !strings.HasPrefix(w, "--") {
				continue
			}
			name, _, _ := strings.Cut(w, "=")
			args := []string{name}
			if strings.Contains(w, "=") {
				args = []string{name + "=" + map[string]string{"--exit-fd": "4", "--ready-fd": "3", "--mtu": "1500", "--api-socket": "/x",
					"--cidr": "10.0.3.0/24", "--netns-type": "pid", "--userns-path": "/x", "--outbound-addr": "", "--outbound-addr6": "",
					"--macaddress": "02:00:00:00:00:01", "--target-type": "netns"}[name]}
			}
			if name == "--macaddress" {
				args = append(args, "-c")
			}
			if _, err := parseSlirpOpts(append(args, "42")); err != nil {
				t.Errorf("%s, named in --help: %v", strings.Join(args, " "), err)
			}
		}
	}
}
