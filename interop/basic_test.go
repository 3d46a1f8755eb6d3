//go:build linux

package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/services"
)

// TestPing: berth pings the kernel, and the kernel pings berth, over IPv4 and IPv6, with
// small payloads and with 3000-byte ones, which need fragmentation on a 1500-byte link
// both ways: the kernel reassembles berth's fragments and berth the kernel's (RFC 791
// §3.2, RFC 8200 §4.5). (Small kernel pings alone are in tunhost's TestHost.)
func TestPing(t *testing.T) {
	h := newHost(t, hostConfig{})
	needCommand(t, "ping")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, p := range []struct{ berth, kernel netip.Addr }{{berth4, kern4}, {berth6, kern6}} {
		for _, size := range []int{56, 3000} {
			payload := bytes.Repeat([]byte("berth-ping!"), size/11+1)[:size]
			// The first ping may wait for neighbour resolution: allow a retry.
			var rtt time.Duration
			var err error
			for try := range 3 {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				rtt, err = h.Stack.Ping(pctx, p.kernel, try+1, payload)
				pcancel()
				if err == nil {
					break
				}
			}
			if err != nil {
				t.Errorf("berth ping %s, %d bytes: %v", p.kernel, size, err)
			} else {
				t.Logf("berth ping %s, %d bytes: %v", p.kernel, size, rtt)
			}
			out, err := h.NS.Output("ping", "-n", "-c", "3", "-i", "0.05", "-W", "2", "-s", fmt.Sprint(size), p.berth.String())
			if err != nil || !strings.Contains(out, "3 packets transmitted, 3 received") {
				t.Errorf("kernel ping %s, %d bytes: %v\n%s", p.berth, size, err, out)
			}
		}
	}
}

// TestUDP: berth sends to a kernel socket and gets the answer; a kernel socket connected
// to a closed berth port gets ECONNREFUSED (berth's ICMP port unreachable, RFC 1122
// §4.1.3.1 / RFC 4443 §3.1, reached the socket), while one connected to berth's discard
// service gets neither an answer nor an error. (Kernel-to-berth echo, daytime and chargen
// are in cmd/berth's TestUp.)
func TestUDP(t *testing.T) {
	h := newHost(t, hostConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A kernel echo socket, answering from the namespace.
	pc, err := h.NS.ListenPacket("udp", ":6000")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()

	srv, err := services.Start(ctx, services.Config{
		Services: []string{"discard"},
		Listen:   func(network, address string) (net.Listener, error) { return h.Stack.Listen(ctx, network, address) },
		ListenPacket: func(network, address string) (net.PacketConn, error) {
			return h.Stack.ListenPacket(ctx, network, address)
		},
		Ports:  map[string]ports.Port{"discard": 9},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	for _, p := range []struct{ berth, kernel netip.Addr }{{berth4, kern4}, {berth6, kern6}} {
		// berth -> kernel, a small datagram and one that needs fragments.
		c, err := h.Stack.DialContext(ctx, "udp", hostPort(p.kernel, 6000))
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range []string{"berth to kernel", strings.Repeat("f", 4000)} {
			got, err := roundTrip(c, msg)
			if err != nil || got != msg {
				t.Errorf("UDP berth -> kernel %s, %d bytes: %d bytes back, %v", p.kernel, len(msg), len(got), err)
			}
		}
		c.Close()

		// kernel -> closed berth port.
		kc, err := h.NS.Dial(ctx, "udp", hostPort(p.berth, 6001))
		if err != nil {
			t.Fatal(err)
		}
		_, err = roundTrip(kc, "anyone?")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("UDP kernel -> closed berth port %s: %v, want ECONNREFUSED", hostPort(p.berth, 6001), err)
		}
		kc.Close()

		// kernel -> berth's discard: silence, and no error either.
		kc, err = h.NS.Dial(ctx, "udp", hostPort(p.berth, 9))
		if err != nil {
			t.Fatal(err)
		}
		kc.Write([]byte("into the void"))
		kc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := kc.Read(make([]byte, 100))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("UDP kernel -> berth discard %s: %d bytes, %v; want no answer (a read timeout)", p.berth, n, err)
		}
		kc.Close()
	}
}

// roundTrip writes msg on c and reads one datagram back, trying three times (the first
// datagram may wait for neighbour resolution). An error other than a timeout, such as
// ECONNREFUSED, ends it at once.
func roundTrip(c net.Conn, msg string) (string, error) {
	buf := make([]byte, 65536)
	var err error
	for range 3 {
		if _, err = c.Write([]byte(msg)); err != nil {
			if isTimeout(err) {
				continue
			}
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		var n int
		n, err = c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		if !isTimeout(err) {
			return "", err
		}
	}
	return "", err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestTCPRefused: the kernel connects to a closed berth port and gets ECONNREFUSED at
// once. The kernel accepts a RST in SYN-SENT only if it acknowledges the SYN exactly
// (RFC 9293 §3.10.7.3), and otherwise retries the SYN until its own timeout, so a prompt
// ECONNREFUSED means berth's RST (RFC 9293 §3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN>
// <CTL=RST,ACK>) was right.
func TestTCPRefused(t *testing.T) {
	h := newHost(t, hostConfig{})
	for _, a := range []netip.Addr{berth4, berth6} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		c, err := h.NS.Dial(ctx, "tcp", hostPort(a, 6002))
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("kernel connected to the closed berth port %s", hostPort(a, 6002))
			continue
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("kernel connect to the closed berth port %s: %v after %v; want ECONNREFUSED", hostPort(a, 6002), err, time.Since(start))
		}
	}
}
