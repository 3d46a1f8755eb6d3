package netstack

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// echoUDP answers every datagram on pc with itself until pc closes.
func echoUDP(t *testing.T, pc net.PacketConn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
}

func TestUDPThroughTunnel(t *testing.T) {
	for _, peer := range []kind{berthSide, gvisorSide} {
		t.Run("berth-to-"+peer.String(), func(t *testing.T) {
			a, b := tunnel(t, berthSide, peer, nil)
			srv := netip.AddrPortFrom(b.addr, 7)
			if b.berth != nil {
				pc, err := b.berth.ListenUDPAddrPort(srv)
				if err != nil {
					t.Fatal(err)
				}
				echoUDP(t, pc)
			} else {
				pc, err := b.gvisor.ListenUDPAddrPort(srv)
				if err != nil {
					t.Fatal(err)
				}
				echoUDP(t, pc)
			}
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
