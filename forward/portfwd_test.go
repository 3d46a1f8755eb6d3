//go:build linux

package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/netns"
)

func TestParsePortMapping(t *testing.T) {
	for _, c := range []struct {
		in   string
		want PortMapping
		err  bool
	}{
		{in: "8080:80", want: PortMapping{Proto: "tcp", HostPort: 8080, NSPort: 80}},
		{in: "5353:53/udp", want: PortMapping{Proto: "udp", HostPort: 5353, NSPort: 53}},
		{in: "127.0.0.1:8080:80/tcp", want: PortMapping{Proto: "tcp", HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: 8080, NSPort: 80}},
		{in: "[::1]:8080:80", want: PortMapping{Proto: "tcp", HostAddr: netip.MustParseAddr("::1"), HostPort: 8080, NSPort: 80}},
		{in: "8080", err: true},
		{in: "0:80", err: true},
		{in: "8080:80/sctp", err: true},
		{in: "x:8080:80", err: true},
		{in: "1:2:3:4", err: true},
		{in: "70000:80", err: true},
	} {
		got, err := ParsePortMapping(c.in)
		if (err != nil) != c.err || (!c.err && got != c.want) {
			t.Errorf("ParsePortMapping(%q) = %+v, %v", c.in, got, err)
			continue
		}
		if !c.err {
			if back, _ := ParsePortMapping(got.String()); back != got {
				t.Errorf("%q: String %q does not read back", c.in, got.String())
			}
		}
	}
}

// TestPortForward: host ports reach servers in the namespace over TCP and UDP, IPv4 and
// IPv6, and the servers see the client's real address. The "host" here is a namespace of
// the test's own (hostNS) with a client namespace on a veth, so the client has a real,
// non-loopback address; the forward's host sockets are opened in hostNS.
func TestPortForward(t *testing.T) {
	hostNS, client := netns.New(t), netns.New(t)
	netns.Veth(t, hostNS, []string{"192.168.77.1/24", "fd77::1/64"}, client, []string{"192.168.77.2/24", "fd77::2/64"})
	ns, s := session(t, SessionConfig{Forward: Config{Listen: hostNS.Listen, ListenPacket: hostNS.ListenPacket}})

	// Servers in the namespace tell each client the address they see.
	ln, err := ns.Listen("tcp", "[::]:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "you are %s", c.RemoteAddr())
			c.Close()
		}
	}()
	pc, err := ns.ListenPacket("udp", "[::]:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		b := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo([]byte("you are "+from.String()), from)
		}
	}()
	for _, m := range []string{"8080:8080/tcp", "5353:5353/udp"} {
		pm, _ := ParsePortMapping(m)
		if err := s.Forwarder.AddPort(pm); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, host := range []string{"192.168.77.1", "fd77::1"} {
		for _, network := range []string{"tcp", "udp"} {
			port := "8080"
			if network == "udp" {
				port = "5353"
			}
			c, err := client.Dial(ctx, network, net.JoinHostPort(host, port))
			if err != nil {
				t.Fatalf("%s %s: %v", network, host, err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			var got []byte
			if network == "tcp" {
				got, err = io.ReadAll(c)
			} else {
				c.Write([]byte("who am I?"))
				b := make([]byte, 1500)
				var n int
				n, err = c.Read(b)
				got = b[:n]
			}
			want := "you are " + c.LocalAddr().String()
			c.Close()
			if err != nil || string(got) != want {
				t.Errorf("%s via %s: %q, %v; want %q", network, host, got, err, want)
			}
		}
	}
	if st := s.Forwarder.Stats(); st.TCPInbound != 2 || st.UDPInbound != 2 {
		t.Errorf("stats %+v", st)
	}
	if n := len(s.Forwarder.Ports()); n != 2 {
		t.Errorf("Ports: %d mappings", n)
	}

	// A host port in use is an error naming it.
	busy, err := hostNS.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bp := uint16(busy.Addr().(*net.TCPAddr).Port)
	err = s.Forwarder.AddPort(PortMapping{Proto: "tcp", HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: bp, NSPort: 80})
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), fmt.Sprint(bp)) {
		t.Errorf("busy host port: %v", err)
	}

	// Removed, the host port closes: connecting is refused.
	if err := s.Forwarder.RemovePort(PortMapping{Proto: "tcp", HostPort: 8080, NSPort: 8080}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Dial(ctx, "tcp", "192.168.77.1:8080"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after RemovePort: %v, want ECONNREFUSED", err)
	}
}

// TestPortForwardLoopback: a client on the host's loopback appears as the gateway (the
// namespace has no route to the host's loopback); a namespace port nobody listens on
// refuses the host client.
func TestPortForwardLoopback(t *testing.T) {
	hostNS := netns.New(t)
	ns, s := session(t, SessionConfig{Forward: Config{Listen: hostNS.Listen, ListenPacket: hostNS.ListenPacket}})
	ln, err := ns.Listen("tcp", "[::]:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s", c.RemoteAddr())
			c.Close()
		}
	}()
	s.Forwarder.AddPort(PortMapping{Proto: "tcp", HostPort: 8080, NSPort: 8080})
	s.Forwarder.AddPort(PortMapping{Proto: "tcp", HostPort: 8081, NSPort: 8081})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for addr, want := range map[string]string{"127.0.0.1:8080": "10.0.2.2:", "[::1]:8080": "[fd00::2]:"} {
		c, err := hostNS.Dial(ctx, "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		c.Close()
		_, port, _ := net.SplitHostPort(c.LocalAddr().String())
		if err != nil || string(got) != want+port {
			t.Errorf("%s: seen as %q, %v; want %s%s", addr, got, err, want, port)
		}
	}
	c, err := hostNS.Dial(ctx, "tcp", "127.0.0.1:8081")
	if err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)) {
		t.Errorf("closed namespace port: %v, want a reset", err)
	}
}
