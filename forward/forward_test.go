//go:build linux

package forward

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/netns"
	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/services"
	"github.com/berthnet/berth/tcp"
)

// session starts a Forwarder serving a fresh namespace.
func session(t *testing.T, cfg SessionConfig) (*netns.NS, *Session) {
	t.Helper()
	ns := netns.New(t)
	cfg.NSPath = "/run/netns/" + ns.Name
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return ns, s
}

func patternSum(n int64) [32]byte {
	h := sha256.New()
	io.Copy(h, services.NewPatternReader(n))
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// httpServer serves GET /N (N bytes of the pattern) and /hello on addr (host loopback).
func httpServer(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hello" {
			fmt.Fprintf(w, "hello %s", r.RemoteAddr)
			return
		}
		var n int64
		fmt.Sscanf(r.URL.Path, "/%d", &n)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		io.Copy(w, services.NewPatternReader(n))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

func nsClient(ns *netns.NS) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: ns.Dial, DisableKeepAlives: true}, Timeout: 60 * time.Second}
}

// TestOutboundTCP: the namespace reaches the host's loopback through the gateways, IPv4
// and IPv6, and a large download is byte-exact.
func TestOutboundTCP(t *testing.T) {
	ns, s := session(t, SessionConfig{})
	hp4 := httpServer(t, "127.0.0.1:0")
	hp6 := httpServer(t, "[::1]:0")
	c := nsClient(ns)
	for _, u := range []string{
		fmt.Sprintf("http://10.0.2.2:%d/hello", hp4.Port()),
		fmt.Sprintf("http://[fd00::2]:%d/hello", hp6.Port()),
	} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// The host server sees the forwarder's host socket: a loopback client.
		if !strings.HasPrefix(string(b), "hello 127.0.0.1:") && !strings.HasPrefix(string(b), "hello [::1]:") {
			t.Errorf("GET %s: %q", u, b)
		}
	}
	n := int64(bigDownload)
	resp, err := c.Get(fmt.Sprintf("http://10.0.2.2:%d/%d", hp4.Port(), n))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	got, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || got != n {
		t.Fatalf("download: %d bytes of %d, %v", got, n, err)
	}
	if !bytes.Equal(h.Sum(nil), func() []byte { s := patternSum(n); return s[:] }()) {
		t.Fatal("download: content differs")
	}
	st := s.Forwarder.Stats()
	if st.TCPOutbound < 3 || st.BytesToNS < uint64(n) {
		t.Errorf("stats %+v", st)
	}
}

// TestOutboundTCPRefused: a closed host port is a refused connect inside the namespace;
// an address the forwarder will not reach is unreachable.
func TestOutboundTCPRefused(t *testing.T) {
	ns, s := session(t, SessionConfig{})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := ns.Dial(ctx, "tcp", fmt.Sprintf("10.0.2.2:%d", port))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial closed port: %v, want ECONNREFUSED", err)
	}
	// The namespace's own network is not forwarded: ICMP net unreachable.
	_, err = ns.Dial(ctx, "tcp", "10.0.2.77:80")
	if !errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("dial 10.0.2.77: %v, want unreachable", err)
	}
	if st := s.Forwarder.Stats(); st.TCPRefused != 1 || st.TCPUnreachable != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestHalfClose: the namespace's FIN reaches the host as EOF while the host's answer
// still flows back; a host RST becomes a RST in the namespace.
func TestHalfClose(t *testing.T) {
	ns, _ := session(t, SessionConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go func() {
				b, _ := io.ReadAll(c) // until the namespace's FIN
				if string(b) == "reset" {
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
					return
				}
				c.Write([]byte("got " + string(b)))
				c.Close()
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", fmt.Sprintf("10.0.2.2:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	c.(*net.TCPConn).CloseWrite()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(b) != "got ping" {
		t.Fatalf("half-close: %q, %v", b, err)
	}
	c, err = ns.Dial(ctx, "tcp", fmt.Sprintf("10.0.2.2:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("reset"))
	c.(*net.TCPConn).CloseWrite()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(c)
	c.Close()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("host RST: read %v, want ECONNRESET", err)
	}
}

// TestFlowLimit: beyond MaxTCPFlows a new connection's SYNs are dropped (the namespace's
// connect waits, as for a full Linux SYN queue) and counted; when a flow ends its slot is
// free again.
func TestFlowLimit(t *testing.T) {
	ns, s := session(t, SessionConfig{Forward: Config{MaxTCPFlows: 1}})
	hp := httpServer(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := fmt.Sprintf("10.0.2.2:%d", hp.Port())
	c1, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancelShort()
	if c, err := ns.Dial(short, "tcp", addr); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("second flow over the limit: %v, want the connect to time out", err)
		if c != nil {
			c.Close()
		}
	}
	if st := s.Forwarder.Stats(); st.TCPFlowLimitDrops < 1 || st.TCPFlows != 1 {
		t.Errorf("stats %+v", st)
	}
	c1.Close()
	deadline := time.Now().Add(10 * time.Second)
	for s.Forwarder.Stats().TCPFlows != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	c3, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("after the first flow ended: %v", err)
	}
	c3.Close()
}

// TestCloseNoLeak: closing a session with flows open (TCP both ways, UDP, a port
// forward) ends every goroutine it started.
func TestCloseNoLeak(t *testing.T) {
	hp := httpServer(t, "127.0.0.1:0")
	e := udpEcho(t, "udp4", "127.0.0.1:0")
	ns := netns.New(t)
	hostNS := netns.New(t)
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	s, err := Start(SessionConfig{NSPath: "/run/netns/" + ns.Name, Forward: Config{Listen: hostNS.Listen, ListenPacket: hostNS.ListenPacket}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", fmt.Sprintf("10.0.2.2:%d", hp.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	u, err := ns.Dial(ctx, "udp", fmt.Sprintf("10.0.2.2:%d", e.LocalAddr().(*net.UDPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := exchange(t, u, "x"); err != nil {
		t.Fatal(err)
	}
	ln, err := ns.Listen("tcp", "[::]:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := s.Forwarder.AddPort(PortMapping{Proto: "tcp", HostPort: 8080, NSPort: 8080}); err != nil {
		t.Fatal(err)
	}
	hc, err := hostNS.Dial(ctx, "tcp", "127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if ac, err := ln.Accept(); err == nil {
		defer ac.Close()
	}
	s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before Start, %d after Close:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// TestPing: echo requests to the gateways are answered by the host's loopback, through
// ping sockets or (as root where ping sockets are not allowed) a raw socket.
func TestPing(t *testing.T) {
	_, err := exec.LookPath("ping")
	testenv.NeedCommand(t, "ping", err)
	ns, s := session(t, SessionConfig{})
	for _, a := range []string{"10.0.2.2", "fd00::2"} {
		out, err := ns.Command(context.Background(), "ping", "-c", "2", "-i", "0.2", "-W", "5", a).CombinedOutput()
		if err != nil {
			t.Errorf("ping %s: %v\n%s", a, err, out)
		}
	}
	if st := s.Forwarder.Stats(); st.PingsForwarded < 4 {
		t.Errorf("stats %+v", st)
	}
}

// TestNoHostLoopbackNoIPv6: with NoHostLoopback the gateway refuses connections (the
// host's loopback server stays out of reach); with NoIPv6 the namespace has no IPv6
// address or route through berth.
func TestNoHostLoopbackNoIPv6(t *testing.T) {
	ns, s := session(t, SessionConfig{Forward: Config{NoHostLoopback: true, NoIPv6: true}})
	hp := httpServer(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ns.Dial(ctx, "tcp", fmt.Sprintf("10.0.2.2:%d", hp.Port())); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("gateway with NoHostLoopback: %v, want ECONNREFUSED", err)
	}
	if _, err := ns.Dial(ctx, "tcp", fmt.Sprintf("[fd00::2]:%d", hp.Port())); !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("IPv6 with NoIPv6: %v, want ENETUNREACH", err)
	}
	if st := s.Forwarder.Stats(); st.TCPOutbound != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestTimeWaitReuse: a namespace client that reuses its port for a new connection to the
// same host service, while berth's side of the previous one is still in TIME-WAIT (the
// host closed first), gets a new connection (RFC 6191), not a RST.
func TestTimeWaitReuse(t *testing.T) {
	ns, s := session(t, SessionConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "conn %d", i)
			c.Close() // the host closes first: berth's side ends in TIME-WAIT
		}
	}()
	target := fmt.Sprintf("10.0.2.2:%d", ln.Addr().(*net.TCPAddr).Port)
	local := &net.TCPAddr{IP: net.ParseIP("10.0.2.100"), Port: 41000}
	for i := 0; i < 3; i++ {
		var c net.Conn
		err := ns.Do(func() error {
			d := net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
			var err error
			c, err = d.Dial("tcp", target)
			return err
		})
		if err != nil {
			t.Fatalf("connection %d from port 41000: %v", i, err)
		}
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != fmt.Sprintf("conn %d", i) {
			t.Fatalf("connection %d: read %q, %v", i, b, err)
		}
		// Wait for berth's side to reach TIME-WAIT before reusing the port.
		deadline := time.Now().Add(5 * time.Second)
		for !hasTimeWait(s, local.Port) {
			if time.Now().After(deadline) {
				t.Fatalf("connection %d: berth's side never reached TIME-WAIT", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func hasTimeWait(s *Session, port int) bool {
	for _, si := range s.Stack.TCP().Sockets() {
		if si.State == tcp.StateTimeWait && int(si.Remote.Port()) == port {
			return true
		}
	}
	return false
}

// TestSpliceBufferGrowth: a bulk flow's copy buffer (namespace → host; the other
// direction reads the host socket straight into berth's send buffer) grows from spliceBuf
// to spliceBufMax, counted against MaxBuffered and given back when the flow ends; where
// MaxBuffered has no room for it, the flow keeps the small buffer and still carries
// everything.
func TestSpliceBufferGrowth(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxBuffered int64
		want        int64 // the most BufferedBytes were during the transfer
	}{
		{"grows", 0, spliceBufMax},
		{"capped", spliceBuf, spliceBuf},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, s := session(t, SessionConfig{Forward: Config{MaxBuffered: tc.maxBuffered}})
			const total = 16 << 20
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			type result struct {
				during int64
				sum    []byte
				n      int64
				err    error
			}
			res := make(chan result, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					res <- result{err: err}
					return
				}
				defer c.Close()
				h := sha256.New()
				// Half the data: the namespace→host copy has filled its buffer many times.
				n, err := io.CopyN(h, c, total/2)
				during := s.Forwarder.Stats().BufferedPeak
				if err == nil {
					var m int64
					m, err = io.Copy(h, c)
					n += m
				}
				res <- result{during, h.Sum(nil), n, err}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := ns.Dial(ctx, "tcp", fmt.Sprintf("10.0.2.2:%d", ln.Addr().(*net.TCPAddr).Port))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(c, services.NewPatternReader(total)); err != nil {
				t.Fatal(err)
			}
			c.Close()
			r := <-res
			if r.err != nil || r.n != total {
				t.Fatalf("host received %d bytes of %d: %v", r.n, total, r.err)
			}
			if want := patternSum(total); !bytes.Equal(r.sum, want[:]) {
				t.Fatal("content differs")
			}
			if r.during != tc.want {
				t.Errorf("BufferedBytes during the transfer: %d, want %d", r.during, tc.want)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				st := s.Forwarder.Stats()
				if st.TCPFlows == 0 && st.BufferedBytes == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the flow: %d flows, %d bytes buffered", st.TCPFlows, st.BufferedBytes)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestNamespaceSeesWholeWindow: a namespace connection is offered the connection's whole
// receive buffer (1 MiB) at once, not the 256 KiB auto-tuning starts from: the copy to the
// host drains the buffer in bursts, which kept auto-tuning from ever growing it.
func TestNamespaceSeesWholeWindow(t *testing.T) {
	ns, s := session(t, SessionConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			_, err = io.ReadFull(c, make([]byte, 1))
		}
		got <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", fmt.Sprintf("10.0.2.2:%d", ln.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The window in the SYN-ACK is unscaled (RFC 7323 §2.2): the ACK of a byte of data
	// brings the scaled one.
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	want := uint32(s.Stack.TCP().Config().ReceiveBuffer * 9 / 10)
	var wnd uint32
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var ierr error
		rc.Control(func(fd uintptr) {
			var ti *unix.TCPInfo
			if ti, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); ierr == nil {
				wnd = ti.Snd_wnd
			}
		})
		if ierr != nil {
			t.Fatal(ierr)
		}
		if wnd >= want {
			return
		}
	}
	t.Fatalf("the namespace's kernel sees a send window of %d bytes, want at least %d", wnd, want)
}

// TestEstablishedFlowBypassesHook: once a forwarded connection exists, TCP finds its
// segments itself (tcp.HandleForeign) and the Forwarder's hook sees none of them: a
// download of thousands of segments costs the hook the SYN and little else.
func TestEstablishedFlowBypassesHook(t *testing.T) {
	ns, s := session(t, SessionConfig{})
	hp := httpServer(t, "127.0.0.1:0")
	c := nsClient(ns)
	before := s.Forwarder.c.tcpHooked.Load()
	const n = 16 << 20
	resp, err := c.Get(fmt.Sprintf("http://10.0.2.2:%d/%d", hp.Port(), n))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || got != n {
		t.Fatalf("download: %d bytes of %d, %v", got, n, err)
	}
	// 16 MiB is at least 256 segments of 64 KiB (and ACKs as many) from the namespace;
	// the hook may see the SYN, its retransmissions and a stray after the close.
	if hooked := s.Forwarder.c.tcpHooked.Load() - before; hooked > 16 {
		t.Errorf("the hook saw %d TCP segments of one established connection", hooked)
	}
}
