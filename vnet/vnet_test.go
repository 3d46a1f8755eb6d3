package vnet_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/impair"
	"github.com/berthnet/berth/link/pcap"
	"github.com/berthnet/berth/vnet"
)

func TestPairAddresses(t *testing.T) {
	a, b, err := vnet.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	for _, tc := range []struct {
		addr  string
		local bool
	}{{"10.0.0.1", true}, {"fd00::1", true}, {"10.0.0.2", false}} {
		if got := a.Net().IsLocal(netip.MustParseAddr(tc.addr)); got != tc.local {
			t.Errorf("a IsLocal(%s) = %v", tc.addr, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, netip.MustParseAddr("fd00::2"), 1, []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// A routed topology: h1 - r - h2, with different MTUs; UDP crosses the router, a big
// datagram is fragmented by h1 (IPv4) and a too-big IPv6 packet draws Packet Too Big.
func TestRoutedTopology(t *testing.T) {
	n := vnet.New()
	defer n.Close()
	h1, h2 := n.Host("h1"), n.Host("h2")
	n.Router("r")
	if err := n.Link("h1", "r", vnet.LinkConfig{
		A: []netip.Prefix{netip.MustParsePrefix("10.1.0.2/24"), netip.MustParsePrefix("fd01::2/64")},
		B: []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24"), netip.MustParsePrefix("fd01::1/64")},
	}); err != nil {
		t.Fatal(err)
	}
	if err := n.Link("r", "h2", vnet.LinkConfig{MTU: 1280,
		A: []netip.Prefix{netip.MustParsePrefix("10.2.0.1/24"), netip.MustParsePrefix("fd02::1/64")},
		B: []netip.Prefix{netip.MustParsePrefix("10.2.0.2/24"), netip.MustParsePrefix("fd02::2/64")},
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][3]string{
		{"h1", "0.0.0.0/0", "10.1.0.1"}, {"h1", "::/0", "fd01::1"},
		{"h2", "0.0.0.0/0", "10.2.0.1"}, {"h2", "::/0", "fd02::1"},
	} {
		if err := n.Route(r[0], r[1], r[2]); err != nil {
			t.Fatal(r, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h1.Ping(ctx, netip.MustParseAddr("10.2.0.2"), 1, nil); err != nil {
		t.Fatal("ping across router:", err)
	}
	srv, err := h2.ListenPacket(ctx, "udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := h1.DialContext(ctx, "udp", "10.2.0.2:53")
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 1400) // fits h1's link, not h2's: the router fragments (no DF)
	msg[0], msg[1399] = 1, 2
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2000)
	k, from, err := srv.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:k], msg) {
		t.Fatalf("routed datagram: %d bytes, %v", k, err)
	}
	if from.String() != c.LocalAddr().String() {
		t.Errorf("from %v, want %v", from, c.LocalAddr())
	}
	// IPv6: the router answers Packet Too Big; UDP does not report it (a soft error).
	c6, _ := h1.DialContext(ctx, "udp", "[fd02::2]:53")
	c6.Write(msg)
	deadline := time.Now().Add(5 * time.Second)
	for h1.Stats()["Icmp6InPktTooBigs"] == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if h1.Stats()["Icmp6InPktTooBigs"] != 1 {
		t.Errorf("no Packet Too Big: %v", h1.Stats()["Icmp6InPktTooBigs"])
	}
}

// With testing/synctest the network's timeouts run in virtual time: a 30 s read deadline
// passes at once, and a lossy link's datagrams are retried without waiting.
func TestVirtualTimeWithSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, err := vnet.Pair(vnet.WithImpairment(impair.Config{Seed: 1, Loss: 0.3, Delay: 50 * time.Millisecond}))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		defer b.Close()
		ctx := context.Background()
		srv, _ := b.ListenPacket(ctx, "udp", ":7")
		c, _ := a.DialContext(ctx, "udp", "10.0.0.2:7")
		start := time.Now()
		c.SetReadDeadline(start.Add(30 * time.Second))
		if _, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v", err)
		}
		if el := time.Since(start); el != 30*time.Second {
			t.Errorf("virtual time passed %v, want 30s", el)
		}
		got := 0
		for i := range 20 {
			c.Write([]byte{byte(i)})
		}
		for {
			srv.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := srv.ReadFrom(make([]byte, 10)); err != nil {
				break
			}
			got++
		}
		if got == 0 || got == 20 {
			t.Errorf("%d of 20 datagrams over a 30%% lossy link", got)
		}
		srv.Close()
		c.Close()
	})
}

func TestRouteErrors(t *testing.T) {
	n := vnet.New()
	defer n.Close()
	n.Host("h")
	if err := n.Route("h", "0.0.0.0/0", "10.9.9.9"); !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("gateway off-link: %v", err)
	}
	if err := n.Route("nobody", "0.0.0.0/0", "10.9.9.9"); err == nil {
		t.Error("route on unknown host accepted")
	}
}

// pcapRecords counts the records of the pcap file name: after its 24-byte file header,
// each record is a 16-byte header, whose third word is the captured length, and the bytes.
func pcapRecords(t *testing.T, name string) int {
	b, err := os.ReadFile(name)
	if err != nil || len(b) < 24 {
		t.Fatalf("pcap: %d bytes, %v", len(b), err)
	}
	n := 0
	for b = b[24:]; len(b) >= 16; n++ {
		b = b[min(len(b), 16+int(binary.LittleEndian.Uint32(b[8:]))):]
	}
	return n
}

// WithLinkWrap is called for both ends of Pair's link, with each host's and interface's
// name, and the stacks send and receive through what it returns: a pcap tap on a's end
// records the ping's request and reply.
func TestLinkWrap(t *testing.T) {
	name := filepath.Join(t.TempDir(), "a.pcap")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := pcap.NewWriter(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	var called []string
	a, b, err := vnet.Pair(vnet.WithLinkWrap(func(host, iface string, ep link.Endpoint) link.Endpoint {
		called = append(called, host+" "+iface)
		if host == "a" {
			return pcap.Tap(ep, w)
		}
		return ep
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	if want := []string{"a eth0", "b eth0"}; !slices.Equal(called, want) {
		t.Errorf("wrap called for %q, want %q", called, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, netip.MustParseAddr("10.0.0.2"), 1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if n := pcapRecords(t, name); n < 2 {
		t.Errorf("a's capture has %d packets, want at least the echo request and reply", n)
	}
	if err := w.Err(); err != nil {
		t.Error(err)
	}
}
