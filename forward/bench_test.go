//go:build linux

package forward

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/netns"
)

// BenchmarkBulk measures bulk TCP through the forwarder, namespace->host (the namespace
// writes to a host sink through the gateway) and host->namespace (a host client writes
// through a port forward to a namespace sink), at MTU 1500 and 65520. b.SetBytes makes
// the result a throughput.
func BenchmarkBulk(b *testing.B) {
	for _, mtu := range []int{1500, 65520} {
		for _, dir := range []string{"ns-to-host", "host-to-ns"} {
			b.Run(fmt.Sprintf("%s/mtu=%d", dir, mtu), func(b *testing.B) { benchBulk(b, mtu, dir) })
		}
	}
}

func benchBulk(b *testing.B, mtu int, dir string) {
	ns := nsForBench(b)
	s, err := Start(SessionConfig{NSPath: "/run/netns/" + ns.Name, MTU: mtu})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	// The sink reads everything and reports the count when the writer closes.
	sink := func(ln net.Listener, got chan<- int64) {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}
	got := make(chan int64, 1)
	var dial func() (net.Conn, error)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if dir == "ns-to-host" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go sink(ln, got)
		dial = func() (net.Conn, error) {
			return ns.Dial(ctx, "tcp", fmt.Sprintf("10.0.2.2:%d", ln.Addr().(*net.TCPAddr).Port))
		}
	} else {
		ln, err := ns.Listen("tcp", "10.0.2.100:5201")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go sink(ln, got)
		hl, _ := net.Listen("tcp", "127.0.0.1:0")
		port := uint16(hl.Addr().(*net.TCPAddr).Port)
		hl.Close()
		if err := s.Forwarder.AddPort(PortMapping{Proto: "tcp", HostPort: port, NSPort: 5201}); err != nil {
			b.Fatal(err)
		}
		dial = func() (net.Conn, error) { return net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)) }
	}
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 128<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if n := <-got; n != int64(b.N)*int64(len(buf)) {
		b.Fatalf("sink got %d bytes, want %d", n, int64(b.N)*int64(len(buf)))
	}
}

// nsForBench is netns.New for benchmarks.
func nsForBench(b *testing.B) *netns.NS { return netns.New(b) }
