package netstack

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

var (
	addr6A = netip.MustParseAddr("fd77::1")
	addr6B = netip.MustParseAddr("fd77::2")
)

// TestIPv6ThroughTunnel: an IPv6-only tunnel, berth against berth and against gVisor:
// ICMPv6 echo and HTTP with a 1 MiB body.
func TestIPv6ThroughTunnel(t *testing.T) {
	for _, peer := range []kind{berthSide, gvisorSide} {
		t.Run("berth-to-"+peer.String(), func(t *testing.T) {
			a, b := tunnelWith(t, berthSide, peer, []netip.Addr{addr6A}, []netip.Addr{addr6B}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := a.berth.Ping(ctx, b.addr, 1, []byte("v6")); err != nil {
				t.Fatalf("ping %v: %v", b.addr, err)
			}
			body := payload(1 << 20)
			serveHTTP(t, b, body)
			checkBody(t, fetch(t, a, "http://"+net.JoinHostPort(b.addr.String(), "80")+"/"), body)
			if _, err := a.berth.DialTCPAddrPort(netip.MustParseAddrPort("10.77.0.2:80")); err == nil {
				t.Error("an IPv4 dial from an IPv6-only tunnel succeeded")
			}
		})
	}
}
