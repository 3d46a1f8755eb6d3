package berth_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
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
