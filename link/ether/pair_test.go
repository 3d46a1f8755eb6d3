package ether_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/link/pipe"
)

var (
	addrA4 = netip.MustParsePrefix("10.0.2.2/24")
	addrB4 = netip.MustParsePrefix("10.0.2.100/24")
	addrA6 = netip.MustParsePrefix("fd00::2/64")
	addrB6 = netip.MustParsePrefix("fd00::100/64")
)

// etherPair is two berth stacks, each on an ether.Endpoint, over an Ethernet pipe.
type etherPair struct {
	a, b   *berth.Stack
	ea, eb *ether.Endpoint
}

func newEtherPair(t testing.TB, mtu int, cfgA, cfgB ether.Config) *etherPair {
	t.Helper()
	before := runtime.NumGoroutine()
	da, db := pipe.NewEthernet(mtu)
	p := &etherPair{a: berth.New(), b: berth.New()}
	if cfgA.Addrs == nil {
		cfgA.Addrs = []netip.Prefix{addrA4, addrA6}
	}
	if cfgB.Addrs == nil {
		cfgB.Addrs = []netip.Prefix{addrB4, addrB6}
	}
	cfgA.Counter = p.a.Net().Counters().Counter
	cfgB.Counter = p.b.Net().Counters().Counter
	var err error
	if p.ea, err = ether.New(da, cfgA); err != nil {
		t.Fatal(err)
	}
	if p.eb, err = ether.New(db, cfgB); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		s  *berth.Stack
		ep *ether.Endpoint
		as []netip.Prefix
	}{{p.a, p.ea, cfgA.Addrs}, {p.b, p.eb, cfgB.Addrs}} {
		if err := x.s.AddInterface("eth0", x.ep); err != nil {
			t.Fatal(err)
		}
		for _, a := range x.as {
			if err := x.s.AddAddress("eth0", a); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() {
		p.a.Close()
		p.b.Close()
		checkGoroutines(t, before)
	})
	return p
}

func checkGoroutines(t testing.TB, before int) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if runtime.NumGoroutine() <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Errorf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
}

func ping(t *testing.T, s *berth.Stack, to netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Ping(ctx, to, 1, []byte("hello")); err != nil {
		t.Fatalf("ping %v: %v", to, err)
	}
}

// neighborState returns ep's cache entry for a.
func neighborState(ep *ether.Endpoint, a netip.Addr) (ether.Neighbor, bool) {
	for _, n := range ep.Neighbors() {
		if n.Addr == a {
			return n, true
		}
	}
	return ether.Neighbor{}, false
}

// wantReachable checks that a's cache has b (at addr) REACHABLE with b's MAC.
func (p *etherPair) wantReachable(t *testing.T, addr netip.Addr) {
	t.Helper()
	n, ok := neighborState(p.ea, addr)
	if !ok || n.MAC != p.eb.MAC() || n.State != "REACHABLE" {
		t.Errorf("a's entry for b: %+v %v; want %v REACHABLE", n, ok, p.eb.MAC())
	}
}

func TestPingV4(t *testing.T) {
	p := newEtherPair(t, 1500, ether.Config{}, ether.Config{})
	ping(t, p.a, addrB4.Addr())
	// a resolved b by a broadcast request and b's reply: REACHABLE with b's MAC; b learnt
	// a from the request (STALE, RFC 826 merge) — or REACHABLE if it resolved a itself.
	p.wantReachable(t, addrB4.Addr())
	if n, ok := neighborState(p.eb, addrA4.Addr()); !ok || n.MAC != p.ea.MAC() {
		t.Errorf("b's entry for a: %+v %v", n, ok)
	}
	st := p.a.Stats()
	if st["ArpOutRequests"] < 1 || st["ArpInReplies"] < 1 || st["EtherOutFrames"] < 2 {
		t.Errorf("a's counters: ArpOutRequests %d ArpInReplies %d EtherOutFrames %d",
			st["ArpOutRequests"], st["ArpInReplies"], st["EtherOutFrames"])
	}
	if sb := p.b.Stats(); sb["ArpInRequests"] < 1 || sb["ArpOutReplies"] < 1 {
		t.Errorf("b's counters: ArpInRequests %d ArpOutReplies %d", sb["ArpInRequests"], sb["ArpOutReplies"])
	}
	ping(t, p.b, addrA4.Addr())
}

func TestPingV6(t *testing.T) {
	p := newEtherPair(t, 1500, ether.Config{}, ether.Config{})
	// The first solicitation reaches b while its address is tentative (DAD, RFC 4862
	// §5.4.3: ignored); the retransmission a second later is answered.
	ping(t, p.a, addrB6.Addr())
	p.wantReachable(t, addrB6.Addr())
	st := p.a.Stats()
	if st["Icmp6OutNeighborSolicits"] < 2 || st["Icmp6InNeighborAdvertisements"] < 1 {
		t.Errorf("a: Icmp6OutNeighborSolicits %d Icmp6InNeighborAdvertisements %d",
			st["Icmp6OutNeighborSolicits"], st["Icmp6InNeighborAdvertisements"])
	}
	if p.eb.Tentative(addrB6.Addr()) || p.eb.Duplicate(addrB6.Addr()) {
		t.Error("b's address still tentative or duplicate")
	}
	ping(t, p.b, addrA6.Addr())
	// Link-local: the stacks do not have them, but ND resolves them.
	if p.ea.LinkLocal() == p.eb.LinkLocal() || !p.ea.LinkLocal().IsLinkLocalUnicast() {
		t.Errorf("link-local addresses %v %v", p.ea.LinkLocal(), p.eb.LinkLocal())
	}
}

// TestTCPTransfer: 8 MiB there and back over TCP through Ethernet framing, byte-exact.
func TestTCPTransfer(t *testing.T) {
	for _, tc := range []struct {
		name, network string
		addr          netip.Addr
		mtu           int
	}{
		{"v4/1500", "tcp4", addrB4.Addr(), 1500},
		{"v4/9000", "tcp4", addrB4.Addr(), 9000},
		{"v6/1500", "tcp6", addrB6.Addr(), 1500},
		{"v6/65520", "tcp6", addrB6.Addr(), 65520},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newEtherPair(t, tc.mtu, ether.Config{}, ether.Config{})
			transfer(t, p, tc.network, tc.addr, 8<<20)
		})
	}
}

func transfer(t *testing.T, p *etherPair, network string, addr netip.Addr, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ln, err := p.b.Listen(ctx, network, netip.AddrPortFrom(addr, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := make([]byte, size)
	rand.Read(data)
	errc := make(chan error, 1)
	var back bytes.Buffer
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		// Echo everything back, then close.
		_, err = io.Copy(c, c)
		errc <- err
	}()
	c, err := p.a.DialContext(ctx, network, netip.AddrPortFrom(addr, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.Write(data)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.Copy(&back, c); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Bytes(), data) {
		t.Fatalf("echoed %d bytes, not the %d sent", back.Len(), len(data))
	}
}

// TestUDP: datagrams both ways, v4 and v6, arrive intact and in order over a clean pipe,
// the first ones having waited in the neighbour queue while the next hop resolved.
func TestUDP(t *testing.T) {
	p := newEtherPair(t, 1500, ether.Config{NoDAD: true}, ether.Config{NoDAD: true})
	ctx := context.Background()
	for _, tc := range []struct {
		network string
		a, b    netip.Addr
	}{{"udp4", addrA4.Addr(), addrB4.Addr()}, {"udp6", addrA6.Addr(), addrB6.Addr()}} {
		srv, err := p.b.ListenPacket(ctx, tc.network, netip.AddrPortFrom(tc.b, 5353).String())
		if err != nil {
			t.Fatal(err)
		}
		cli, err := p.a.ListenPacket(ctx, tc.network, netip.AddrPortFrom(tc.a, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.b, 5353))
		const n = 8 // within the neighbour queue
		for i := range n {
			msg := bytes.Repeat([]byte{byte(i)}, 1000+i)
			if _, err := cli.WriteTo(msg, to); err != nil {
				t.Fatal(err)
			}
		}
		buf := make([]byte, 2000)
		srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i := range n {
			m, from, err := srv.ReadFrom(buf)
			if err != nil {
				t.Fatalf("%s datagram %d: %v", tc.network, i, err)
			}
			if m != 1000+i || buf[0] != byte(i) || buf[m-1] != byte(i) {
				t.Fatalf("%s datagram %d: %d bytes of %d", tc.network, i, m, buf[0])
			}
			if _, err := srv.WriteTo(buf[:m], from); err != nil {
				t.Fatal(err)
			}
		}
		cli.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i := range n {
			if m, _, err := cli.ReadFrom(buf); err != nil || m != 1000+i {
				t.Fatalf("%s echo %d: %d bytes, %v", tc.network, i, m, err)
			}
		}
		srv.Close()
		cli.Close()
	}
}
