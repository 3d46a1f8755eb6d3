package berth_test

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/berthnet/berth"
)

// TestTCPCongestionControl: a TCPConn uses CUBIC by default, SetCongestionControl switches
// it like TCP_CONGESTION (an unknown name is a *net.OpError wrapping ENOENT), and the
// connection still carries data.
func TestTCPCongestionControl(t *testing.T) {
	a, b := tcpStackPair(t)
	c1, c2, ln := tcpConnPair(t, a, b, "tcp", "10.0.0.2:0")
	defer ln.Close()
	defer c1.Close()
	defer c2.Close()
	tc := c1.(*berth.TCPConn)
	if got := tc.CongestionControl(); got != "cubic" {
		t.Fatalf("default congestion control %q, want cubic", got)
	}
	err := tc.SetCongestionControl("bbr")
	var oe *net.OpError
	if !errors.As(err, &oe) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("unknown algorithm: %v, want *net.OpError with ENOENT", err)
	}
	if err := tc.SetCongestionControl("newreno"); err != nil {
		t.Fatal(err)
	}
	if got := tc.CongestionControl(); got != "reno" {
		t.Fatalf("after SetCongestionControl(newreno): %q", got)
	}
	msg := []byte("hello")
	if _, err := c1.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := c2.Read(buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v", buf, err)
	}
}
