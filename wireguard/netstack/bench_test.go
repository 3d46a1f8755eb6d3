package netstack

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// BenchmarkTunnelTCP measures bulk TCP throughput through a WireGuard tunnel between two
// wireguard-go devices on loopback UDP, with the same stack on both ends: berth (this
// package) and wireguard-go's own gVisor netstack, side by side in one run. Both pay the
// same WireGuard costs (ChaCha20-Poly1305, the kernel's UDP), so the difference is the
// stacks and their adapters.
func BenchmarkTunnelTCP(b *testing.B) {
	for _, k := range []kind{berthSide, gvisorSide} {
		b.Run(k.String(), func(b *testing.B) { benchTunnel(b, k) })
	}
}

func benchTunnel(b *testing.B, k kind) {
	a, srv := tunnel(b, k, k, nil)
	ln, err := srv.listen(5001)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() { // the sink: reads all, then says how much (-1: no connection)
		var n int64 = -1
		defer func() { got <- n }()
		if c, err := ln.Accept(); err == nil {
			n, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.dial(ctx, "tcp", net.JoinHostPort(srv.addr.String(), "5001"))
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	const warmup = 32 // chunks before the clock starts: the handshake and slow start
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	var cpu0 time.Duration
	for i := -warmup; i < b.N; i++ {
		if i == 0 {
			b.ResetTimer()
			cpu0 = processCPU(b)
		}
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	n := <-got
	b.StopTimer()
	// CPU time (user and system, both ends and wireguard-go) per chunk: unlike the
	// throughput, it hardly moves when other processes share the machine's cores.
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	c.Close()
	if want := int64(len(chunk)) * int64(b.N+warmup); n != want {
		b.Fatalf("server read %d bytes, want %d", n, want)
	}
}

// processCPU is the CPU time the process has used so far, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
