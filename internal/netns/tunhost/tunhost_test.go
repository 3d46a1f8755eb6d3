//go:build linux

package tunhost

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/link"
)

// TestHost checks the harness end to end: the kernel pings berth, and Go's net package in
// the namespace exchanges UDP and TCP with berth in both directions, over IPv4 and IPv6.
func TestHost(t *testing.T) {
	h := New(t, Config{})
	_, err := exec.LookPath("ping")
	testenv.NeedCommand(t, "ping", err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, a := range h.Addrs {
		out, err := h.NS.Output("ping", "-n", "-c", "2", "-i", "0.05", "-W", "2", a.String())
		if err != nil || !strings.Contains(out, " 2 received") {
			t.Errorf("kernel ping berth %s: %v\n%s", a, err, out)
		}
	}

	// UDP: the kernel sends to a berth socket, which answers.
	pc, err := h.Stack.ListenPacket(ctx, "udp", ":5000")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	for _, a := range h.Addrs {
		c, err := h.NS.Dial(ctx, "udp", netip.AddrPortFrom(a, 5000).String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("kernel to berth"))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		c.Close()
		if err != nil || string(buf[:n]) != "kernel to berth" {
			t.Errorf("UDP via %s: %q, %v", a, buf[:n], err)
		}
	}

	// TCP, berth dialing a kernel listener in the namespace.
	for _, a := range h.HostAddrs {
		ln, err := h.NS.Listen("tcp", netip.AddrPortFrom(a, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			io.Copy(c, c)
		}()
		c, err := h.Stack.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			ln.Close()
			t.Fatalf("berth dial kernel %s: %v", ln.Addr(), err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("berth to kernel"))
		buf := make([]byte, 100)
		n, err := io.ReadAtLeast(c, buf, len("berth to kernel"))
		c.Close()
		ln.Close()
		if err != nil || string(buf[:n]) != "berth to kernel" {
			t.Errorf("TCP berth->kernel via %s: %q, %v", a, buf[:n], err)
		}
	}

	// TCP, the kernel dialing a berth listener.
	ln, err := h.Stack.Listen(ctx, "tcp", ":5001")
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
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	for _, a := range h.Addrs {
		c, err := h.NS.Dial(ctx, "tcp", netip.AddrPortFrom(a, 5001).String())
		if err != nil {
			t.Fatalf("kernel dial berth %s: %v", a, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("kernel to berth"))
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "kernel to berth" {
			t.Errorf("TCP kernel->berth via %s: %q, %v", a, got, err)
		}
	}
}

// countingLink counts the packets berth writes through it.
type countingLink struct {
	link.Endpoint
	written atomic.Int64
}

func (c *countingLink) WritePackets(pkts [][]byte) (int, error) {
	n, err := c.Endpoint.WritePackets(pkts)
	c.written.Add(int64(n))
	return n, err
}

// TestWrapLink checks that Config.WrapLink is given the bare device and that the stack
// sends through what it returns: the kernel's pings are answered through the wrapper.
func TestWrapLink(t *testing.T) {
	c := &countingLink{}
	h := New(t, Config{WrapLink: func(ep link.Endpoint) link.Endpoint {
		c.Endpoint = ep
		return c
	}})
	if c.Endpoint != link.Endpoint(h.TUN) {
		t.Fatalf("WrapLink got %v, want the TUN device %v", c.Endpoint, h.TUN)
	}
	_, err := exec.LookPath("ping")
	testenv.NeedCommand(t, "ping", err)
	// -w: ping sends until two replies came or 5 s passed; with -W alone it gave up
	// on a reply delayed on a loaded machine 80 ms after the first.
	out, err := h.NS.Output("ping", "-n", "-c", "2", "-i", "0.05", "-w", "5", h.Addrs[0].String())
	if err != nil || !strings.Contains(out, " 2 received") {
		t.Fatalf("kernel ping berth %s: %v\n%s", h.Addrs[0], err, out)
	}
	if n := c.written.Load(); n < 2 {
		t.Errorf("the wrapper saw %d packets written, want at least the 2 echo replies", n)
	}
}
