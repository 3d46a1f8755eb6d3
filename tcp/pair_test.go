package tcp

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/nettest"
)

// transfer sends n pseudo-random bytes from src to dst and checks them by SHA-256.
func transfer(t testing.TB, src, dst *Conn, n int) {
	t.Helper()
	if err := transferErr(src, dst, n); err != nil {
		t.Fatal(err)
	}
}

func transferErr(src, dst *Conn, n int) error {
	want := sha256.New()
	done := make(chan error, 1)
	go func() {
		r := rand.New(rand.NewSource(int64(n)))
		buf := make([]byte, 64<<10)
		left := n
		for left > 0 {
			k := min(left, len(buf))
			r.Read(buf[:k])
			want.Write(buf[:k])
			if _, err := src.Write(buf[:k]); err != nil {
				done <- err
				return
			}
			left -= k
		}
		done <- src.CloseWrite()
	}()
	got := sha256.New()
	m, err := io.CopyBuffer(got, dst, make([]byte, 64<<10))
	if err != nil {
		return fmt.Errorf("read after %d bytes: %v", m, err)
	}
	if err := <-done; err != nil {
		return fmt.Errorf("write: %v", err)
	}
	if m != int64(n) || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		return fmt.Errorf("received %d bytes of %d, digest match %v", m, n, bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
	return nil
}

func TestPairTransfer(t *testing.T) {
	p := newPair(t, 1500, nil, Config{}, nil)
	a, b := p.connect(t)
	defer a.Close()
	defer b.Close()
	n := 16 << 20
	if testing.Short() || raceEnabled {
		n = 2 << 20
	}
	transfer(t, a, b, n)
	transfer(t, b, a, n/4)
}

func TestPairImpaired(t *testing.T) {
	n := 64 << 20
	switch {
	case testing.Short():
		n = 4 << 20
	case raceEnabled:
		n = 8 << 20
	}
	cases := []struct {
		name string
		imp  impairment
	}{
		{"loss1", impairment{loss: 0.01, seed: 1}},
		{"loss5", impairment{loss: 0.05, seed: 2}},
		{"reorder", impairment{reorder: 0.05, seed: 3}},
		{"dup", impairment{dup: 0.05, seed: 4}},
		{"corrupt", impairment{corrupt: 0.02, seed: 5}},
		{"all", impairment{loss: 0.02, reorder: 0.02, dup: 0.02, corrupt: 0.02, seed: 6}},
	}
	for _, tc := range cases {
		// The virtual time of testing/synctest makes retransmission timeouts free.
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newPair(t, 1500, nil, Config{}, nil)
				a, b := p.connect(t)
				defer a.Close()
				defer b.Close()
				p.impair(tc.imp)
				transfer(t, a, b, n)
				transfer(t, b, a, n)
				// Both directions at once: ACKs ride on data, and after timeouts both
				// sides go back at the same time.
				a2, b2 := p.connect(t)
				defer a2.Close()
				defer b2.Close()
				done := make(chan error, 1)
				go func() { done <- transferErr(a2, b2, n/4) }()
				transfer(t, b2, a2, n/4)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				st := &p.pa.Stats
				// Timers (a tail loss probe, a delayed ACK) may still send: read under the lock.
				da, db := p.a.drops(), p.b.drops()
				t.Logf("dropped %d+%d, retransmitted %d+%d, bad checksums %d+%d", da, db,
					st.RetransSegs.Load(), p.pb.Stats.RetransSegs.Load(), st.InErrs.Load(), p.pb.Stats.InErrs.Load())
				if tc.imp.loss > 0 && (da == 0 || st.RetransSegs.Load() == 0) {
					t.Fatal("loss impairment had no effect")
				}
				if tc.imp.corrupt > 0 && st.InErrs.Load()+p.pb.Stats.InErrs.Load() == 0 {
					t.Fatal("corruption went unnoticed")
				}
			})
		})
	}
}

func TestPairNettest(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net_Conn, stop func(), err error) {
		p := newPair(t, 1500, nil, Config{}, nil)
		a, b := p.connect(t)
		return wrapConn(a), wrapConn(b), func() { a.Close(); b.Close() }, nil
	})
}

func TestPairRefusedAndReset(t *testing.T) {
	p := newPair(t, 1500, nil, Config{}, nil)
	_, err := p.pa.Dial(t.Context(), netip.AddrPort{}, netip.AddrPortFrom(addrB, 9), DialOptions{})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial closed port: %v", err)
	}
	a, b := p.connect(t)
	b.Write([]byte("unread"))
	time.Sleep(10 * time.Millisecond)
	a.Close() // unread data: RST
	buf := make([]byte, 10)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := b.Read(buf)
		if errors.Is(err, syscall.ECONNRESET) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read: %v, want ECONNRESET", err)
		}
	}
}

func TestPairManyConnections(t *testing.T) {
	n := 10000
	if testing.Short() || raceEnabled {
		n = 1000
	}
	g0 := runtime.NumGoroutine()
	p := newPair(t, 1500, nil, Config{TimeWait: time.Millisecond}, nil)
	l, err := p.pb.Listen(netip.AddrPortFrom(addrB, 7), 0, portsOpts())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept(t.Context())
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			c, err := p.pa.Dial(t.Context(), netip.AddrPort{}, l.Addr(), DialOptions{})
			if err != nil {
				errc <- err
				return
			}
			msg := []byte("hello, echo")
			c.Write(msg)
			c.CloseWrite()
			got, err := io.ReadAll(c)
			c.Close()
			if err == nil && !bytes.Equal(got, msg) {
				err = errors.New("echo mismatch")
			}
			errc <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	deadline := time.Now().Add(10 * time.Second)
	for p.pa.NumSockets()+p.pb.NumSockets() > 0 || runtime.NumGoroutine() > g0+2 {
		if time.Now().After(deadline) {
			t.Fatalf("sockets left: %d + %d; goroutines %d (from %d)", p.pa.NumSockets(), p.pb.NumSockets(), runtime.NumGoroutine(), g0)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPairReadFrom: ReadFrom moves a reader's bytes straight into the send buffer, byte
// for byte, also with loss and reordering on the path; it stops at the reader's EOF, and a
// Close from another goroutine ends a ReadFrom blocked on its reader with an error.
func TestPairReadFrom(t *testing.T) {
	n := 16 << 20
	if testing.Short() || raceEnabled {
		n = 4 << 20
	}
	for _, imp := range []*impairment{nil, {loss: 0.02, reorder: 0.02, seed: 7}} {
		t.Run(fmt.Sprint(imp != nil), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newPair(t, 1500, nil, Config{}, nil)
				a, b := p.connect(t)
				defer a.Close()
				defer b.Close()
				if imp != nil {
					p.impair(*imp)
				}
				data := make([]byte, n)
				rand.New(rand.NewSource(int64(n))).Read(data)
				done := make(chan error, 1)
				go func() {
					// A reader that returns odd sizes, so that reads end anywhere in the ring.
					m, err := a.ReadFrom(&oddReader{r: bytes.NewReader(data)})
					if err == nil && m != int64(n) {
						err = fmt.Errorf("ReadFrom moved %d of %d bytes", m, n)
					}
					if err == nil {
						err = a.CloseWrite()
					}
					done <- err
				}()
				got, err := io.ReadAll(b)
				if err != nil {
					t.Fatal(err)
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("received %d bytes of %d; content differs", len(got), n)
				}
			})
		})
	}
	t.Run("close", func(t *testing.T) {
		p := newPair(t, 1500, nil, Config{}, nil)
		a, b := p.connect(t)
		defer b.Close()
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := a.ReadFrom(pr)
			done <- err
		}()
		pw.Write([]byte("first"))
		a.Close()
		go pw.Write([]byte("late")) // read after Close: goes nowhere
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("ReadFrom after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("ReadFrom still blocked after Close")
		}
		pw.Close()
	})
}

// oddReader returns at most 1,000 + a varying number of bytes per Read.
type oddReader struct {
	r io.Reader
	i int
}

func (o *oddReader) Read(p []byte) (int, error) {
	o.i++
	return o.r.Read(p[:min(len(p), 1000+(o.i*7919)%70000)])
}
