//go:build linux

package vmsock_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/link/vmsock"
)

// vmPair is two berth stacks on link/ether over link/vmsock: the "host" listening on a
// UNIX socket as berth vm does, the "guest" connected to it as QEMU's -netdev stream is.
type vmPair struct {
	host, guest *berth.Stack
}

var (
	hostAddrs  = []netip.Prefix{netip.MustParsePrefix("10.0.2.2/24"), netip.MustParsePrefix("fd00::2/64")}
	guestAddrs = []netip.Prefix{netip.MustParsePrefix("10.0.2.100/24"), netip.MustParsePrefix("fd00::100/64")}
)

func newVMPair(t *testing.T, mtu int, dgram bool) *vmPair {
	t.Helper()
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	path := filepath.Join(dir, "vm.sock")
	opts := vmsock.Options{MTU: mtu}
	var hostDev, guestDev link.Endpoint
	if dgram {
		gpath := filepath.Join(dir, "guest.sock")
		hc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		gc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: gpath, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		// The host learns the guest's address from its first datagram, as berth vm
		// does without --peer.
		if hostDev, err = vmsock.NewDgram(hc, nil, opts); err != nil {
			t.Fatal(err)
		}
		if guestDev, err = vmsock.NewDgram(gc, &net.UnixAddr{Name: path, Net: "unixgram"}, opts); err != nil {
			t.Fatal(err)
		}
	} else {
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		if hostDev, err = vmsock.ListenStream(ln, opts); err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		if guestDev, err = vmsock.NewStream(c, opts); err != nil {
			t.Fatal(err)
		}
	}
	p := &vmPair{host: berth.New(), guest: berth.New()}
	for _, x := range []struct {
		s     *berth.Stack
		dev   link.Endpoint
		addrs []netip.Prefix
	}{{p.host, hostDev, hostAddrs}, {p.guest, guestDev, guestAddrs}} {
		e, err := ether.New(x.dev, ether.Config{Addrs: x.addrs, NoDAD: true, Counter: x.s.Net().Counters().Counter})
		if err != nil {
			t.Fatal(err)
		}
		if err := x.s.AddInterface("eth0", e); err != nil {
			t.Fatal(err)
		}
		for _, a := range x.addrs {
			if err := x.s.AddAddress("eth0", a); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() {
		p.guest.Close()
		p.host.Close()
		for i := 0; runtime.NumGoroutine() > before; i++ {
			if i == 300 {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutines %d -> %d\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return p
}

// pattern is n bytes that differ at every offset modulo 251.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// transfer sends data from one stack to a listener on the other and checks that every
// byte arrived in order.
func transfer(t *testing.T, from, to *berth.Stack, addr netip.Addr, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	network := "tcp4"
	if addr.Is6() {
		network = "tcp6"
	}
	ln, err := to.Listen(ctx, network, netip.AddrPortFrom(addr, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sum := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sum <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		sum <- s
	}()
	c, err := from.DialContext(ctx, network, netip.AddrPortFrom(addr, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := io.Copy(c, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case got := <-sum:
		if got != sha256.Sum256(data) {
			t.Fatalf("%d bytes to %v arrived changed", len(data), addr)
		}
		t.Logf("%d MiB to %v in %v", len(data)>>20, addr, time.Since(start).Round(time.Millisecond))
	case <-ctx.Done():
		t.Fatalf("transfer to %v: %v", addr, ctx.Err())
	}
}

// TestVMPair: the VM path as berth vm serves it, with a berth stack as the guest: ping
// v4 and v6 (ARP and ND over the socket) and 64 MiB (8 under -race) each way per family, byte-exact,
// over the stream socket at MTU 65520 and 1500, and over the datagram socket.
func TestVMPair(t *testing.T) {
	for _, c := range []struct {
		name  string
		mtu   int
		dgram bool
	}{{"stream-65520", 65520, false}, {"stream-1500", 1500, false}, {"dgram-9000", 9000, true}} {
		t.Run(c.name, func(t *testing.T) {
			p := newVMPair(t, c.mtu, c.dgram)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, a := range []netip.Addr{hostAddrs[0].Addr(), hostAddrs[1].Addr()} {
				if _, err := p.guest.Ping(ctx, a, 1, []byte("vm")); err != nil {
					t.Fatalf("guest ping %v: %v", a, err)
				}
			}
			n := pairBytes
			if c.dgram {
				n /= 4 // a full receive queue drops datagrams, which TCP retransmits: smaller, as exact
			}
			data := pattern(n)
			transfer(t, p.guest, p.host, hostAddrs[0].Addr(), data)
			transfer(t, p.host, p.guest, guestAddrs[1].Addr(), data)
			transfer(t, p.host, p.guest, guestAddrs[0].Addr(), data)
			transfer(t, p.guest, p.host, hostAddrs[1].Addr(), data)
		})
	}
}
