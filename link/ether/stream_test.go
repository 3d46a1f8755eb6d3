package ether_test

import (
	"context"
	"io"
	"net/netip"
	"testing"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/link/pipe"
)

// streamPair returns two stacks joined by a pipe of IP packets, or (ether) of frames with
// an ether.Endpoint on each end, addressed 10.0.2.2 and 10.0.2.100.
func streamPair(tb testing.TB, useEther bool, mtu int) (a, b *berth.Stack) {
	a, b = berth.New(), berth.New()
	var ea, eb link.Endpoint
	if useEther {
		da, db := pipe.NewEthernet(mtu)
		x, err := ether.New(da, ether.Config{NoDAD: true, Addrs: []netip.Prefix{addrA4}})
		if err != nil {
			tb.Fatal(err)
		}
		y, err := ether.New(db, ether.Config{NoDAD: true, Addrs: []netip.Prefix{addrB4}})
		if err != nil {
			tb.Fatal(err)
		}
		ea, eb = x, y
	} else {
		ea, eb = pipe.New(mtu)
	}
	for _, x := range []struct {
		s  *berth.Stack
		ep link.Endpoint
		p  netip.Prefix
	}{{a, ea, addrA4}, {b, eb, addrB4}} {
		if err := x.s.AddInterface("eth0", x.ep); err != nil {
			tb.Fatal(err)
		}
		if err := x.s.AddAddress("eth0", x.p); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

// benchStream sends 64 MiB per iteration, in 64 KiB writes, from a to s.
func benchStream(b *testing.B, a, s *berth.Stack) {
	ctx := context.Background()
	ln, err := s.Listen(ctx, "tcp4", "10.0.2.100:9000")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		done <- n
	}()
	c, err := a.DialContext(ctx, "tcp4", "10.0.2.100:9000")
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	const total = 64 << 20
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		for sent := 0; sent < total; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	c.Close()
	if n := <-done; n != int64(b.N)*total {
		b.Fatalf("received %d of %d bytes", n, int64(b.N)*total)
	}
}
