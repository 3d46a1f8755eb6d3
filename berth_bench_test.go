package berth_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

// BenchmarkUDPPipe sends datagrams from one stack to another over a pipe (MTU 1500) and
// reports delivered datagrams per second. At most 64 datagrams are in flight, so the
// queues never overflow and every datagram counts. allocs/op covers every goroutine: the
// sender, both pipe directions and the reader.
func BenchmarkUDPPipe(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(fmt.Sprintf("v4/%dB", size), func(b *testing.B) { benchPipe(b, "10.0.0.2", size) })
		b.Run(fmt.Sprintf("v6/%dB", size), func(b *testing.B) { benchPipe(b, "fd00::2", size) })
	}
}

func benchPipe(b *testing.B, dst string, size int) {
	sa, sb := pair(b)
	ctx := context.Background()
	rx, err := sb.ListenUDP(ctx, "udp", ":9")
	if err != nil {
		b.Fatal(err)
	}
	tx, err := sa.ListenUDP(ctx, "udp", ":0")
	if err != nil {
		b.Fatal(err)
	}
	to := netip.AddrPortFrom(netip.MustParseAddr(dst), 9)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	msg := make([]byte, size)
	// send keeps at most 64 datagrams in flight (64 * 1.6 KB is well within the receive
	// buffer and the pipe queue); wait fails rather than hangs if one was lost.
	send := func(i int) {
		for int64(i)-got.Load() >= 64 {
			time.Sleep(10 * time.Microsecond)
		}
		if _, err := tx.WriteToUDPAddrPort(msg, to); err != nil {
			b.Fatal(err)
		}
	}
	wait := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for got.Load() < int64(n) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Microsecond)
		}
		if got.Load() != int64(n) {
			b.Fatalf("delivered %d of %d", got.Load(), n)
		}
	}
	// Warm the pools and the ports before measuring.
	for i := range 256 {
		send(i)
	}
	wait(256)
	got.Store(0)
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		send(i)
	}
	wait(b.N)
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "datagrams/s")
	rx.Close()
	<-done
}

// nullLink discards what the stack sends.
type nullLink struct{}

func (nullLink) MTU() int                             { return 1500 }
func (nullLink) Attach(link.Dispatcher)               {}
func (nullLink) WritePackets(p [][]byte) (int, error) { return len(p), nil }
func (nullLink) Close() error                         { return nil }

// BenchmarkDemux measures the stack's receive path — IP input, UDP checksum, the
// demultiplexing lookup, the enqueue and the application's read — with 10, 1,000 and
// 100,000 bound sockets. Datagrams go to sockets spread over the whole set in random order,
// so a large table pays its cache misses. The cost must stay flat.
func BenchmarkDemux(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) { benchDemux(b, n) })
	}
}

func benchDemux(b *testing.B, n int) {
	s := berth.New()
	defer s.Close()
	if err := s.AddInterface("eth0", nullLink{}); err != nil {
		b.Fatal(err)
	}
	// Two addresses: 100,000 sockets need more than one address's 64K ports.
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.1.1")}
	s.AddAddress("eth0", netip.MustParsePrefix("10.0.0.1/16"))
	s.AddAddress("eth0", netip.MustParsePrefix("10.0.1.1/16"))
	ifc, _ := s.Net().Interface("eth0")
	ctx := context.Background()
	socks := make([]*berth.UDPConn, n)
	locals := make([]netip.AddrPort, n)
	for i := range socks {
		ap := netip.AddrPortFrom(addrs[i/50000], uint16(10000+i%50000))
		c, err := s.ListenUDP(ctx, "udp4", ap.String())
		if err != nil {
			b.Fatal(err)
		}
		socks[i], locals[i] = c, ap
	}
	const k = 1024
	peer := netip.MustParseAddr("10.0.0.2")
	pkts := make([][]byte, k)
	targets := make([]int, k)
	r := rand.New(rand.NewPCG(1, 1))
	for j := range pkts {
		t := r.IntN(n)
		targets[j] = t
		p := make([]byte, 20+8+32)
		f := wire.IPv4Fields{TotalLen: len(p), TTL: 64, Protocol: wire.ProtoUDP, Src: peer, Dst: locals[t].Addr()}
		f.Encode(p)
		u := wire.UDPFields{SrcPort: 5555, DstPort: locals[t].Port(), Length: 40}
		u.Encode(p[20:])
		wire.SetUDPChecksum(p[20:], peer, locals[t].Addr())
		pkts[j] = p
	}
	batch := make([][]byte, 1)
	buf := make([]byte, 64)
	round := func(j int) {
		batch[0] = pkts[j]
		ifc.DeliverPackets(batch)
		if _, _, err := socks[targets[j]].ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
	// Warm up: every target socket's receive ring and the buffer pools exist before
	// the timer starts (they are allocated once per socket, not per datagram).
	for j := range k {
		round(j)
	}
	// Setup allocated a lot (100,000 sockets); let the collector finish before measuring.
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		round(i & (k - 1))
	}
	b.StopTimer()
	for _, c := range socks {
		c.Close()
	}
}
