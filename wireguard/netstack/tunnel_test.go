package netstack

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

func TestPingThroughTunnel(t *testing.T) {
	a, b := tunnel(t, berthSide, berthSide, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The first echo waits for the WireGuard handshake.
	rtt, err := a.berth.Ping(ctx, b.addr, 1, []byte("through the tunnel"))
	if err != nil {
		t.Fatalf("ping %v: %v", b.addr, err)
	}
	if rtt <= 0 {
		t.Fatalf("rtt %v", rtt)
	}
	if _, err := b.berth.Ping(ctx, a.addr, 2, nil); err != nil {
		t.Fatalf("ping back %v: %v", a.addr, err)
	}
}

func TestHTTPThroughTunnel(t *testing.T) {
	for _, c := range []struct{ client, server kind }{
		{berthSide, berthSide},
		{berthSide, gvisorSide},
		{gvisorSide, berthSide},
	} {
		t.Run(c.client.String()+"-to-"+c.server.String(), func(t *testing.T) {
			a, b := tunnel(t, c.client, c.server, nil)
			body := payload(1 << 20)
			serveHTTP(t, b, body)
			checkBody(t, fetch(t, a, "http://"+net.JoinHostPort(b.addr.String(), "80")+"/"), body)
		})
	}
}

func TestUDPThroughTunnel(t *testing.T) {
	for _, peer := range []kind{berthSide, gvisorSide} {
		t.Run("berth-to-"+peer.String(), func(t *testing.T) {
			a, b := tunnel(t, berthSide, peer, nil)
			srv := netip.AddrPortFrom(b.addr, 7)
			b.serve(t, "echo") // RFC 862 on 7/tcp and 7/udp
			c, err := a.berth.DialUDPAddrPort(netip.AddrPort{}, srv)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.RemoteAddr().String(); got != srv.String() {
				t.Errorf("RemoteAddr %s, want %s", got, srv)
			}
			buf := make([]byte, 2048)
			for i, size := range []int{1, 512, 1392} { // 1392: the most a 1420 MTU carries
				msg := bytes.Repeat([]byte{byte(i + 1)}, size)
				// The first datagram may wait for the handshake; resend until answered.
				var n int
				for try := 0; ; try++ {
					if _, err := c.Write(msg); err != nil {
						t.Fatal(err)
					}
					c.SetReadDeadline(time.Now().Add(time.Second))
					if n, err = c.Read(buf); err == nil {
						break
					}
					if try == 5 {
						t.Fatalf("no echo of %d bytes: %v", size, err)
					}
				}
				if !bytes.Equal(buf[:n], msg) {
					t.Fatalf("echo of %d bytes came back as %d bytes", size, n)
				}
			}
			// An unconnected socket names its peer per datagram. Bound to the wildcard of
			// "udp" it is dual-stack, and as with Go on Linux, IPv4 peers come back as
			// IPv4-mapped addresses.
			u, err := a.berth.ListenUDP(nil)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			u.WriteToUDPAddrPort([]byte("hi"), srv)
			u.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := u.ReadFromUDPAddrPort(buf)
			if err != nil || string(buf[:n]) != "hi" || netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != srv {
				t.Fatalf("ReadFrom = %q from %v, %v", buf[:n], from, err)
			}
		})
	}
}

// pingOnce sends an echo request with body through c and waits for the reply carrying it.
func pingOnce(t *testing.T, c net.Conn, body []byte) {
	t.Helper()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 0x4242, Seq: 1, Data: body}}
	b, err := msg.Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write echo: %v", err)
	}
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read echo reply: %v", err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			t.Fatalf("parse echo reply: %v", err)
		}
		if m.Type != ipv4.ICMPTypeEchoReply {
			t.Fatalf("got ICMP type %v, want an echo reply", m.Type)
		}
		if e, ok := m.Body.(*icmp.Echo); ok && bytes.Equal(e.Data, body) {
			return
		}
	}
}

func TestPingGVisorPeer(t *testing.T) {
	a, b := tunnel(t, berthSide, gvisorSide, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// berth's Ping to gVisor, which answers echo requests itself.
	if _, err := a.berth.Ping(ctx, b.addr, 1, []byte("to gvisor")); err != nil {
		t.Fatalf("berth ping gvisor: %v", err)
	}
	// berth's PingConn, as a program written for wireguard-go's netstack uses it.
	pc, err := a.berth.DialPingAddr(a.addr, b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got := pc.RemoteAddr().String(); got != b.addr.String() {
		t.Errorf("RemoteAddr %s", got)
	}
	pingOnce(t, pc, []byte("ping conn to gvisor"))
	// gVisor's ping socket to berth: the berth stack answers the echo request.
	gc, err := b.gvisor.DialPingAddr(b.addr, a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	pingOnce(t, gc, []byte("gvisor to berth"))
}

func TestPingConnErrors(t *testing.T) {
	a, _ := tunnel(t, berthSide, berthSide, nil)
	pc, err := a.berth.ListenPingAddr(a.addr)
	if err != nil {
		t.Fatal(err)
	}
	if pc.RemoteAddr() != nil {
		t.Errorf("unconnected RemoteAddr %v", pc.RemoteAddr())
	}
	if _, err := pc.Write([]byte{8, 0, 0, 0}); err == nil {
		t.Error("Write on an unconnected PingConn succeeded")
	}
	pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := pc.ReadFrom(make([]byte, 10)); err == nil || !err.(net.Error).Timeout() {
		t.Errorf("ReadFrom past the deadline: %v", err)
	}
	pc.Close()
	if _, _, err := pc.ReadFrom(make([]byte, 10)); err == nil {
		t.Error("ReadFrom after Close succeeded")
	}
	if _, err := a.berth.DialPingAddr(a.addr, netipZero); err == nil {
		t.Error("DialPingAddr without a remote address succeeded")
	}
}

var netipZero netip.Addr
