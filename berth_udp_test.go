package berth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/vnet"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

func pair(t testing.TB, opts ...vnet.Option) (a, b *berth.Stack) {
	t.Helper()
	a, b, err := vnet.Pair(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// echo serves UDP echo on pc until it closes.
func echo(pc net.PacketConn) {
	buf := make([]byte, 70000)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}

func TestUDPEchoV4V6(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	srv, err := b.ListenPacket(ctx, "udp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if got := srv.LocalAddr().String(); got != "[::]:7" {
		t.Errorf("dual-stack LocalAddr = %s, want [::]:7 (as Go's net)", got)
	}
	go echo(srv)
	for _, tc := range []struct{ network, addr, local string }{
		{"udp4", "10.0.0.2:7", "10.0.0.1"},
		{"udp6", "[fd00::2]:7", "fd00::1"},
		{"udp", "10.0.0.2:7", "10.0.0.1"},
		{"udp", "[fd00::2]:7", "fd00::1"},
	} {
		c, err := a.DialContext(ctx, tc.network, tc.addr)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.network, tc.addr, err)
		}
		if got := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().String(); got != tc.local {
			t.Errorf("%s: local address %s, want %s", tc.network, got, tc.local)
		}
		if c.RemoteAddr().String() != tc.addr {
			t.Errorf("RemoteAddr %s, want %s", c.RemoteAddr(), tc.addr)
		}
		msg := []byte("hello " + tc.network + " " + tc.addr)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%s read: %v", tc.network, err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Errorf("echo %q, want %q", buf[:n], msg)
		}
		c.Close()
	}
	st := b.Stats()
	if st["UdpInDatagrams"] < 4 || a.Stats()["UdpInDatagrams"] < 4 {
		t.Errorf("UdpInDatagrams a=%d b=%d, want >= 4", a.Stats()["UdpInDatagrams"], st["UdpInDatagrams"])
	}
}

// A dual-stack socket sees IPv4 peers as IPv4-mapped addresses, as Go's net does on Linux.
func TestDualStackPeerAddress(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	srv, err := b.ListenUDP(ctx, "udp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := a.ListenUDP(ctx, "udp4", "10.0.0.1:4444")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("10.0.0.2:9000")); err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, from, err := srv.ReadFromUDPAddrPort(make([]byte, 10))
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddrPort("[::ffff:10.0.0.1]:4444"); from != want {
		t.Errorf("from %v, want %v", from, want)
	}
	// Replying to the mapped address reaches the IPv4 peer.
	if _, err := srv.WriteToUDPAddrPort([]byte("y"), from); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from4, err := c.ReadFromUDPAddrPort(make([]byte, 10))
	if err != nil || n != 1 || from4 != netip.MustParseAddrPort("10.0.0.2:9000") {
		t.Errorf("reply: n=%d from=%v err=%v", n, from4, err)
	}
}

func TestClosedPortConnRefused(t *testing.T) {
	a, _ := pair(t)
	for _, addr := range []string{"10.0.0.2:9999", "[fd00::2]:9999", "127.0.0.1:9999", "[::1]:9999"} {
		c, err := a.DialContext(context.Background(), "udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("anyone?")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 10))
		var oe *net.OpError
		if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &oe) || oe.Op != "read" {
			t.Errorf("%s: read error %v, want *net.OpError read ECONNREFUSED", addr, err)
		}
		// The error is reported once; the next read times out.
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: second read %v, want deadline exceeded", addr, err)
		}
		c.Close()
	}
	if a.Stats()["IcmpInDestUnreachs"] == 0 || a.Stats()["Icmp6InDestUnreachs"] == 0 {
		t.Errorf("no ICMP destination unreachables counted: %v", a.Stats())
	}
}

// An ICMP port unreachable also fails the next write on a connected socket (Linux).
func TestConnRefusedOnWrite(t *testing.T) {
	a, b := pair(t)
	c, err := a.DialContext(context.Background(), "udp4", "10.0.0.2:9999")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	deadline := time.Now().Add(5 * time.Second)
	for b.Stats()["IcmpOutDestUnreachs"] == 0 || a.Stats()["IcmpInDestUnreachs"] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no ICMP error arrived")
		}
		time.Sleep(time.Millisecond)
	}
	_, err = c.Write([]byte("x"))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("write after ICMP: %v, want ECONNREFUSED", err)
	}
}

func TestPingBothWays(t *testing.T) {
	a, b := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, tc := range []struct {
		from *berth.Stack
		to   string
	}{{a, "10.0.0.2"}, {b, "10.0.0.1"}, {a, "fd00::2"}, {b, "fd00::1"}, {a, "127.0.0.1"}, {b, "::1"}, {a, "10.0.0.1"}} {
		if _, err := tc.from.Ping(ctx, netip.MustParseAddr(tc.to), i, []byte("ping payload")); err != nil {
			t.Errorf("ping %s: %v", tc.to, err)
		}
	}
	// a answered b once and itself twice (127.0.0.1 and 10.0.0.1, over loopback).
	// b answered a over IPv6 and itself over ::1.
	if a.Stats()["IcmpInEchos"] != 3 || b.Stats()["IcmpInEchos"] != 1 || b.Stats()["Icmp6InEchos"] != 2 || a.Stats()["Icmp6InEchos"] != 1 {
		t.Errorf("echo counters: a=%v", a.Stats())
	}
	// No route: an immediate error.
	if _, err := a.Ping(ctx, netip.MustParseAddr("192.0.2.1"), 1, nil); !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("ping without route: %v, want ENETUNREACH", err)
	}
}

func TestLargeDatagramFragmented(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	srv, err := b.ListenPacket(ctx, "udp", ":5000")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go echo(srv)
	payload := make([]byte, 60*1024)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	for _, addr := range []string{"10.0.0.2:5000", "[fd00::2]:5000"} {
		c, err := a.DialContext(ctx, "udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 70000)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if !bytes.Equal(buf[:n], payload) {
			t.Errorf("%s: echoed %d bytes differ from the %d sent", addr, n, len(payload))
		}
		c.Close()
	}
	sa, sb := a.Stats(), b.Stats()
	// 61440+8 bytes in 1480-byte fragments: 42 each way.
	if sa["IpFragCreates"] < 42 || sb["IpReasmOKs"] != 1 || sa["IpReasmOKs"] != 1 {
		t.Errorf("IPv4 fragments: a FragCreates=%d b ReasmOKs=%d a ReasmOKs=%d", sa["IpFragCreates"], sb["IpReasmOKs"], sa["IpReasmOKs"])
	}
	if sa["Ip6FragCreates"] < 42 || sb["Ip6ReasmOKs"] != 1 || sa["Ip6ReasmOKs"] != 1 {
		t.Errorf("IPv6 fragments: a FragCreates=%d b ReasmOKs=%d", sa["Ip6FragCreates"], sb["Ip6ReasmOKs"])
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	s := berth.New(berth.WithUnprivileged())
	defer s.Close()
	c, err := s.ListenPacket(ctx, "udp4", "127.0.0.1:40000")
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, err error, op string, want error) {
		t.Helper()
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != op || !errors.Is(err, want) {
			t.Errorf("%s: %v (%#v), want *net.OpError %s wrapping %v", name, err, err, op, want)
		}
	}
	_, err = s.ListenPacket(ctx, "udp4", "127.0.0.1:40000")
	check("bind twice", err, "listen", syscall.EADDRINUSE)
	if err != nil && err.Error() != "listen udp4 127.0.0.1:40000: bind: address already in use" {
		t.Errorf("message %q differs from Go's", err)
	}
	_, err = s.ListenPacket(ctx, "udp4", "10.9.9.9:0")
	check("foreign address", err, "listen", syscall.EADDRNOTAVAIL)
	_, err = s.ListenPacket(ctx, "udp", ":53")
	check("privileged port", err, "listen", syscall.EACCES)
	_, err = c.WriteTo(make([]byte, 70000), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1})
	check("too big", err, "write", syscall.EMSGSIZE)
	_, err = s.DialContext(ctx, "udp", "192.0.2.1:53")
	check("no route", err, "dial", syscall.ENETUNREACH)

	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, _, err = c.ReadFrom(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("deadline: %v", err)
	}
	// A blocked read ends with net.ErrClosed when the socket closes.
	c.SetReadDeadline(time.Time{})
	done := make(chan error)
	go func() { _, _, err := c.ReadFrom(make([]byte, 10)); done <- err }()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		check("read after close", err, "read", net.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("blocked read not woken by Close")
	}
	_, err = c.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1})
	check("write after close", err, "write", net.ErrClosed)
	// A deadline that moves later while a read waits is honoured.
	c2, _ := s.ListenPacket(ctx, "udp", "[::1]:0")
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(time.Hour))
	go func() { _, _, err := c2.ReadFrom(make([]byte, 10)); done <- err }()
	time.Sleep(10 * time.Millisecond)
	c2.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	select {
	case err := <-done:
		check("shortened deadline", err, "read", os.ErrDeadlineExceeded)
	case <-time.After(5 * time.Second):
		t.Fatal("shortened deadline not honoured")
	}
}

// 10,000 sockets bound on one stack each get exactly their own datagrams.
func TestManySockets(t *testing.T) {
	const n = 10000
	a, b := pair(t)
	ctx := context.Background()
	socks := make([]*berth.UDPConn, n)
	for i := range socks {
		c, err := b.ListenUDP(ctx, "udp", fmt.Sprintf(":%d", 20000+i))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		socks[i] = c
	}
	tx, err := a.ListenUDP(ctx, "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	buf := make([]byte, 64)
	// Batches stay below the pipe's and loopback's queue limits (1000 packets).
	const batch = 200
	for lo := 0; lo < n; lo += batch {
		for i := lo; i < lo+batch; i++ {
			dst := "10.0.0.2"
			if i%2 == 1 {
				dst = "fd00::2"
			}
			msg := fmt.Appendf(nil, "for %d", 20000+i)
			if _, err := tx.WriteToUDPAddrPort(msg, netip.AddrPortFrom(netip.MustParseAddr(dst), uint16(20000+i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := lo; i < lo+batch; i++ {
			socks[i].SetReadDeadline(time.Now().Add(5 * time.Second))
			k, _, err := socks[i].ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("socket %d: %v", i, err)
			}
			if want := fmt.Sprintf("for %d", 20000+i); string(buf[:k]) != want {
				t.Fatalf("socket %d got %q, want %q", i, buf[:k], want)
			}
		}
	}
	// Nothing extra arrived anywhere.
	for _, si := range b.Sockets() {
		if si.RecvQ != 0 {
			t.Fatalf("socket %v has %d bytes queued", si.Local, si.RecvQ)
		}
	}
	if got := b.Stats()["UdpInDatagrams"]; got != n {
		t.Errorf("UdpInDatagrams = %d, want %d", got, n)
	}
}

func TestSockets(t *testing.T) {
	a, _ := pair(t)
	ctx := context.Background()
	l, _ := a.ListenPacket(ctx, "udp4", "10.0.0.1:3000")
	defer l.Close()
	d, _ := a.DialContext(ctx, "udp", "10.0.0.2:53")
	defer d.Close()
	ss := a.Sockets()
	if len(ss) != 2 {
		t.Fatalf("Sockets() = %+v, want 2", ss)
	}
	var sawListen, sawConn bool
	for _, s := range ss {
		switch {
		case s.Protocol == "udp" && s.Local == netip.MustParseAddrPort("10.0.0.1:3000") && s.State == "UNCONN":
			sawListen = true
		case s.Protocol == "udp" && s.Remote == netip.MustParseAddrPort("10.0.0.2:53") && s.State == "ESTAB" &&
			s.Local.Addr() == netip.MustParseAddr("10.0.0.1") && s.Local.Port() != 0:
			sawConn = true
		}
	}
	if !sawListen || !sawConn {
		t.Errorf("Sockets() = %+v", ss)
	}
}

func TestReusePortGroupSpreads(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	lc := berth.ListenConfig{Stack: b, ReusePort: true}
	var members []net.PacketConn
	for range 2 {
		pc, err := lc.ListenPacket(ctx, "udp4", "10.0.0.2:6000")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		members = append(members, pc)
	}
	if _, err := b.ListenPacket(ctx, "udp4", "10.0.0.2:6000"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("bind without SO_REUSEPORT into a group: %v, want EADDRINUSE", err)
	}
	counts := make([]int, 2)
	for i := range 40 {
		c, err := a.DialContext(ctx, "udp4", "10.0.0.2:6000")
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{byte(i)})
		c.Close()
		time.Sleep(time.Millisecond)
	}
	for i, m := range members {
		for {
			m.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, err := m.ReadFrom(make([]byte, 4)); err != nil {
				break
			}
			counts[i]++
		}
	}
	if counts[0]+counts[1] != 40 || counts[0] == 0 || counts[1] == 0 {
		t.Errorf("reuseport group got %v datagrams, want 40 spread over both", counts)
	}
}

func TestStackCloseEndsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b, err := vnet.Pair()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	srv, _ := b.ListenPacket(ctx, "udp", ":7")
	go echo(srv)
	c, _ := a.DialContext(ctx, "udp", "10.0.0.2:7")
	c.Write([]byte("x"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error)
	go func() { _, err := c.Read(make([]byte, 10)); blocked <- err }()
	a.Close()
	b.Close()
	if err := <-blocked; !errors.Is(err, net.ErrClosed) {
		t.Errorf("read blocked across stack close: %v, want net.ErrClosed", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// "ip4:icmp" and "ip6:ipv6-icmp" work with golang.org/x/net/icmp.
func TestICMPPacketConnWithXNetICMP(t *testing.T) {
	a, _ := pair(t)
	ctx := context.Background()
	for _, tc := range []struct {
		network, dst string
		typ, reply   icmp.Type
		proto        int
	}{
		{"ip4:icmp", "10.0.0.2", ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply, 1},
		{"ip6:ipv6-icmp", "fd00::2", ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, 58},
	} {
		pc, err := a.ListenPacket(ctx, tc.network, "")
		if err != nil {
			t.Fatal(err)
		}
		msg := icmp.Message{Type: tc.typ, Body: &icmp.Echo{ID: 77, Seq: 3, Data: []byte("x/net")}}
		wb, err := msg.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.WriteTo(wb, &net.IPAddr{IP: net.ParseIP(tc.dst)}); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(tc.network, err)
		}
		rm, err := icmp.ParseMessage(tc.proto, buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		e, ok := rm.Body.(*icmp.Echo)
		if rm.Type != tc.reply || !ok || e.ID != 77 || e.Seq != 3 || string(e.Data) != "x/net" || from.String() != tc.dst {
			t.Errorf("%s: got %+v from %v", tc.network, rm, from)
		}
		pc.Close()
	}
}
