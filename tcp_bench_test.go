package berth_test

import (
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/tcp"
	"github.com/berthnet/berth/vnet"
)

// benchTCPBulk measures one-way bulk throughput from a to b and the allocations per TCP
// segment of the whole path (TCP, IP, link).
func benchTCPBulk(b *testing.B, a, s *berth.Stack, listen string) {
	ln, err := s.Listen(context.Background(), "tcp", listen)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
		c.Close()
		done <- n
	}()
	c, err := a.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := 0; i < 8; i++ { // warm up: buffers and pools reach their steady size
		c.Write(buf)
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	segs0 := a.TCP().Stats.OutSegs.Load() + s.TCP().Stats.OutSegs.Load()
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(*berth.TCPConn).CloseWrite()
	<-done
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	segs := a.TCP().Stats.OutSegs.Load() + s.TCP().Stats.OutSegs.Load() - segs0
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(segs), "allocs/seg")
	c.Close()
}

func BenchmarkTCPBulkPipe(b *testing.B) {
	a, s, err := vnet.Pair()
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	defer s.Close()
	benchTCPBulk(b, a, s, "10.0.0.2:5001")
}

func BenchmarkTCPBulkLoopback(b *testing.B) {
	s := berth.New()
	defer s.Close()
	benchTCPBulk(b, s, s, "127.0.0.1:5001")
}

// BenchmarkTCPConnect measures opening, one round trip and closing of a connection
// between two stacks joined by a pipe.
func BenchmarkTCPConnect(b *testing.B) {
	a, s, err := vnet.Pair(vnet.WithStackOptions(berth.WithTCPConfig(tcp.Config{TimeWait: time.Millisecond})))
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	defer s.Close()
	ln, err := s.Listen(context.Background(), "tcp", "10.0.0.2:7")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		buf := make([]byte, 1)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Read(buf)
			c.Write(buf)
			c.Close()
		}
	}()
	buf := []byte{1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := a.DialContext(context.Background(), "tcp", "10.0.0.2:7")
		if err != nil {
			b.Fatal(err)
		}
		c.Write(buf)
		io.ReadFull(c, buf)
		c.Close()
	}
}
