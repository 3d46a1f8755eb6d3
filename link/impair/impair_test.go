package impair

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/pipe"
	"github.com/berthnet/berth/wire"
)

// recorder is an inner endpoint that keeps copies of what is written to it.
type recorder struct {
	mu     sync.Mutex
	pkts   [][]byte
	closed bool
}

func (r *recorder) MTU() int                 { return 1500 }
func (r *recorder) Attach(d link.Dispatcher) {}
func (r *recorder) Close() error             { r.closed = true; return nil }
func (r *recorder) WritePackets(p [][]byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range p {
		r.pkts = append(r.pkts, append([]byte(nil), b...))
	}
	return len(p), nil
}
func (r *recorder) got() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.pkts...)
}

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// udpPacket builds a valid IPv4/UDP packet whose payload carries i.
func udpPacket(i int) []byte {
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	b := make([]byte, 20+8+32)
	binary.BigEndian.PutUint32(b[28:], uint32(i))
	u := wire.UDPFields{SrcPort: 1000, DstPort: 2000, Length: 40}
	u.Encode(b[20:])
	wire.SetUDPChecksum(b[20:], src, dst)
	ip := wire.IPv4Fields{TotalLen: len(b), TTL: 64, Protocol: wire.ProtoUDP, Src: src, Dst: dst}
	ip.Encode(b)
	return b
}

func index(p []byte) int { return int(binary.BigEndian.Uint32(p[28:])) }

// run pushes n packets through an impairer on a manual clock, one per millisecond, and
// returns what came out.
func run(t *testing.T, cfg Config, n int) ([][]byte, Stats) {
	t.Helper()
	clk := clock.NewManual(t0)
	cfg.Clock = clk
	rec := &recorder{}
	e := New(rec, cfg)
	for i := 0; i < n; i++ {
		if k, err := e.WritePackets([][]byte{udpPacket(i)}); k != 1 || err != nil {
			t.Fatalf("WritePackets = %d, %v", k, err)
		}
		clk.Advance(time.Millisecond)
	}
	clk.Advance(10 * time.Second)
	if clk.Pending() != 0 {
		t.Fatalf("%d timers still pending after everything was released", clk.Pending())
	}
	return rec.got(), e.Stats()
}

func TestDeterministic(t *testing.T) {
	cfg := Config{Seed: 42, Loss: 0.1, Duplicate: 0.05, Corrupt: 0.05, Reorder: 0.1,
		Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}
	const n = 2000
	out1, st1 := run(t, cfg, n)
	out2, st2 := run(t, cfg, n)
	if st1 != st2 || len(out1) != len(out2) {
		t.Fatalf("same seed, different runs: %+v vs %+v", st1, st2)
	}
	for i := range out1 {
		if !bytes.Equal(out1[i], out2[i]) {
			t.Fatalf("same seed: packet %d differs", i)
		}
	}
	cfg.Seed = 43
	out3, _ := run(t, cfg, n)
	same := len(out3) == len(out1)
	for i := 0; same && i < len(out1); i++ {
		same = bytes.Equal(out1[i], out3[i])
	}
	if same {
		t.Fatal("different seeds gave identical output")
	}

	// The counters add up and the rates are near what was asked (binomial, 2000 draws:
	// these bounds are more than 5 standard deviations wide).
	s := st1
	if s.Packets != n || s.Released != s.Packets-s.Lost+s.Duplicated || uint64(len(out1)) != s.Released {
		t.Fatalf("counters do not add up: %+v, %d out", s, len(out1))
	}
	within := func(name string, got uint64, p float64) {
		want := p * n
		if float64(got) < want*0.5 || float64(got) > want*1.5 {
			t.Errorf("%s = %d, want about %.0f", name, got, want)
		}
	}
	within("Lost", s.Lost, 0.1)
	within("Duplicated", s.Duplicated, 0.9*0.05)
	within("Corrupted", s.Corrupted, 0.9*0.05)
	within("Reordered", s.Reordered, 0.9*0.1)
}

func TestCorruptPastIPHeader(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	b := make([]byte, 20+20+100)
	tf := wire.TCPFields{SrcPort: 1, DstPort: 2, Seq: 3, Flags: 0x10, Window: 100}
	tf.Encode(b[20:])
	wire.SetTCPChecksum(b[20:], src, dst)
	ipf := wire.IPv4Fields{TotalLen: len(b), TTL: 64, Protocol: wire.ProtoTCP, Src: src, Dst: dst}
	ipf.Encode(b)
	orig := append([]byte(nil), b...)

	rec := &recorder{}
	e := New(rec, Config{Seed: 1, Corrupt: 1})
	for i := 0; i < 200; i++ {
		e.WritePackets([][]byte{b})
	}
	if !bytes.Equal(b, orig) {
		t.Fatal("the caller's buffer was modified")
	}
	for i, p := range rec.got() {
		diff := 0
		for j := range p {
			if p[j] != orig[j] {
				if j < 20 {
					t.Fatalf("packet %d: byte %d in the IP header changed", i, j)
				}
				diff += bitsSet(p[j] ^ orig[j])
			}
		}
		if diff != 1 {
			t.Fatalf("packet %d: %d bits flipped, want 1", i, diff)
		}
		ip, err := wire.ParseIPv4(p)
		if err != nil {
			t.Fatalf("packet %d: IP header no longer parses: %v", i, err)
		}
		// A single-bit error always changes the ones'-complement sum (RFC 1071).
		if wire.TCP(ip.Payload()).VerifyChecksum(src, dst) {
			t.Fatalf("packet %d: TCP checksum still verifies", i)
		}
	}
	if s := e.Stats(); s.Corrupted != 200 || s.Released != 200 {
		t.Fatalf("stats %+v", s)
	}
}

func bitsSet(b byte) int {
	n := 0
	for ; b != 0; b &= b - 1 {
		n++
	}
	return n
}

func TestReorder(t *testing.T) {
	out, s := run(t, Config{Seed: 7, Reorder: 0.2, ReorderDelay: 5 * time.Millisecond}, 500)
	if len(out) != 500 || s.Reordered == 0 {
		t.Fatalf("%d out, stats %+v", len(out), s)
	}
	// Each reordered packet is overtaken by exactly the 5 written in the 5 ms it waits,
	// minus those also held back; the in-order ones keep their relative order.
	late := 0
	maxSeen := -1
	for _, p := range out {
		i := index(p)
		if i < maxSeen {
			late++
			if maxSeen-i > 5 {
				t.Fatalf("packet %d overtaken by %d, more than a 5 ms hold allows", i, maxSeen)
			}
		} else {
			maxSeen = i
		}
	}
	if late == 0 || uint64(late) > s.Reordered {
		t.Fatalf("%d packets arrived late, %d reordered", late, s.Reordered)
	}
}

func TestDelayJitterKeepsOrder(t *testing.T) {
	clk := clock.NewManual(t0)
	rec := &recorder{}
	e := New(rec, Config{Seed: 3, Delay: 50 * time.Millisecond, Jitter: 20 * time.Millisecond, Clock: clk})
	for i := 0; i < 100; i++ {
		e.WritePackets([][]byte{udpPacket(i)})
	}
	clk.Advance(29 * time.Millisecond)
	if n := len(rec.got()); n != 0 {
		t.Fatalf("%d packets out before Delay-Jitter", n)
	}
	clk.Advance(41 * time.Millisecond)
	out := rec.got()
	if len(out) != 100 {
		t.Fatalf("%d packets out by Delay+Jitter, want 100", len(out))
	}
	for i, p := range out {
		if index(p) != i {
			t.Fatalf("jitter reordered: position %d holds %d", i, index(p))
		}
	}
	if s := e.Stats(); s.Delayed != 100 {
		t.Fatalf("stats %+v", s)
	}
}

func TestLimitNeverBlocks(t *testing.T) {
	clk := clock.NewManual(t0)
	rec := &recorder{}
	e := New(rec, Config{Delay: time.Second, Limit: 10, Clock: clk})
	batch := make([][]byte, 25)
	for i := range batch {
		batch[i] = udpPacket(i)
	}
	if n, err := e.WritePackets(batch); n != 25 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	clk.Advance(time.Second)
	if s := e.Stats(); s.DropLimit != 15 || len(rec.got()) != 10 {
		t.Fatalf("stats %+v, %d out", s, len(rec.got()))
	}
	big := make([]byte, 1501)
	if n, err := e.WritePackets([][]byte{udpPacket(0), big}); n != 1 || !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("WritePackets(too big) = %d, %v", n, err)
	}
}

func TestCloseStopsTimer(t *testing.T) {
	before := runtime.NumGoroutine()
	rec := &recorder{}
	e := New(rec, Config{Delay: 20 * time.Millisecond}) // real clock
	e.WritePackets([][]byte{udpPacket(1)})
	if err := e.Close(); err != nil || !rec.closed {
		t.Fatalf("Close = %v, inner closed %v", err, rec.closed)
	}
	time.Sleep(60 * time.Millisecond)
	if n := len(rec.got()); n != 0 {
		t.Fatalf("%d packets released after Close", n)
	}
	if _, err := e.WritePackets([][]byte{udpPacket(2)}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Fatalf("goroutines %d -> %d", before, after)
	}
}

// TestInboundOverPipe impairs what a pipe delivers, with the real clock.
func TestInboundOverPipe(t *testing.T) {
	a, b := pipe.New(1500)
	e := New(a, Config{Seed: 9, Inbound: true, Loss: 0.5, Delay: 5 * time.Millisecond})
	defer e.Close()
	var mu sync.Mutex
	got := 0
	done := make(chan struct{})
	e.Attach(link.DispatcherFunc(func(p [][]byte) {
		mu.Lock()
		got += len(p)
		if uint64(got) == e.InboundStats().Released {
			select {
			case done <- struct{}{}:
			default:
			}
		}
		mu.Unlock()
	}))
	for i := 0; i < 200; i++ {
		b.WritePackets([][]byte{udpPacket(i)})
	}
	deadline := time.After(5 * time.Second)
	for {
		s := e.InboundStats()
		mu.Lock()
		g := got
		mu.Unlock()
		if s.Packets == 200 && uint64(g) == s.Released && s.Released == 200-s.Lost {
			if s.Lost < 50 || s.Lost > 150 || e.Stats().Packets != 0 {
				t.Fatalf("inbound %+v outbound %+v", s, e.Stats())
			}
			return
		}
		select {
		case <-deadline:
			t.Fatalf("inbound %+v, %d delivered", s, g)
		case <-done:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func BenchmarkPassThrough(b *testing.B) {
	rec := &countingEndpoint{}
	e := New(rec, Config{Seed: 1, Loss: 0.01, Corrupt: 0.01})
	p := [][]byte{udpPacket(1)}
	b.ReportAllocs()
	for b.Loop() {
		e.WritePackets(p)
	}
}

// BenchmarkDelayed holds every packet ~1 ms. Its clock is a minimal one-timer clock (not
// clock.Manual, whose Advance sorts and allocates), so allocs/op is the impairer's own.
func BenchmarkDelayed(b *testing.B) {
	clk := &benchClock{now: t0}
	rec := &countingEndpoint{}
	e := New(rec, Config{Seed: 1, Delay: time.Millisecond, Jitter: 100 * time.Microsecond, Clock: clk})
	p := [][]byte{udpPacket(1)}
	b.ReportAllocs()
	for b.Loop() {
		e.WritePackets(p)
		clk.advance(100 * time.Microsecond)
	}
	if rec.n == 0 {
		b.Fatal("nothing released")
	}
}

// benchClock supports the single timer an impairer direction uses.
type benchClock struct {
	now  time.Time
	when time.Time
	f    func()
	on   bool
}

func (c *benchClock) Now() time.Time { return c.now }
func (c *benchClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.f = f
	c.Reset(d)
	return c
}
func (c *benchClock) Stop() bool { was := c.on; c.on = false; return was }
func (c *benchClock) Reset(d time.Duration) bool {
	was := c.on
	c.when, c.on = c.now.Add(d), true
	return was
}
func (c *benchClock) advance(d time.Duration) {
	c.now = c.now.Add(d)
	if c.on && !c.when.After(c.now) {
		c.on = false
		c.f()
	}
}

type countingEndpoint struct{ n int }

func (c *countingEndpoint) MTU() int                             { return 1500 }
func (c *countingEndpoint) Attach(link.Dispatcher)               {}
func (c *countingEndpoint) Close() error                         { return nil }
func (c *countingEndpoint) WritePackets(p [][]byte) (int, error) { c.n += len(p); return len(p), nil }
