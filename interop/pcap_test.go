//go:build linux

package interop

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestPcapTshark: berth's pcap of a session — pings with and without fragments, UDP,
// a refused TCP connection, ICMP port unreachable, and HTTP transfers over IPv4 and IPv6
// with the kernel's TSO super-segments — is read by tshark without errors: no malformed
// packet, no bad IP, ICMP, UDP or TCP checksum (checksum validation on), no other
// expert error, and nothing on tshark's stderr. The capture holds every protocol of the
// session.
func TestPcapTshark(t *testing.T) {
	needCommand(t, "tshark")
	needCommand(t, "curl")
	needCommand(t, "ping")
	h := newHost(t, hostConfig{pcap: true, tun: tunVnet})
	h.berthHTTP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 4 << 20
	for _, p := range []struct{ b, k netip.Addr }{{berth4, kern4}, {berth6, kern6}} {
		for _, size := range []string{"56", "3000"} {
			if out, err := h.NS.Output("ping", "-n", "-c", "2", "-i", "0.05", "-W", "2", "-s", size, p.b.String()); err != nil {
				t.Errorf("ping %s: %v\n%s", p.b, err, out)
			}
		}
		if _, err := h.Stack.Ping(ctx, p.k, 1, []byte("berth")); err != nil {
			t.Errorf("berth ping %s: %v", p.k, err)
		}
		x, err := h.curl(ctx, url(p.b, 80, fmt.Sprintf("/bytes/%d", n)))
		checkTransfer(t, "curl <- berth "+p.b.String(), x, err, n)
		if c, err := h.NS.Dial(ctx, "tcp", hostPort(p.b, 6002)); err == nil {
			c.Close()
		}
		if c, err := h.NS.Dial(ctx, "udp", hostPort(p.b, 6001)); err == nil {
			roundTrip(c, "closed?")
			c.Close()
		}
	}
	file := h.stopCapture(t)

	prefs := []string{"-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"}
	errs := tshark(t, append([]string{"-r", file, "-Y", "_ws.malformed || _ws.expert.severity >= error",
		"-T", "fields", "-E", "separator=|", "-e", "frame.number", "-e", "frame.protocols", "-e", "_ws.expert.message"}, prefs...)...)
	if strings.TrimSpace(errs) != "" {
		t.Errorf("tshark finds errors in berth's pcap (frame|protocols|message):\n%s", errs)
	}
	all := tshark(t, append([]string{"-r", file, "-T", "fields", "-e", "frame.protocols"}, prefs...)...)
	lines := strings.Split(strings.TrimSpace(all), "\n")
	seen := map[string]bool{}
	for _, l := range lines {
		for _, p := range strings.Split(l, ":") {
			seen[p] = true
		}
	}
	var protos []string
	for p := range seen {
		protos = append(protos, p)
	}
	sort.Strings(protos)
	t.Logf("tshark read %d frames; protocols: %s", len(lines), strings.Join(protos, " "))
	for _, want := range []string{"ip", "ipv6", "icmp", "icmpv6", "udp", "tcp", "http"} {
		if !seen[want] {
			t.Errorf("tshark sees no %s in berth's pcap", want)
		}
	}
	if len(lines) < 2*n/65536 {
		t.Errorf("tshark read only %d frames", len(lines))
	}
}
