package pipe

import (
	"bytes"
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/link"
)

// collector records copies of delivered packets and the size of each batch.
type collector struct {
	mu      sync.Mutex
	pkts    [][]byte
	batches []int
	got     chan struct{}
}

func newCollector() *collector { return &collector{got: make(chan struct{}, 1)} }

func (c *collector) DeliverPackets(pkts [][]byte) {
	c.mu.Lock()
	for _, p := range pkts {
		c.pkts = append(c.pkts, append([]byte(nil), p...))
	}
	c.batches = append(c.batches, len(pkts))
	c.mu.Unlock()
	select {
	case c.got <- struct{}{}:
	default:
	}
}

// wait waits until n packets have arrived.
func (c *collector) wait(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		if len(c.pkts) >= n {
			p := c.pkts
			c.mu.Unlock()
			return p
		}
		c.mu.Unlock()
		select {
		case <-c.got:
		case <-deadline:
			t.Fatalf("timed out waiting for %d packets", n)
		}
	}
}

// checkNoLeak fails if the goroutine count does not return to before.
func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if runtime.NumGoroutine() <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
}

func pkt(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }

func TestDeliveryBothWaysInOrderAndCopied(t *testing.T) {
	a, b := New(1500)
	defer a.Close()
	ca, cb := newCollector(), newCollector()
	a.Attach(ca)
	b.Attach(cb)

	p1, p2 := pkt(100, 1), pkt(1500, 2)
	if n, err := a.WritePackets([][]byte{p1, p2}); n != 2 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	// The pipe must have copied: scribbling on the caller's buffer changes nothing.
	p1[0], p2[0] = 0xff, 0xff
	if _, err := b.WritePackets([][]byte{pkt(60, 3)}); err != nil {
		t.Fatal(err)
	}
	got := cb.wait(t, 2)
	if len(got[0]) != 100 || got[0][0] != 1 || len(got[1]) != 1500 || got[1][0] != 2 {
		t.Fatalf("b got %d bytes [%d], %d bytes [%d]", len(got[0]), got[0][0], len(got[1]), got[1][0])
	}
	if got := ca.wait(t, 1); len(got[0]) != 60 || got[0][0] != 3 {
		t.Fatalf("a got %v", got[0][:4])
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.TxPackets != 2 || sa.TxBytes != 1600 || sb.RxPackets != 2 || sb.RxBytes != 1600 ||
		sb.TxPackets != 1 || sa.RxPackets != 1 {
		t.Fatalf("stats a %+v b %+v", sa, sb)
	}

	// Many packets arrive in the order written.
	const n = 500
	for i := 0; i < n; i++ {
		p := pkt(64, 0)
		p[0], p[1] = byte(i>>8), byte(i)
		if _, err := a.WritePackets([][]byte{p}); err != nil {
			t.Fatal(err)
		}
	}
	got = cb.wait(t, 2+n)[2:]
	for i, p := range got {
		if int(p[0])<<8|int(p[1]) != i {
			t.Fatalf("packet %d arrived as %d", int(p[0])<<8|int(p[1]), i)
		}
	}
}

func TestTooBig(t *testing.T) {
	a, b := New(MaxMTU)
	defer a.Close()
	c := newCollector()
	b.Attach(c)
	if a.MTU() != MaxMTU || b.MTU() != MaxMTU {
		t.Fatalf("MTU = %d, %d", a.MTU(), b.MTU())
	}
	n, err := a.WritePackets([][]byte{pkt(MaxMTU, 7), pkt(MaxMTU+1, 8), pkt(10, 9)})
	if n != 1 || !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("WritePackets = %d, %v; want 1, EMSGSIZE", n, err)
	}
	got := c.wait(t, 1)
	if len(got[0]) != MaxMTU || got[0][MaxMTU-1] != 7 {
		t.Fatalf("got %d bytes", len(got[0]))
	}
	if s := a.Stats(); s.DropTooBig != 1 || s.TxPackets != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBadMTUPanics(t *testing.T) {
	for _, mtu := range []int{0, MinMTU - 1, MaxMTU + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%d) did not panic", mtu)
				}
			}()
			a, _ := New(mtu)
			a.Close()
		}()
	}
}

func TestBeforeAttachDropped(t *testing.T) {
	a, b := New(1500)
	defer a.Close()
	if n, err := a.WritePackets([][]byte{pkt(10, 1), pkt(10, 2)}); n != 2 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	c := newCollector()
	b.Attach(c)
	if _, err := a.WritePackets([][]byte{pkt(10, 3)}); err != nil {
		t.Fatal(err)
	}
	got := c.wait(t, 1)
	time.Sleep(20 * time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pkts) != 1 || got[0][0] != 3 {
		t.Fatalf("got %d packets, first %d; want only the one written after Attach", len(c.pkts), got[0][0])
	}
	if s := a.Stats(); s.DropNotAttached != 2 || s.TxPackets != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// blocker is a Dispatcher that holds the delivery goroutine until released, so the queue
// fills up.
type blocker struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	n       int
	batches []int
}

func (b *blocker) DeliverPackets(pkts [][]byte) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	b.mu.Lock()
	b.n += len(pkts)
	b.batches = append(b.batches, len(pkts))
	b.mu.Unlock()
}

func TestQueueFullDropsWithoutBlocking(t *testing.T) {
	const qp, batch = 100, 16
	a, b := NewConfig(Config{MTU: 1500, QueuePackets: qp, Batch: batch})
	defer a.Close()
	bl := &blocker{entered: make(chan struct{}), release: make(chan struct{})}
	b.Attach(bl)
	// The first packet occupies the delivery goroutine inside DeliverPackets.
	if _, err := a.WritePackets([][]byte{pkt(10, 0)}); err != nil {
		t.Fatal(err)
	}
	<-bl.entered
	// Now the queue takes exactly qp packets; the rest drop. WritePackets must return
	// (a blocked writer would hang the test).
	batchOf := make([][]byte, 50)
	for i := range batchOf {
		batchOf[i] = pkt(100, byte(i))
	}
	for i := 0; i < 4; i++ {
		if n, err := a.WritePackets(batchOf); n != 50 || err != nil {
			t.Fatalf("WritePackets = %d, %v", n, err)
		}
	}
	s := a.Stats()
	if s.TxPackets != 1+qp || s.DropQueueFull != 200-qp {
		t.Fatalf("stats %+v; want %d queued, %d dropped", s, 1+qp, 200-qp)
	}
	close(bl.release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		bl.mu.Lock()
		n := bl.n
		bl.mu.Unlock()
		if n == 1+qp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d, want %d", n, 1+qp)
		}
		time.Sleep(5 * time.Millisecond)
	}
	bl.mu.Lock()
	defer bl.mu.Unlock()
	// The backlog was drained in batches, none larger than the configured batch.
	if len(bl.batches) < 2 || bl.batches[1] != batch {
		t.Fatalf("batches %v; want the backlog in batches of %d", bl.batches, batch)
	}
	for _, n := range bl.batches {
		if n > batch {
			t.Fatalf("batch of %d > %d", n, batch)
		}
	}
}

func TestQueueBytesBound(t *testing.T) {
	a, b := NewConfig(Config{MTU: 1500, QueuePackets: 1000, QueueBytes: 10 * 1500})
	defer a.Close()
	bl := &blocker{entered: make(chan struct{}), release: make(chan struct{})}
	b.Attach(bl)
	a.WritePackets([][]byte{pkt(1, 0)})
	<-bl.entered
	for i := 0; i < 20; i++ {
		a.WritePackets([][]byte{pkt(1500, 1)})
	}
	if s := a.Stats(); s.TxPackets != 11 || s.DropQueueFull != 10 {
		t.Fatalf("stats %+v; want 10 full-size packets queued (+1 in flight), 10 dropped", s)
	}
	close(bl.release)
}

func TestCloseStopsBothAndNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b := New(1500)
	bl := &blocker{entered: make(chan struct{}), release: make(chan struct{})}
	a.Attach(link.DispatcherFunc(func([][]byte) {}))
	b.Attach(bl)
	a.WritePackets([][]byte{pkt(10, 0)})
	<-bl.entered
	a.WritePackets([][]byte{pkt(10, 1), pkt(10, 2)}) // still queued at Close
	go func() {
		time.Sleep(10 * time.Millisecond)
		close(bl.release) // Close waits for the delivery in progress
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close = %v, want net.ErrClosed", err)
	}
	for _, e := range []*Endpoint{a, b} {
		if n, err := e.WritePackets([][]byte{pkt(10, 0)}); n != 0 || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after Close = %d, %v", n, err)
		}
	}
	if s := a.Stats(); s.DropClosed != 2 {
		t.Fatalf("stats %+v; want 2 dropped at close", s)
	}
	checkNoLeak(t, before)
}

func TestSteadyStateNoAllocs(t *testing.T) {
	a, b := New(1500)
	defer a.Close()
	done := make(chan struct{}, 1)
	b.Attach(link.DispatcherFunc(func([][]byte) { done <- struct{}{} }))
	p := [][]byte{pkt(1500, 1)}
	for i := 0; i < 10; i++ { // warm the free lists
		a.WritePackets(p)
		<-done
	}
	allocs := testing.AllocsPerRun(1000, func() {
		a.WritePackets(p)
		<-done
	})
	// AllocsPerRun counts every goroutine's allocations, the delivery goroutine's too.
	if allocs != 0 {
		t.Fatalf("%.2f allocations per packet, want 0", allocs)
	}
}

// BenchmarkPipe measures one-way throughput with full queues: the writer sends batches of
// 32 packets of 1500 bytes, the receiver counts them.
func BenchmarkPipe(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(map[int]string{64: "64B", 1500: "1500B"}[size], func(b *testing.B) {
			x, y := New(1500)
			defer x.Close()
			var mu sync.Mutex
			cond := sync.NewCond(&mu)
			received := 0
			y.Attach(link.DispatcherFunc(func(p [][]byte) {
				mu.Lock()
				received += len(p)
				cond.Signal()
				mu.Unlock()
			}))
			batch := make([][]byte, 32)
			for i := range batch {
				batch[i] = pkt(size, 1)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			sent := 0
			for sent < b.N {
				k := min(len(batch), b.N-sent)
				x.WritePackets(batch[:k])
				sent += k
				// Keep the queue from overflowing: wait while more than 512 are in flight.
				mu.Lock()
				for sent-received-int(x.Stats().DropQueueFull) > 512 {
					cond.Wait()
				}
				mu.Unlock()
			}
			mu.Lock()
			for received+int(x.Stats().DropQueueFull) < sent {
				cond.Wait()
			}
			mu.Unlock()
			b.StopTimer()
			b.ReportMetric(float64(x.Stats().DropQueueFull), "drops")
		})
	}
}

// TestConcurrentWritesAndClose: writers on both ends race each other, Attach/detach and
// Close; -race must stay clean, every write returns, and nothing leaks.
func TestConcurrentWritesAndClose(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b := NewConfig(Config{MTU: 1500, QueuePackets: 64})
	var got sync.Map
	for _, e := range []*Endpoint{a, b} {
		e.Attach(link.DispatcherFunc(func(p [][]byte) {
			for _, q := range p {
				if len(q) != 100 || q[99] != q[0] {
					t.Errorf("torn packet")
				}
			}
			got.Store(e, true)
		}))
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		e := []*Endpoint{a, b}[g%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := pkt(100, byte(g))
			for {
				if _, err := e.WritePackets([][]byte{p, p}); errors.Is(err, net.ErrClosed) {
					return
				} else if err != nil {
					t.Error(err)
					return
				}
				select {
				case <-stop:
				default:
					continue
				}
			}
		}()
	}
	// Let traffic flow both ways before detaching (waiting on what was delivered, not on a
	// fixed sleep: a loaded machine may take a while to schedule the delivery goroutines).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		_, okA := got.Load(a)
		_, okB := got.Load(b)
		if okA && okB || time.Now().After(deadline) {
			break
		}
	}
	b.Attach(nil) // detach while traffic flows
	time.Sleep(10 * time.Millisecond)
	a.Close()
	close(stop)
	wg.Wait()
	if _, ok := got.Load(a); !ok {
		t.Error("nothing delivered to a")
	}
	s := a.Stats()
	if s.TxPackets == 0 || s.DropNotAttached == 0 {
		t.Errorf("stats %+v: want traffic, and drops after the detach", s)
	}
	checkNoLeak(t, before)
}

// TestFrames: a pipe with a link header takes frames up to MTU+HeaderLen, reports the IP
// MTU, and rejects one byte more; the largest frame of the largest MTU fits a buffer class.
func TestFrames(t *testing.T) {
	for _, mtu := range []int{1500, MaxMTU} {
		a, b := NewEthernet(mtu)
		c := newCollector()
		b.Attach(c)
		if a.MTU() != mtu {
			t.Fatalf("MTU = %d, want %d", a.MTU(), mtu)
		}
		n, err := a.WritePackets([][]byte{pkt(mtu+14, 5), pkt(mtu+15, 6)})
		if n != 1 || !errors.Is(err, syscall.EMSGSIZE) {
			t.Fatalf("mtu %d: WritePackets = %d, %v; want 1, EMSGSIZE", mtu, n, err)
		}
		if got := c.wait(t, 1); len(got[0]) != mtu+14 || got[0][mtu+13] != 5 {
			t.Fatalf("mtu %d: got %d bytes", mtu, len(got[0]))
		}
		a.Close()
	}
}
