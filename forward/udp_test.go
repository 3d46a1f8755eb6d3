//go:build linux

package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// udpEcho answers every datagram on addr with "echo " + the datagram.
func udpEcho(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo "), b[:n]...), from)
		}
	}()
	return pc.(*net.UDPConn)
}

func exchange(t *testing.T, c net.Conn, msg string) (string, error) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	b := make([]byte, 65535)
	n, err := c.Read(b)
	return string(b[:n]), err
}

// TestOutboundUDP: datagrams both ways through the gateways, IPv4 and IPv6, large ones
// included (at MTU 1500 they are fragmented: from the namespace, reassembled by the berth
// stack for the forwarder's hook; towards it, fragmented by the stack); a closed host port
// answers with ICMP port unreachable, which the namespace's connected socket reports as
// ECONNREFUSED; idle flows expire.
func TestOutboundUDP(t *testing.T) {
	ns, s := session(t, SessionConfig{MTU: 1500, Forward: Config{UDPTimeout: 3 * time.Second, UDPStreamTimeout: 4 * time.Second}})
	e4 := udpEcho(t, "udp4", "127.0.0.1:0")
	e6 := udpEcho(t, "udp6", "[::1]:0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, a := range []string{
		fmt.Sprintf("10.0.2.2:%d", e4.LocalAddr().(*net.UDPAddr).Port),
		fmt.Sprintf("[fd00::2]:%d", e6.LocalAddr().(*net.UDPAddr).Port),
	} {
		c, err := ns.Dial(ctx, "udp", a)
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range []string{"hi", string(make([]byte, 8000))} {
			got, err := exchange(t, c, msg)
			if err != nil || got != "echo "+msg {
				t.Errorf("%s: %d-byte exchange: %d bytes back, %v", a, len(msg), len(got), err)
			}
		}
		c.Close()
	}
	closed, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	port := closed.LocalAddr().(*net.UDPAddr).Port
	closed.Close()
	c, err := ns.Dial(ctx, "udp", fmt.Sprintf("10.0.2.2:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = exchange(t, c, "anyone?")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("closed host port: %v, want ECONNREFUSED", err)
	}
	st := s.Forwarder.Stats()
	if st.UDPOutbound != 3 || st.ICMPErrorsSent == 0 {
		t.Errorf("stats %+v", st)
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Forwarder.Stats().UDPExpired < 3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if st := s.Forwarder.Stats(); st.UDPExpired != 3 || st.UDPFlows != 0 {
		t.Errorf("after the timeouts: %+v", st)
	}
}

// dnsServer answers A and AAAA queries for every name, over UDP and TCP on one port of
// the host's loopback.
func dnsServer(t *testing.T) netip.AddrPort {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ {
		var err error
		if pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp4", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if i == 20 {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	answer := func(q []byte) []byte {
		var p dnsmessage.Parser
		h, err := p.Start(q)
		if err != nil {
			return nil
		}
		qs, err := p.AllQuestions()
		if err != nil || len(qs) != 1 {
			return nil
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
		b.EnableCompression()
		b.StartQuestions()
		b.Question(qs[0])
		b.StartAnswers()
		rh := dnsmessage.ResourceHeader{Name: qs[0].Name, Class: dnsmessage.ClassINET, TTL: 60}
		switch qs[0].Type {
		case dnsmessage.TypeA:
			b.AResource(rh, dnsmessage.AResource{A: [4]byte{192, 0, 2, 7}})
		case dnsmessage.TypeAAAA:
			b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("2001:db8::7").As16()})
		}
		out, _ := b.Finish()
		return out
	}
	go func() {
		b := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(answer(b[:n]), from)
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					var l [2]byte
					if _, err := c.Read(l[:]); err != nil {
						return
					}
					q := make([]byte, int(l[0])<<8|int(l[1]))
					if _, err := c.Read(q); err != nil {
						return
					}
					a := answer(q)
					c.Write(append([]byte{byte(len(a) >> 8), byte(len(a))}, a...))
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// TestDNS: 10.0.2.3 and fd00::3 forward DNS over UDP and TCP to the host's resolver.
func TestDNS(t *testing.T) {
	up := dnsServer(t)
	ns, _ := session(t, SessionConfig{Forward: Config{DNSUpstream: up}})
	for _, server := range []string{"10.0.2.3:53", "[fd00::3]:53"} {
		for _, network := range []string{"udp", "tcp"} {
			r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return ns.Dial(ctx, network, server)
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			addrs, err := r.LookupNetIP(ctx, "ip4", "service.example.")
			cancel()
			if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.7") {
				t.Errorf("%s over %s: %v, %v", server, network, addrs, err)
			}
		}
	}
}
