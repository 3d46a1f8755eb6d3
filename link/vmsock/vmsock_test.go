//go:build linux

package vmsock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/link"
)

// socketPair returns the two ends of a connected UNIX stream socket as net.Conns.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c
	}
	return cs[0], cs[1]
}

// frame is a test frame of n bytes: an Ethernet header with EtherType 0x88b5 (IEEE local
// experimental), then seq and a pattern, so a frame cut, merged or reordered shows.
func frame(seq uint32, n int) []byte {
	f := make([]byte, n)
	binary.BigEndian.PutUint16(f[12:], 0x88b5)
	if n >= 18 {
		binary.BigEndian.PutUint32(f[14:], seq)
	}
	for i := 18; i < n; i++ {
		f[i] = byte(seq) + byte(i)
	}
	return f
}

// collector keeps copies of the frames delivered to it.
type collector struct {
	mu     sync.Mutex
	frames [][]byte
	more   chan struct{}
}

func newCollector() *collector { return &collector{more: make(chan struct{}, 1)} }

func (c *collector) DeliverPackets(fs [][]byte) {
	c.mu.Lock()
	for _, f := range fs {
		c.frames = append(c.frames, append([]byte(nil), f...))
	}
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

// wait returns the first n frames, failing after 5 s.
func (c *collector) wait(t testing.TB, n int) [][]byte {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		if len(c.frames) >= n {
			fs := c.frames[:n]
			c.mu.Unlock()
			return fs
		}
		got := len(c.frames)
		c.mu.Unlock()
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("%d of %d frames arrived", got, n)
		}
	}
}

// checkGoroutines fails when the goroutine count does not come back to before.
func checkGoroutines(t testing.TB, before int) {
	t.Helper()
	for i := 0; runtime.NumGoroutine() > before; i++ {
		if i == 200 {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines %d -> %d\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamPair: two endpoints on the ends of one socket carry frames of every size
// from 14 bytes to MTU+14, both ways at once, whole and in order; Close returns the
// goroutines and later writes fail with net.ErrClosed.
func TestStreamPair(t *testing.T) {
	before := runtime.NumGoroutine()
	c1, c2 := socketPair(t)
	const mtu = 9000
	a, err := NewStream(c1, Options{MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewStream(c2, Options{MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	ra, rb := newCollector(), newCollector()
	a.Attach(ra)
	b.Attach(rb)
	var sizes []int
	for n := EthHdrLen; n <= mtu+EthHdrLen; n += 97 {
		sizes = append(sizes, n)
	}
	sizes = append(sizes, mtu+EthHdrLen)
	var wg sync.WaitGroup
	for _, ep := range []*Endpoint{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, n := range sizes {
				if _, err := ep.WritePackets([][]byte{frame(uint32(i), n)}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for _, r := range []*collector{ra, rb} {
		got := r.wait(t, len(sizes))
		for i, n := range sizes {
			if !bytes.Equal(got[i], frame(uint32(i), n)) {
				t.Fatalf("frame %d (%d bytes) arrived as %d bytes, or different", i, n, len(got[i]))
			}
		}
	}
	if s := a.Stats(); s.TxFrames != uint64(len(sizes)) || s.RxFrames != uint64(len(sizes)) || s.TxDropped != 0 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := a.WritePackets([][]byte{make([]byte, mtu+EthHdrLen+vlanTagLen+1)}); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("over-long frame: %v", err)
	}
	if _, err := a.WritePackets([][]byte{make([]byte, 13)}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("runt frame: %v", err)
	}
	a.Close()
	b.Close()
	if _, err := a.WritePackets([][]byte{frame(0, 60)}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if err := a.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	checkGoroutines(t, before)
}

// rawFrames writes frames with the stream framing to w.
func rawFrames(t testing.TB, w io.Writer, fs ...[]byte) {
	t.Helper()
	var b []byte
	for _, f := range fs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestStreamHostile: a peer that sends runts has them skipped and counted; one that sends
// a length field over the largest frame (here 4 GiB - 1) gets its connection closed,
// after the good frames before it were delivered.
func TestStreamHostile(t *testing.T) {
	for _, bad := range []uint32{0xffffffff, 1500 + EthHdrLen + vlanTagLen + 1} {
		before := runtime.NumGoroutine()
		c1, peer := socketPair(t)
		e, err := NewStream(c1, Options{MTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		r := newCollector()
		e.Attach(r)
		rawFrames(t, peer, frame(1, 60), make([]byte, 0), make([]byte, 13), frame(2, 1500+EthHdrLen+vlanTagLen))
		var b [8]byte
		binary.BigEndian.PutUint32(b[:], bad)
		peer.Write(b[:]) // then four bytes that would be its start
		got := r.wait(t, 2)
		if !bytes.Equal(got[0], frame(1, 60)) || !bytes.Equal(got[1], frame(2, 1500+EthHdrLen+vlanTagLen)) {
			t.Fatal("good frames around the runts arrived changed")
		}
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := peer.Read(b[:]); err != io.EOF {
			t.Fatalf("after length %#x the peer read %d, %v; want the connection closed (EOF)", bad, n, err)
		}
		s := e.Stats()
		if s.RxRunt != 2 || s.RxBadLength != 1 || s.RxFrames != 2 || !errors.Is(e.Err(), ErrBadLength) {
			t.Fatalf("stats %+v, err %v", s, e.Err())
		}
		if e.Connected() {
			t.Fatal("still connected")
		}
		// With the peer gone, writes are dropped, not failed.
		if n, err := e.WritePackets([][]byte{frame(3, 60)}); n != 1 || err != nil || e.Stats().TxDropped != 1 {
			t.Fatalf("write without a peer: %d, %v, %+v", n, err, e.Stats())
		}
		peer.Close()
		e.Close()
		checkGoroutines(t, before)
	}
}

// TestStreamSlowReader: a peer that does not read makes writes drop (counted) once the
// bounded buffer is full, never block; when it reads again, what it gets is whole
// frames in order (some missing), never a cut one.
func TestStreamSlowReader(t *testing.T) {
	c1, peer := socketPair(t)
	const mtu = 1500
	e, err := NewStream(c1, Options{MTU: mtu, TxBuffer: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	defer peer.Close()
	const total = 5000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range total {
			f := frame(uint32(i), 100+i%1400)
			if i%2 == 1 {
				// Odd frames as header and packet (link.FrameWriter): a partial write
				// may end in either piece.
				e.WriteFrames([][]byte{f[:EthHdrLen]}, [][]byte{f[EthHdrLen:]})
				continue
			}
			e.WritePackets([][]byte{f})
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("WritePackets blocked on a peer that does not read")
	}
	s := e.Stats()
	if s.TxDropped == 0 || s.TxFrames+s.TxDropped != total {
		t.Fatalf("stats %+v: want drops, every frame accounted", s)
	}
	// Now read everything the endpoint kept: whole frames, increasing sequence numbers.
	peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	all, _ := io.ReadAll(peer) // ends at the deadline
	last := -1
	got := 0
	for len(all) > 0 {
		if len(all) < 4 {
			t.Fatalf("%d stray bytes at the end", len(all))
		}
		n := int(binary.BigEndian.Uint32(all))
		if n > len(all)-4 {
			t.Fatalf("frame %d cut: %d of %d bytes", got, len(all)-4, n)
		}
		f := all[4 : 4+n]
		seq := int(binary.BigEndian.Uint32(f[14:]))
		if seq <= last || !bytes.Equal(f, frame(uint32(seq), 100+seq%1400)) {
			t.Fatalf("frame %d: seq %d after %d, or changed", got, seq, last)
		}
		last, got = seq, got+1
		all = all[4+n:]
	}
	if uint64(got) != s.TxFrames {
		t.Fatalf("read %d frames, endpoint counted %d sent", got, s.TxFrames)
	}
}

// TestListenStream: a listening endpoint serves one connection, then the next after the
// first hangs up (a restarted VM); frames written between connections are dropped.
func TestListenStream(t *testing.T) {
	before := runtime.NumGoroutine()
	path := filepath.Join(t.TempDir(), "vm.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ListenStream(ln, Options{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	r := newCollector()
	e.Attach(r)
	for round := range 2 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		rawFrames(t, c, frame(uint32(round), 100))
		r.wait(t, round+1)
		if !e.Connected() {
			t.Fatal("not connected after a frame arrived")
		}
		e.WritePackets([][]byte{frame(7, 200)})
		var hdr [4]byte
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, hdr[:]); err != nil || binary.BigEndian.Uint32(hdr[:]) != 200 {
			t.Fatalf("round %d: %v, length % x", round, err, hdr)
		}
		c.Close()
		for i := 0; e.Connected(); i++ {
			if i == 500 {
				t.Fatal("the hang-up was not noticed")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if s := e.Stats(); s.Conns != 2 || s.RxFrames != 2 || s.TxFrames != 2 {
		t.Fatalf("stats %+v", s)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	checkGoroutines(t, before)
}

// TestDgram: two endpoints on bound datagram sockets, one with its peer given and one
// that learns it from the first datagram; an over-long datagram and a runt are dropped
// and counted.
func TestDgram(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	pa, pb := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	ca, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: pa, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: pb, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	const mtu = 9000
	a, err := NewDgram(ca, &net.UnixAddr{Name: pb, Net: "unixgram"}, Options{MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewDgram(cb, nil, Options{MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	ra, rb := newCollector(), newCollector()
	a.Attach(ra)
	b.Attach(rb)
	// b has no peer yet: its write is dropped.
	b.WritePackets([][]byte{frame(0, 60)})
	if s := b.Stats(); s.TxDropped != 1 {
		t.Fatalf("b stats %+v", s)
	}
	a.WritePackets([][]byte{frame(1, 60), frame(2, mtu+EthHdrLen)})
	got := rb.wait(t, 2)
	if !bytes.Equal(got[0], frame(1, 60)) || !bytes.Equal(got[1], frame(2, mtu+EthHdrLen)) {
		t.Fatal("b received changed frames")
	}
	f3 := frame(3, 1000)
	b.WriteFrames([][]byte{f3[:EthHdrLen]}, [][]byte{f3[EthHdrLen:]}) // to a, learned; joined into one datagram
	if got := ra.wait(t, 1); !bytes.Equal(got[0], frame(3, 1000)) {
		t.Fatal("a received a changed frame")
	}
	// Bad datagrams from a third socket.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: pb, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	c.Write(make([]byte, mtu+EthHdrLen+vlanTagLen+1))
	c.Write(make([]byte, 5))
	c.Close()
	a.WritePackets([][]byte{frame(4, 60)})
	rb.wait(t, 3)
	if s := b.Stats(); s.RxTooLong != 1 || s.RxRunt != 1 || s.RxFrames != 3 {
		t.Fatalf("b stats %+v", s)
	}
	a.Close()
	b.Close()
	checkGoroutines(t, before)
}

// TestWriteAllocs: writing a frame on a stream whose peer keeps up allocates nothing.
func TestWriteAllocs(t *testing.T) {
	c1, peer := socketPair(t)
	e, err := NewStream(c1, Options{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	defer peer.Close()
	go io.Copy(io.Discard, peer)
	batch := [][]byte{frame(1, 1514)}
	if n := testing.AllocsPerRun(1000, func() { e.WritePackets(batch) }); n != 0 {
		t.Fatalf("%v allocations per write", n)
	}
}

// BenchmarkStream: frames of 1514 bytes from one endpoint to another over a socket.
func BenchmarkStream(b *testing.B) {
	c1, c2 := socketPair(b)
	tx, _ := NewStream(c1, Options{MTU: 1500})
	rx, _ := NewStream(c2, Options{MTU: 1500})
	defer tx.Close()
	defer rx.Close()
	rx.Attach(link.DispatcherFunc(func([][]byte) {}))
	batch := [][]byte{frame(1, 1514)}
	b.SetBytes(1514)
	b.ReportAllocs()
	for b.Loop() {
		tx.WritePackets(batch)
	}
	b.ReportMetric(float64(tx.Stats().TxDropped), "drops")
}
