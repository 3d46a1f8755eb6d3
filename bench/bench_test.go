package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/bench/internal/gv"
)

// pair is two stacks of one kind joined by an in-memory link: a client stack and a server
// stack. Both implementations return the standard library's interfaces, so each workload is
// written once and runs unchanged on either stack.
type pair interface {
	Listen(port uint16) (net.Listener, error)                // TCP, server stack
	Dial(ctx context.Context, port uint16) (net.Conn, error) // TCP, client stack -> server
	ListenPacket(port uint16) (net.PacketConn, error)        // UDP, server stack
	DialUDP(port uint16) (net.Conn, error)                   // UDP, client stack -> server
	Close() error
}

// connectFunc picks and registers a local port for a connection, as connect(2) without
// bind does; release frees it.
type connectFunc func() (port uint16, release func(), err error)

// kind is one stack implementation under comparison.
type kind struct {
	name    string
	newPair func(mtu int) (pair, error)
	// newPicker returns an ephemeral port picker with the given ports of [low, high]
	// already bound: connect() picks and registers a local port, release() frees it.
	newPicker func(low, high uint16, occupied []uint16) (connect connectFunc, err error)
}

// kinds lists the stacks; berth_test.go adds berth (first, so it runs first).
var kinds = []kind{gvisorKind}

var gvisorKind = kind{
	name:    "gvisor",
	newPair: func(mtu int) (pair, error) { return gv.NewPair(mtu) },
	newPicker: func(low, high uint16, occupied []uint16) (connectFunc, error) {
		p, err := gv.NewPortPicker(low, high, gv.ClientAddr, serverAddrPort(), occupied)
		if err != nil {
			return nil, err
		}
		return func() (uint16, func(), error) {
			res, err := p.Connect()
			if err != nil {
				return 0, nil, err
			}
			return res.Port, func() { p.Release(res) }, nil
		}, nil
	},
}

// forKinds runs f as a sub-benchmark "stack=NAME" for each stack.
func forKinds(b *testing.B, f func(b *testing.B, k kind)) {
	for _, k := range kinds {
		b.Run("stack="+k.name, func(b *testing.B) { f(b, k) })
	}
}

func newPair(b *testing.B, k kind, mtu int) pair {
	b.Helper()
	p, err := k.newPair(mtu)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// acceptOne accepts a single connection in the background.
func acceptOne(ln net.Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

// BenchmarkBulk: one TCP stream from the client stack to the server stack. One op is 1 MiB
// written by the application. Figures: Gbit/s of goodput, CPU seconds per GB (process CPU:
// both stacks, sender and receiver), allocations per MB (process-wide, steady state: timing
// starts after 8 MiB of warm-up).
func BenchmarkBulk(b *testing.B) {
	for _, mtu := range []int{1500, 65535} {
		b.Run(fmt.Sprintf("mtu=%d", mtu), func(b *testing.B) {
			forKinds(b, func(b *testing.B, k kind) { benchBulk(b, k, mtu) })
		})
	}
}

func benchBulk(b *testing.B, k kind, mtu int) {
	p := newPair(b, k, mtu)
	defer p.Close()
	ln, err := p.Listen(5001)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	acc := acceptOne(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.Dial(ctx, 5001)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s, ok := <-acc
	if !ok {
		b.Fatal("accept failed")
	}
	defer s.Close()

	measureStream(b, c, s)
}

// measureStream sends b.N MiB from w to r after 8 MiB of warm-up and reports Gbit/s, CPU
// seconds per GB (the whole process) and allocations per MB (the whole process).
func measureStream(b *testing.B, w, r net.Conn) {
	const (
		op    = 1 << 20
		chunk = 64 << 10
		warm  = 8 << 20
	)
	c, s := w, r
	total := int64(b.N) * op
	warmed := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, chunk)
		if _, err := io.ReadFull(s, make([]byte, warm)); err != nil {
			done <- err
			return
		}
		close(warmed)
		n, err := io.CopyBuffer(io.Discard, io.LimitReader(onlyReader{s}, total), buf)
		if err == nil && n != total {
			err = fmt.Errorf("read %d of %d bytes", n, total)
		}
		done <- err
	}()
	buf := make([]byte, chunk)
	for sent := 0; sent < warm; sent += chunk {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-warmed:
	case err := <-done:
		b.Fatalf("warm-up: %v", err)
	}

	b.SetBytes(op)
	b.ReportAllocs()
	cpu0, m0 := cpuTime(), mallocs()
	b.ResetTimer()
	start := time.Now()
	for sent := int64(0); sent < total; sent += chunk {
		if _, err := c.Write(buf[:min(chunk, total-sent)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cpu, m := cpuTime()-cpu0, mallocs()-m0
	b.ReportMetric(float64(total)*8/elapsed.Seconds()/1e9, "Gbit/s")
	b.ReportMetric(cpu.Seconds()/(float64(total)/1e9), "cpu-s/GB")
	b.ReportMetric(float64(m)/(float64(total)/1e6), "allocs/MB")
}

// onlyReader hides WriteTo so that io.CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }

// BenchmarkConnRate: each op is one connection: connect, write 1 byte, read the 1-byte echo,
// close (the client closes first, so TIME-WAIT stays on the client stack as in a real
// client). The server accepts and echoes with a goroutine per connection (the
// application's, not the stack's). Run with a fixed -benchtime Nx: each op holds a 4-tuple
// in TIME-WAIT, and the ephemeral range (16,384 ports on berth) bounds N.
func BenchmarkConnRate(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			forKinds(b, func(b *testing.B, k kind) { benchConnRate(b, k, clients) })
		})
	}
}

func benchConnRate(b *testing.B, k kind, clients int) {
	p := newPair(b, k, 1500)
	defer p.Close()
	ln, err := p.Listen(7)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				var one [1]byte
				if _, err := io.ReadFull(c, one[:]); err != nil {
					return
				}
				if _, err := c.Write(one[:]); err != nil {
					return
				}
				io.Copy(io.Discard, c) // until the client's FIN
			}()
		}
	}()
	defer func() {
		ln.Close()
		wg.Wait()
	}()

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	errc := make(chan error, clients)
	for range clients {
		go func() {
			var one [1]byte
			for next.Add(1) <= int64(b.N) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := p.Dial(ctx, 7)
				cancel()
				if err != nil {
					errc <- err
					return
				}
				if _, err := c.Write([]byte{'x'}); err != nil {
					c.Close()
					errc <- err
					return
				}
				if _, err := io.ReadFull(c, one[:]); err != nil {
					c.Close()
					errc <- err
					return
				}
				if err := c.Close(); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range clients {
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "conns/s")
}

// BenchmarkIdleConns: heap bytes and goroutines per idle established connection, with
// 10,000 connections open between the two stacks. A connection counts both of its ends
// (the client's and the server's socket, both in this process). Measured after a GC; the
// application starts no goroutine per connection, so every goroutine counted is the
// stack's. Run with -benchtime 1x: each op builds and measures the 10,000 connections.
func BenchmarkIdleConns(b *testing.B) {
	forKinds(b, func(b *testing.B, k kind) {
		n := 10000
		if testing.Short() {
			n = 500
		}
		for range b.N {
			benchIdle(b, k, n)
		}
	})
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func benchIdle(b *testing.B, k kind, n int) {
	p := newPair(b, k, 1500)
	defer p.Close()
	ln, err := p.Listen(80)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client := make([]net.Conn, 0, n)
	server := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range client {
			c.Close()
		}
		for _, c := range server {
			c.Close()
		}
	}()
	accepted := make(chan error, 1)
	time.Sleep(10 * time.Millisecond)
	g0, h0 := runtime.NumGoroutine(), heapInUse()
	go func() {
		for len(server) < n {
			c, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			server = append(server, c)
		}
		accepted <- nil
	}()
	// Eight dialers in parallel: setup time is not what is measured.
	const dialers = 8
	var mu sync.Mutex
	errc := make(chan error, dialers)
	var next atomic.Int64
	for range dialers {
		go func() {
			for next.Add(1) <= int64(n) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := p.Dial(ctx, 80)
				cancel()
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				client = append(client, c)
				mu.Unlock()
			}
			errc <- nil
		}()
	}
	for range dialers {
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	if err := <-accepted; err != nil {
		b.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the last ACKs land
	g1, h1 := runtime.NumGoroutine(), heapInUse()
	b.ReportMetric(float64(int64(h1)-int64(h0))/float64(n), "heap-B/conn")
	b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/conn")
}

// BenchmarkUDP: datagrams per second from a connected UDP socket on the client stack to one
// socket on the server stack, with 1 or 10,000 sockets bound on the server (the others
// idle: the figure shows what demultiplexing among many sockets costs). One op is one
// datagram received. The sender keeps at most 64 datagrams in flight (so neither stack is
// measured dropping packets); a datagram not received within 2 ms counts as lost and the
// sender goes on. loss-% reports them. cpu-ns/dgram is the process's CPU time (both
// stacks, sender and receiver) per datagram received: less sensitive than the wall-clock
// rate to other load on the machine.
func BenchmarkUDP(b *testing.B) {
	for _, size := range []int{64, 1400} {
		for _, sockets := range []int{1, 10000} {
			b.Run(fmt.Sprintf("size=%d/sockets=%d", size, sockets), func(b *testing.B) {
				forKinds(b, func(b *testing.B, k kind) { benchUDP(b, k, size, sockets) })
			})
		}
	}
}

func benchUDP(b *testing.B, k kind, size, sockets int) {
	const (
		port   = 4000
		window = 64
	)
	p := newPair(b, k, 1500)
	defer p.Close()
	var conns []net.PacketConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 1; i < sockets; i++ {
		c, err := p.ListenPacket(uint16(10000 + i))
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	rc, err := p.ListenPacket(port)
	if err != nil {
		b.Fatal(err)
	}
	conns = append(conns, rc)
	sc, err := p.DialUDP(port)
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()

	var recvd atomic.Int64
	progress := make(chan struct{}, 1)
	done := make(chan error, 1)
	// Receive with the stack's allocation-free call where it has one (berth's
	// ReadFromUDPAddrPort, like net.UDPConn's); gonet has only ReadFrom.
	read := func(buf []byte) error { _, _, err := rc.ReadFrom(buf); return err }
	if ap, ok := rc.(interface {
		ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
	}); ok {
		read = func(buf []byte) error { _, _, err := ap.ReadFromUDPAddrPort(buf); return err }
	}
	go func() {
		buf := make([]byte, 2048)
		for n := int64(0); n < int64(b.N); {
			if err := read(buf); err != nil {
				done <- err
				return
			}
			n = recvd.Add(1)
			if n%(window/4) == 0 {
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}
		done <- nil
	}()
	payload := make([]byte, size)
	timer := time.NewTimer(time.Hour)
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	var sent, lostBase int64
	finished := false
	for !finished {
		for sent-lostBase-recvd.Load() >= window {
			timer.Reset(2 * time.Millisecond)
			select {
			case <-progress:
			case <-timer.C:
				if r := recvd.Load(); sent-lostBase-r >= window {
					lostBase = sent - r // outstanding ones count as lost
				}
			case err := <-done:
				done <- err
				finished = true
			}
			if finished {
				break
			}
		}
		if finished || recvd.Load() >= int64(b.N) {
			break
		}
		if _, err := sc.Write(payload); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			b.Fatal(err)
		}
		sent++
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	timer.Stop()
	r := recvd.Load()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(r), "cpu-ns/dgram")
	b.ReportMetric(float64(r)/b.Elapsed().Seconds(), "dgrams/s")
	b.ReportMetric(100*float64(lostBase)/float64(max(sent, 1)), "loss-%")
}

// BenchmarkEphemeral: choosing the local port for connect() with no bind, on the port
// managers alone, with 0%, 90% or 99% of the ephemeral range 49152-65535 in use, in two
// ways:
//   - by=bind: that share of the ports bound (exclusive binds, the same random set on both
//     stacks): no connection may use them;
//   - by=connect: that many earlier connections to the same remote address and port, made
//     by the picker itself and kept open (a client opening many connections to one server).
//
// One op picks and registers a port towards that remote, then releases it. berth:
// ports.Manager.Connect (RFC 6056 Algorithm 4) + Release; gVisor:
// ports.PortManager.PickEphemeralPort (Algorithm 1) with the reserving tester its TCP
// connect uses + ReleasePort. b.Loop runs the setup once per run.
func BenchmarkEphemeral(b *testing.B) {
	const low, high = 49152, 65535
	for _, pct := range []int{0, 90, 99} {
		for _, by := range []string{"bind", "connect"} {
			if pct == 0 && by == "connect" {
				continue // the same as by=bind at 0%
			}
			b.Run(fmt.Sprintf("occupancy=%d%%/by=%s", pct, by), func(b *testing.B) {
				for _, k := range kinds {
					b.Run("stack="+k.name, func(b *testing.B) { benchEphemeral(b, k, low, high, pct, by == "connect") })
				}
			})
		}
	}
}

func benchEphemeral(b *testing.B, k kind, low, high uint16, pct int, byConnect bool) {
	var occupied []uint16
	if !byConnect {
		occupied = occupiedPorts(low, high, pct)
	}
	connect, err := k.newPicker(low, high, occupied)
	if err != nil {
		b.Fatal(err)
	}
	if byConnect {
		n := (int(high-low) + 1) * pct / 100
		for range n {
			if _, _, err := connect(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		_, release, err := connect()
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
}

// serverAddrPort is the remote end used by the ephemeral-port workload.
func serverAddrPort() netip.AddrPort { return netip.AddrPortFrom(gv.ServerAddr, 80) }

// occupiedPorts returns pct% of [low, high], chosen by a fixed seed.
func occupiedPorts(low, high uint16, pct int) []uint16 {
	all := make([]uint16, 0, int(high-low)+1)
	for p := int(low); p <= int(high); p++ {
		all = append(all, uint16(p))
	}
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	return all[:len(all)*pct/100]
}
