package berth_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/berthnet/berth/vnet"
)

// zonePair is a vnet.Pair with link-local addresses fe80::1 (a) and fe80::2 (b) on eth0.
func zonePair(t *testing.T) (a, b interface {
	Listen(context.Context, string, string) (net.Listener, error)
	ListenPacket(context.Context, string, string) (net.PacketConn, error)
	DialContext(context.Context, string, string) (net.Conn, error)
}) {
	sa, sb := pair(t)
	if err := sa.AddAddress("eth0", netip.MustParsePrefix("fe80::1/64")); err != nil {
		t.Fatal(err)
	}
	if err := sb.AddAddress("eth0", netip.MustParsePrefix("fe80::2/64")); err != nil {
		t.Fatal(err)
	}
	return sa, sb
}

// A zone selects the interface of a link-local address and stays in the addresses the
// sockets return.
func TestZonesTCP(t *testing.T) {
	a, b := zonePair(t)
	ctx := context.Background()
	l, err := a.Listen(ctx, "tcp6", "[fe80::1%eth0]:80")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Addr().String(); got != "[fe80::1%eth0]:80" {
		t.Errorf("listener Addr = %s", got)
	}
	acc := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); acc <- c }()
	c, err := b.DialContext(ctx, "tcp6", "[fe80::1%eth0]:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != "[fe80::1%eth0]:80" {
		t.Errorf("dialed RemoteAddr = %s", got)
	}
	if got := c.LocalAddr().String(); !strings.HasPrefix(got, "[fe80::2%eth0]:") {
		t.Errorf("dialed LocalAddr = %s", got)
	}
	sc := <-acc
	if sc == nil {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	if got := sc.RemoteAddr().String(); !strings.HasPrefix(got, "[fe80::2%eth0]:") {
		t.Errorf("accepted RemoteAddr = %s", got)
	}
	if got := sc.LocalAddr().String(); got != "[fe80::1%eth0]:80" {
		t.Errorf("accepted LocalAddr = %s", got)
	}
}

func TestZonesUDP(t *testing.T) {
	a, b := zonePair(t)
	ctx := context.Background()
	pc, err := a.ListenPacket(ctx, "udp6", "[fe80::1%eth0]:53")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := b.DialContext(ctx, "udp6", "[fe80::1%eth0]:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("q"))
	buf := make([]byte, 10)
	_, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(from.String(), "[fe80::2%eth0]:") {
		t.Errorf("ReadFrom sender = %s", from)
	}
	// The zone in a WriteTo address is the interface's, not part of the address.
	if _, err := pc.WriteTo([]byte("r"), from); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "r" {
		t.Errorf("reply: %q, %v", buf[:n], err)
	}
}

// Zones that name no interface, or an interface without the address or route, fail as
// the kernel's sockets do, with the zone kept in the error text.
func TestZoneErrorsLikeKernel(t *testing.T) {
	a, b := zonePair(t)
	ctx := context.Background()
	for _, addr := range []string{"[fe80::1%nosuch]:0", "[fe80::1%lo]:0"} {
		dial := strings.TrimSuffix(addr, "0") + "80"
		type op struct {
			name          string
			kernel, berth func() error
		}
		for _, o := range []op{
			{"listen tcp6 " + addr, func() error { _, err := net.Listen("tcp6", addr); return err },
				func() error { _, err := a.Listen(ctx, "tcp6", addr); return err }},
			{"listen udp6 " + addr, func() error { _, err := net.ListenPacket("udp6", addr); return err },
				func() error { _, err := a.ListenPacket(ctx, "udp6", addr); return err }},
			{"dial tcp6 " + dial, func() error { _, err := net.Dial("tcp6", dial); return err },
				func() error { _, err := b.DialContext(ctx, "tcp6", dial); return err }},
		} {
			ke, be := o.kernel(), o.berth()
			if ke == nil || be == nil || ke.Error() != be.Error() {
				t.Errorf("%s: kernel %v, berth %v", o.name, ke, be)
			}
		}
	}
}

// The same link-local address on two links: the zone picks which one a dial reaches, for
// TCP and UDP, and replies to an accepted connection go back the way it came.
func TestZoneSelectsInterface(t *testing.T) {
	n := vnet.New()
	defer n.Close()
	ll := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	// a —eth0— b —eth1— c, with a and c both fe80::1.
	if err := n.Link("b", "a", vnet.LinkConfig{A: ll("fe80::2/64"), B: ll("fe80::1/64")}); err != nil {
		t.Fatal(err)
	}
	if err := n.Link("b", "c", vnet.LinkConfig{A: ll("fe80::3/64"), B: ll("fe80::1/64")}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{"a", "c"} {
		h := n.Host(name)
		l, err := h.Listen(ctx, "tcp6", ":80")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for c, err := l.Accept(); err == nil; c, err = l.Accept() {
				c.Write([]byte("I am " + name))
				c.Close()
			}
		}()
		pc, err := h.ListenPacket(ctx, "udp6", ":53")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			buf := make([]byte, 100)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo([]byte(name), from)
			}
		}()
	}
	b := n.Host("b")
	for zone, want := range map[string]string{"eth0": "a", "eth1": "c"} {
		c, err := b.DialContext(ctx, "tcp6", "[fe80::1%"+zone+"]:80")
		if err != nil {
			t.Fatalf("%s: %v", zone, err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != "I am "+want {
			t.Errorf("TCP via %s reached %q, want %s", zone, got, want)
		}
		u, err := b.DialContext(ctx, "udp6", "[fe80::1%"+zone+"]:53")
		if err != nil {
			t.Fatalf("%s: %v", zone, err)
		}
		u.Write([]byte("who?"))
		u.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 10)
		k, err := u.Read(buf)
		u.Close()
		if err != nil || string(buf[:k]) != want {
			t.Errorf("UDP via %s: %q, %v; want %s", zone, buf[:k], err, want)
		}
	}
}

// A host with the same link-local prefix on two links answers a ping on the link it came
// from: the reply leaves through the interface holding the address that was pinged.
func TestLinkLocalEchoReplyLink(t *testing.T) {
	n := vnet.New()
	defer n.Close()
	ll := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	// a —eth0— b —eth1— c: b's route for fe80::/64 is eth0's, found first.
	if err := n.Link("b", "a", vnet.LinkConfig{A: ll("fe80::2/64"), B: ll("fe80::1/64")}); err != nil {
		t.Fatal(err)
	}
	if err := n.Link("b", "c", vnet.LinkConfig{A: ll("fe80::3/64"), B: ll("fe80::1/64")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := n.Host("c").Ping(ctx, netip.MustParseAddr("fe80::3"), 1, []byte("c")); err != nil {
		t.Errorf("c pings b's fe80::3 on their link: %v", err)
	}
	if _, err := n.Host("a").Ping(ctx, netip.MustParseAddr("fe80::2"), 1, []byte("a")); err != nil {
		t.Errorf("a pings b's fe80::2: %v", err)
	}
}
