//go:build linux

package forward

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/netns"
)

// raiseNoFile raises the process's descriptor limit to at least n for the test: each
// forwarded connection is three sockets here (the namespace's client, berth's host
// socket, the host server's).
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur >= n {
		return
	}
	lim := syscall.Rlimit{Cur: n, Max: max(old.Max, n)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raising RLIMIT_NOFILE to %d: %v", n, err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// nsConnectMany starts n TCP connects from the namespace to dst at once (non-blocking
// sockets created in the namespace) and returns them as net.Conns, whose first Write
// waits for the connect; they are closed at the end of the test.
func nsConnectMany(t *testing.T, ns *netns.NS, dst netip.AddrPort, n int) []net.Conn {
	t.Helper()
	fds := make([]int, 0, n)
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	err := ns.Do(func() error {
		for range n {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
				return err
			}
		}
		return nil
	})
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "nsconn")
		c, cerr := net.FileConn(f) // a dup of fd, in Go's poller
		f.Close()
		if cerr != nil && err == nil {
			err = cerr
		}
		if c != nil {
			conns = append(conns, c)
		}
	}
	if err != nil {
		t.Fatalf("%d connects from the namespace: %v", n, err)
	}
	return conns
}

// pacer holds a flood's i-th packet back until the forwarder has taken all but 256 of
// those before it (done counts them): the namespace's device queue (500 packets) would
// otherwise drop most of a flood sent faster than the forwarder takes it. A forwarder
// that stops taking them (a full table that refuses new flows) ends the pacing.
type pacer struct {
	done    func() uint64
	stalled bool
}

func (p *pacer) pace(i int) {
	if i%64 != 63 || p.stalled {
		return
	}
	deadline := time.Now().Add(2 * time.Second)
	for p.done()+256 < uint64(i) {
		if time.Now().After(deadline) {
			p.stalled = true
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// heapInuse is the heap in use after a collection.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// waitStats polls the forwarder's Stats until ok or the timeout.
func waitStats(t *testing.T, s *Session, timeout time.Duration, what string, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := s.Forwarder.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %+v", what, timeout, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// echoServer answers each connection's 8-byte request with reply bytes (the request
// repeated), then holds the connection until the client closes it.
func echoServer(t *testing.T, reply int) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req := make([]byte, 8)
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				out := make([]byte, reply)
				for i := range out {
					out[i] = req[i%8]
				}
				if _, err := c.Write(out); err != nil {
					return
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// exchangeAll sends each connection its 8-byte request and reads the reply, all at once;
// it returns how many were answered correctly, and the first error.
func exchangeAll(conns []net.Conn, reply int, timeout time.Duration) (int, error) {
	var ok atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(time.Now().Add(timeout))
			req := []byte(fmt.Sprintf("%08d", i))
			got := make([]byte, reply)
			_, err := c.Write(req)
			if err == nil {
				_, err = io.ReadFull(c, got)
			}
			if err == nil {
				for j := range got {
					if got[j] != req[j%8] {
						err = fmt.Errorf("connection %d: wrong reply", i)
						break
					}
				}
			}
			if err != nil {
				first.CompareAndSwap(nil, err)
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	err, _ := first.Load().(error)
	return int(ok.Load()), err
}

// Issue 19 (7): a process in the namespace opening 5,000 TCP connections got 2,048 and
// RSTs for the rest (MaxBuffered was reserved at 128 KiB per SYN). Now all are served,
// held open together, and idle they hold no copy buffer.
func TestManyConnections(t *testing.T) {
	raiseNoFile(t, 20000)
	ns, s := session(t, SessionConfig{})
	srv := echoServer(t, 64)
	start := time.Now()
	conns := nsConnectMany(t, ns, netip.AddrPortFrom(DefaultGateway4, srv.Port()), manyConns)
	n, err := exchangeAll(conns, 64, 90*time.Second)
	if n != manyConns {
		t.Fatalf("%d of %d connections served (%v): %v; stats %+v", n, manyConns, time.Since(start), err, s.Forwarder.Stats())
	}
	t.Logf("%d connections served in %v", n, time.Since(start))
	st := waitStats(t, s, 10*time.Second, "all flows open and idle", func(st Stats) bool {
		return st.TCPFlows == manyConns && st.ConnectsInFlight == 0 && st.BufferedBytes == 0
	})
	// A burst of 5,000 to one destination overflows its backlog (MaxConnectBacklog, as
	// somaxconn a listener's): those SYNs are retransmitted a second later and served.
	if st.TCPFlowLimitDrops != 0 {
		t.Errorf("SYNs dropped over MaxTCPFlows: %+v", st)
	}
	t.Logf("%+v", st)
	for _, c := range conns {
		c.Close()
	}
	waitStats(t, s, 30*time.Second, "flows ended", func(st Stats) bool { return st.TCPFlows == 0 })
}

// blackhole is a host listener that never accepts and whose accept queue is full: the
// SYNs of further connects are dropped (tcp_conn_request), the connects hang.
func blackhole(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the accept queue (a backlog of 0 holds one connection).
	c, err := net.DialTimeout("tcp4", ap.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d := net.Dialer{Timeout: 300 * time.Millisecond}
	if c, err := d.Dial("tcp4", ap.String()); err == nil {
		c.Close()
		t.Fatal("the blackhole listener accepted a second connection")
	}
	return ap
}

// Issue 19 (7): after 5,000 half-open SYNs from the namespace to an unresponsive host
// port, the namespace's next connection (to another port) got through only after 65 s.
// Now the unresponsive destination holds MaxConnectsPerDest connects and its backlog,
// and other destinations connect at once.
func TestHalfOpenFlood(t *testing.T) {
	raiseNoFile(t, 20000)
	ns, s := session(t, SessionConfig{})
	black := blackhole(t)
	hp := httpServer(t, "127.0.0.1:0")
	flood := nsConnectMany(t, ns, netip.AddrPortFrom(DefaultGateway4, black.Port()), halfOpen)
	// Every flood SYN has reached the forwarder: connecting, waiting, or over the backlog.
	cfg := s.Forwarder.Config()
	st := waitStats(t, s, 20*time.Second, "the flood taken in", func(st Stats) bool {
		return st.ConnectsInFlight+st.ConnectsWaiting+int64(st.ConnectBacklogDrops) >= halfOpen
	})
	if st.ConnectsInFlight > int64(cfg.MaxConnectsPerDest) || st.ConnectsWaiting > int64(cfg.MaxConnectBacklog) {
		t.Errorf("over the limits: %+v", st)
	}
	c := nsClient(ns)
	c.Timeout = 10 * time.Second
	for i := range 3 {
		start := time.Now()
		resp, err := c.Get(fmt.Sprintf("http://10.0.2.2:%d/hello", hp.Port()))
		if err != nil {
			t.Fatalf("request %d during the flood: %v after %v; stats %+v", i, err, time.Since(start), s.Forwarder.Stats())
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// A connection through the forwarder takes a few milliseconds; retransmitting
		// a dropped SYN would take a second.
		d := time.Since(start)
		if d > 900*time.Millisecond {
			t.Errorf("request %d during the flood took %v", i, d)
		}
		t.Logf("request %d during the flood: %v", i, d)
	}
	t.Logf("during the flood: %+v", s.Forwarder.Stats())
	for _, c := range flood {
		c.Close()
	}
}

// Issue 19 (7): UDP flows and echo sessions each held a 64 KiB buffer for life, echo
// sessions were unlimited, and a full UDP table refused new flows for 30 s. Now a flood
// of UDP flows and echo identifiers from the namespace stays within MaxUDPFlows and
// MaxEchoSessions, the heap stays bounded, and a new flow works during the flood.
func TestUDPAndPingFlood(t *testing.T) {
	raiseNoFile(t, 20000)
	ns, s := session(t, SessionConfig{Forward: Config{MaxUDPFlows: floodMaxUDP, MaxEchoSessions: floodMaxEcho}})
	echo := udpEcho(t, "udp4", "127.0.0.1:0")
	base := heapInuse()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	err := ns.Do(func() error {
		u, err := net.ListenPacket("udp4", "10.0.2.100:0")
		if err != nil {
			return err
		}
		defer u.Close()
		p, err := icmp.ListenPacket("ip4:icmp", "10.0.2.100")
		if err != nil {
			return err
		}
		defer p.Close()
		pp := &pacer{done: func() uint64 { st := s.Forwarder.Stats(); return st.PingsForwarded + st.PingsFailed }}
		for i := range pingFloodN {
			m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: i + 1, Seq: 1, Data: make([]byte, 56)}}
			b, _ := m.Marshal(nil)
			p.WriteTo(b, &net.IPAddr{IP: net.IPv4(10, 0, 2, 2)})
			pp.pace(i)
		}
		msg := make([]byte, 512)
		up := &pacer{done: func() uint64 { return s.Forwarder.Stats().UDPOutbound }}
		for i := range udpFloodN {
			// Distinct host ports, all closed but the echo's: each datagram a new flow.
			port := 20000 + i%40000
			if port == int(echo.LocalAddr().(*net.UDPAddr).Port) {
				continue
			}
			u.WriteTo(msg, &net.UDPAddr{IP: net.IPv4(10, 0, 2, 2), Port: port})
			up.pace(i)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.Forwarder.Config()
	// The flood is over when the forwarder's counters stop moving (the namespace's device
	// queue drops some of it).
	var last Stats
	still := time.Now()
	st := waitStats(t, s, 60*time.Second, "the flood taken in", func(st Stats) bool {
		if st.UDPOutbound != last.UDPOutbound || st.PingsForwarded != last.PingsForwarded {
			last, still = st, time.Now()
		}
		return time.Since(still) > 500*time.Millisecond
	})
	if st.UDPOutbound <= uint64(cfg.MaxUDPFlows) || st.PingsForwarded <= uint64(cfg.MaxEchoSessions) {
		t.Fatalf("the flood did not fill the tables: %+v", st)
	}
	// A new flow during the flood: the table is full, an idle flow makes room.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uc, err := ns.Dial(ctx, "udp", fmt.Sprintf("10.0.2.2:%d", echo.LocalAddr().(*net.UDPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if got, err := exchange(t, uc, "legit"); err != nil || got != "echo legit" {
		t.Errorf("a new UDP flow with the table full: %q, %v; stats %+v", got, err, s.Forwarder.Stats())
	}
	close(stop)
	<-sampled
	st = s.Forwarder.Stats()
	if st.UDPFlows > int64(cfg.MaxUDPFlows) || st.UDPEvicted == 0 {
		t.Errorf("UDP flows %d (limit %d), %d evicted", st.UDPFlows, cfg.MaxUDPFlows, st.UDPEvicted)
	}
	if st.EchoSessions > int64(cfg.MaxEchoSessions) || st.EchoEvicted == 0 {
		t.Errorf("echo sessions %d (limit %d), %d evicted", st.EchoSessions, cfg.MaxEchoSessions, st.EchoEvicted)
	}
	// Before: 64 KiB per UDP flow (4,096: 256 MiB) and per echo session (unlimited).
	// What the tables hold, all flows still open (the peak also counts garbage the
	// collector has not yet taken back: logged only).
	live := int64(heapInuse()) - int64(base)
	t.Logf("heap in use: %d KiB more with the tables full, peak %d KiB more; %+v", live>>10, (int64(peak.Load())-int64(base))>>10, st)
	if limit := int64(40 << 20); live > limit {
		t.Errorf("heap in use grew by %d MiB with the tables full, want at most %d", live>>20, limit>>20)
	}
	// The host's last ICMP errors may still be on their way in; then nothing is held.
	waitStats(t, s, 5*time.Second, "no buffers in use after the flood", func(st Stats) bool { return st.BufferedBytes == 0 })
}

// Issue 19 (7): an idle TCP flow held a pooled 64 KiB buffer (blocked in the namespace
// connection's Read) and a 256 KiB send buffer (tcp.Conn.ReadFrom's reservation), 2 x 64
// KiB counted against MaxBuffered. Now flows that have carried a request and an answer
// and sit idle hold no copy buffer and little memory.
func TestIdleFlowsHoldNoBuffers(t *testing.T) {
	raiseNoFile(t, 20000)
	ns, s := session(t, SessionConfig{})
	srv := echoServer(t, 2048)
	base := heapInuse()
	conns := nsConnectMany(t, ns, netip.AddrPortFrom(DefaultGateway4, srv.Port()), idleConns)
	if n, err := exchangeAll(conns, 2048, 60*time.Second); n != idleConns {
		t.Fatalf("%d of %d connections served: %v", n, idleConns, err)
	}
	st := waitStats(t, s, 10*time.Second, "flows idle", func(st Stats) bool {
		return st.TCPFlows == idleConns && st.ConnectsInFlight == 0
	})
	if st.BufferedBytes != 0 {
		t.Errorf("%d idle flows hold %d bytes of copy buffers", idleConns, st.BufferedBytes)
	}
	perFlow := (int64(heapInuse()) - int64(base)) / idleConns
	t.Logf("heap in use per idle flow (both ends of the test included): %d bytes", perFlow)
	if perFlow > 48<<10 {
		t.Errorf("heap in use per idle flow: %d KiB, want at most 48", perFlow>>10)
	}
	for _, c := range conns {
		c.Close()
	}
	waitStats(t, s, 30*time.Second, "flows ended", func(st Stats) bool { return st.TCPFlows == 0 })
}
