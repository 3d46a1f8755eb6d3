package netstack

import (
	"context"
	"io"
	"net"
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
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.dial(ctx, "tcp", net.JoinHostPort(srv.addr.String(), "5001"))
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	// Warm up: the handshake and slow start are not what is measured.
	for i := 0; i < 32; i++ {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	n := <-got
	b.StopTimer()
	c.Close()
	if want := int64(len(chunk)) * int64(b.N+32); n != want {
		b.Fatalf("server read %d bytes, want %d", n, want)
	}
}
