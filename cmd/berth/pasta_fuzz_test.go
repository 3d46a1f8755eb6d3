package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/berthnet/berth/forward"
)

// FuzzDropInArgs: any command line gives slirp4netns's and pasta's parsers a result or
// an error, never a panic; what parses has a namespace to serve.
func FuzzDropInArgs(f *testing.F) {
	for _, s := range []string{
		"--mtu 65520 -r 3 --disable-host-loopback --api-socket /x.sock --enable-ipv6 4242 tap0",
		"-c6 -m1500 -e4 --netns-type=path --userns-path=/proc/1/ns/user /run/netns/x tap1",
		"--ns-ifname=tap0 --mtu=65520 --config-net --address=10.0.2.100 --netmask=24 --gateway=10.0.2.2 --dns-forward=10.0.2.3 -t none 42",
		"--config-net -t 8080-8081:80-81 -u 127.0.0.1/5353:53 -T none --netns podman-ns",
		"--cidr 10.9.0.0/16 --macaddress 02:00:00:00:00:01 -c 7",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Fields(line)
		if o, err := parseSlirpOpts(args); err == nil && !o.help && !o.version {
			if o.target == "" || o.tapName == "" {
				t.Fatalf("%q: slirp4netns options without a target: %+v", line, o)
			}
			o.network()
		}
		if o, err := parsePastaOpts(args); err == nil && !o.help && !o.version {
			if o.target == "" && o.netns == "" {
				t.Fatalf("%q: pasta options without a namespace: %+v", line, o)
			}
			if n, err := o.network(); err == nil {
				pastaForwards(o.tcp, "tcp", n, o.v4only)
			}
		}
	})
}

// FuzzPastaControl: whatever arrives on berth's pasta control socket gets a reply
// that is an error or the list of forwards, never a panic.
func FuzzPastaControl(f *testing.F) {
	for _, s := range []string{`{"op":"add","proto":"tcp","spec":"0.0.0.0/8080:80"}`, `{"op":"delete","proto":"udp","spec":"53"}`,
		`{"op":"list"}`, `{"op":"add","proto":"tcp","spec":"1-65535"}`, `{}`,
		`{"op":"add","proto":"tcp","ns":true,"spec":"8080"}`, `{"op":"delete","proto":"udp","ns":true,"spec":"127.0.0.1/53"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, req string) {
		n := pastaNet{addr4: forward.DefaultNSAddr4, addr6: forward.DefaultNSAddr6, gw4: netip.MustParseAddr("10.0.2.2")}
		p := &pastaControl{ports: &fakePorts{}, net: n}
		r := p.handle([]byte(req))
		if _, err := json.Marshal(r); err != nil || (r.Error == "") == (r.Forwards == nil) {
			t.Fatalf("%q: reply %+v", req, r)
		}
	})
}
