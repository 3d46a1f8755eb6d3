package netstack

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// pump moves packets from one device to another as wireguard-go would (Read a batch,
// Write it), calling seen for each, until from closes.
func pump(from, to tun.Device, seen func([]byte)) {
	bufs, sizes := newBufs(batchSize, 2048)
	pkts := make([][]byte, batchSize)
	for {
		n, err := from.Read(bufs, sizes, 0)
		if err != nil {
			return
		}
		for i := range n {
			pkts[i] = bufs[i][:sizes[i]]
			seen(pkts[i])
		}
		to.Write(pkts[:n], 0)
	}
}

// recordSession joins two berth devices back to back (no WireGuard between them), runs a
// TCP exchange, a UDP datagram and a ping from a to b, and returns every packet b received:
// real inbound traffic, to seed the fuzzer with.
func recordSession(tb testing.TB) [][]byte {
	devA, netA, err := CreateNetTUN([]netip.Addr{addrA}, nil, tunnelMTU)
	if err != nil {
		tb.Fatal(err)
	}
	devB, netB, err := CreateNetTUN([]netip.Addr{addrB}, nil, tunnelMTU)
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var got [][]byte
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		pump(devA, devB, func(p []byte) {
			mu.Lock()
			got = append(got, append([]byte(nil), p...))
			mu.Unlock()
		})
	}()
	go func() { defer wg.Done(); pump(devB, devA, func([]byte) {}) }()
	defer func() {
		devA.Close()
		devB.Close()
		wg.Wait()
	}()
	ln, err := netB.ListenTCPAddrPort(netip.AddrPortFrom(addrB, 80))
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := netA.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(addrB, 80))
	if err != nil {
		tb.Fatal(err)
	}
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	c.Close()
	u, err := netA.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(addrB, 9))
	if err != nil {
		tb.Fatal(err)
	}
	u.Write([]byte("datagram"))
	u.Close()
	if _, err := netA.Ping(ctx, addrB, 1, []byte("echo")); err != nil {
		tb.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return got
}

// TestBackToBack: two devices joined without WireGuard carry TCP, UDP and ICMP — the
// adapter alone, both directions.
func TestBackToBack(t *testing.T) {
	if pkts := recordSession(t); len(pkts) < 6 {
		t.Fatalf("only %d packets from a to b", len(pkts))
	}
}

// FuzzDeviceWrite is the tunnel's input path: whatever wireguard-go decrypts, however
// malformed, goes through Write into a berth stack with a TCP listener and a UDP socket,
// which must neither panic nor hang.
func FuzzDeviceWrite(f *testing.F) {
	for _, p := range recordSession(f) {
		f.Add(p)
	}
	dev, tnet, err := CreateNetTUN([]netip.Addr{addrB}, nil, tunnelMTU)
	if err != nil {
		f.Fatal(err)
	}
	// Drain what the stack answers, as wireguard-go's reader would.
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs, sizes := newBufs(batchSize, 2048)
		for {
			if _, err := dev.Read(bufs, sizes, 0); err != nil {
				return
			}
		}
	}()
	f.Cleanup(func() {
		dev.Close()
		<-done
	})
	if _, err := tnet.ListenTCPAddrPort(netip.AddrPortFrom(addrB, 80)); err != nil {
		f.Fatal(err)
	}
	if _, err := tnet.ListenUDPAddrPort(netip.AddrPortFrom(addrB, 9)); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		const offset = 16
		buf := append(make([]byte, offset), pkt...)
		if n, err := dev.Write([][]byte{buf}, offset); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	})
}
