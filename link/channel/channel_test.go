package channel_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/channel"
)

// wire moves every packet one endpoint's stack writes into the other endpoint, as an
// application carrying packets in its own way would, until ctx ends.
func wire(ctx context.Context, from, to *channel.Endpoint) {
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, from.MTU())
	}
	sizes := make([]int, len(bufs))
	pkts := make([][]byte, 0, len(bufs))
	for {
		n, err := from.ReadPackets(ctx, bufs, sizes)
		if err != nil {
			return
		}
		pkts = pkts[:0]
		for i := range n {
			pkts = append(pkts, bufs[i][:sizes[i]])
		}
		to.InjectPackets(pkts)
	}
}

// twoStacks joins two stacks by channel endpoints and goroutines of the test's own.
func twoStacks(t *testing.T) (a, b *berth.Stack, ea, eb *channel.Endpoint) {
	t.Helper()
	ea, eb = channel.New(channel.Config{MTU: 1400}), channel.New(channel.Config{MTU: 1400})
	a, b = berth.New(), berth.New()
	for _, x := range []struct {
		s  *berth.Stack
		ep *channel.Endpoint
		p  string
	}{{a, ea, "192.168.7.1/24"}, {b, eb, "192.168.7.2/24"}} {
		if err := x.s.AddInterface("ch0", x.ep); err != nil {
			t.Fatal(err)
		}
		if err := x.s.AddAddress("ch0", netip.MustParsePrefix(x.p)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { wire(ctx, ea, eb); done <- struct{}{} }()
	go func() { wire(ctx, eb, ea); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		a.Close()
		b.Close()
	})
	return a, b, ea, eb
}

func TestTCPOverChannel(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > base {
			t.Errorf("goroutines: %d after close, %d before", n, base)
		}
	})
	a, b, ea, eb := twoStacks(t)
	ctx := context.Background()
	l, err := a.Listen(ctx, "tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write(data)
		c.Close()
	}()
	c, err := b.DialContext(ctx, "tcp", "192.168.7.1:80")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v; want the 1 MiB sent", len(got), err)
	}
	if _, err := b.Ping(ctx, netip.MustParseAddr("192.168.7.1"), 1, []byte("hi")); err != nil {
		t.Errorf("ping over channel: %v", err)
	}
	sa, sb := ea.Stats(), eb.Stats()
	if sa.OutPackets == 0 || sb.InPackets == 0 || sa.InBytes == 0 {
		t.Errorf("stats a %+v, b %+v", sa, sb)
	}
}

// Before AddInterface an injected packet is refused with an error, never dropped silently.
func TestInjectBeforeAttach(t *testing.T) {
	ep := channel.New(channel.Config{MTU: 1500})
	if err := ep.InjectPackets([][]byte{make([]byte, 40)}); !errors.Is(err, channel.ErrNotAttached) {
		t.Fatalf("InjectPackets before attach: %v, want ErrNotAttached", err)
	}
	var got int
	ep.Attach(link.DispatcherFunc(func(p [][]byte) { got += len(p) }))
	if err := ep.InjectPackets([][]byte{make([]byte, 40), make([]byte, 40)}); err != nil || got != 2 {
		t.Fatalf("InjectPackets after attach: %v, %d delivered", err, got)
	}
	if err := ep.InjectPackets([][]byte{make([]byte, 40), make([]byte, 1501), make([]byte, 40)}); !errors.Is(err, syscall.EMSGSIZE) || got != 3 {
		t.Errorf("oversized packet: %v, %d delivered; want EMSGSIZE after the first", err, got)
	}
	ep.Attach(nil)
	if err := ep.InjectPackets([][]byte{make([]byte, 40)}); !errors.Is(err, channel.ErrNotAttached) {
		t.Errorf("after detach: %v", err)
	}
	ep.Close()
	if err := ep.InjectPackets([][]byte{make([]byte, 40)}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("after close: %v", err)
	}
}

func TestReadPackets(t *testing.T) {
	ep := channel.New(channel.Config{MTU: 1500, QueuePackets: 4})
	// A context ends a blocked read.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	bufs := [][]byte{make([]byte, 1500), make([]byte, 1500)}
	sizes := make([]int, 2)
	if _, err := ep.ReadPackets(ctx, bufs, sizes); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadPackets on an empty queue: %v", err)
	}
	// The queue keeps order, bounds itself, and counts what it drops.
	var pkts [][]byte
	for i := range 6 {
		pkts = append(pkts, bytes.Repeat([]byte{byte(i)}, 10+i))
	}
	if n, err := ep.WritePackets(pkts); n != 6 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	if n, err := ep.WritePackets([][]byte{make([]byte, 1501)}); n != 0 || !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("WritePackets(too big) = %d, %v", n, err)
	}
	var seen []int
	for len(seen) < 4 {
		n, err := ep.ReadPackets(context.Background(), bufs, sizes)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if sizes[i] != 10+int(bufs[i][0]) {
				t.Fatalf("packet %d has %d bytes", bufs[i][0], sizes[i])
			}
			seen = append(seen, int(bufs[i][0]))
		}
	}
	if want := []int{0, 1, 2, 3}; !equal(seen, want) {
		t.Errorf("order %v, want %v", seen, want)
	}
	if s := ep.Stats(); s.DropQueueFull != 2 || s.OutPackets != 4 || s.DropTooBig != 1 {
		t.Errorf("stats %+v, want 4 out, 2 dropped full, 1 too big", s)
	}
	// A buffer too small for the next packet: the packet stays queued.
	ep.WritePackets([][]byte{make([]byte, 100)})
	if _, err := ep.ReadPackets(context.Background(), [][]byte{make([]byte, 50)}, sizes); !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("short buffer: %v", err)
	}
	if n, err := ep.ReadPackets(context.Background(), bufs, sizes); n != 1 || err != nil || sizes[0] != 100 {
		t.Errorf("after a short buffer: %d, %v, size %d", n, err, sizes[0])
	}
	// Close wakes a blocked reader.
	errc := make(chan error, 1)
	go func() {
		_, err := ep.ReadPackets(context.Background(), bufs, sizes)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	ep.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadPackets after Close: %v", err)
	}
	if _, err := ep.WritePackets(pkts); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WritePackets after Close: %v", err)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func BenchmarkReadWritePackets(b *testing.B) {
	ep := channel.New(channel.Config{MTU: 1500})
	pkts := [][]byte{make([]byte, 1400), make([]byte, 1400), make([]byte, 1400), make([]byte, 1400)}
	bufs := [][]byte{make([]byte, 1500), make([]byte, 1500), make([]byte, 1500), make([]byte, 1500)}
	sizes := make([]int, 4)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(4 * 1400)
	for b.Loop() {
		ep.WritePackets(pkts)
		ep.ReadPackets(ctx, bufs, sizes)
	}
}

// FuzzInject feeds arbitrary packets to a stack through the endpoint: they are dropped
// or answered, never a panic.
func FuzzInject(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 192, 168, 7, 2, 192, 168, 7, 1})
	f.Add([]byte{0x60, 0, 0, 0, 0, 0, 58, 64})
	s := berth.New()
	defer s.Close()
	ep := channel.New(channel.Config{MTU: 1500})
	if err := s.AddInterface("ch0", ep); err != nil {
		f.Fatal(err)
	}
	s.AddAddress("ch0", netip.MustParsePrefix("192.168.7.1/24"))
	bufs := [][]byte{make([]byte, 1500)}
	sizes := make([]int, 1)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) > 1500 {
			p = p[:1500]
		}
		if err := ep.InjectPackets([][]byte{p}); err != nil {
			t.Fatal(err)
		}
		// Drain the answers (written during InjectPackets) so the queue never fills: a
		// done context makes ReadPackets return what is queued, then ctx's error.
		for {
			if _, err := ep.ReadPackets(done, bufs, sizes); err != nil {
				break
			}
		}
	})
}
