package tcp

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestWaitRead: WaitRead blocks while nothing is readable, returns once data, the peer's
// FIN or a local Close make a Read return at once, and reads nothing itself.
func TestWaitRead(t *testing.T) {
	p := newPair(t, 1500, nil, Config{}, nil)
	a, b := p.connect(t)
	defer a.Close()
	done := make(chan error, 1)
	go func() { done <- b.WaitRead() }()
	select {
	case err := <-done:
		t.Fatalf("WaitRead returned %v with nothing to read", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitRead after data: %v", err)
	}
	if n := b.Buffered(); n != 5 {
		t.Errorf("Buffered %d, want 5", n)
	}
	buf := make([]byte, 16)
	if n, err := b.Read(buf); n != 5 || err != nil {
		t.Fatalf("Read %d %v", n, err)
	}
	if n := b.Buffered(); n != 0 {
		t.Errorf("Buffered after Read %d, want 0", n)
	}
	a.CloseWrite()
	if err := b.WaitRead(); err != nil {
		t.Fatalf("WaitRead after FIN: %v", err)
	}
	if _, err := b.Read(buf); err != io.EOF {
		t.Fatalf("Read after FIN: %v, want EOF", err)
	}
	b.Close()
	if err := b.WaitRead(); err != net.ErrClosed {
		t.Fatalf("WaitRead after Close: %v, want net.ErrClosed", err)
	}
}

// TestReadFromLenHint: ReadFrom from a reader that reports its length (Len) grows the send
// buffer for that much, not for a whole readFromChunk.
func TestReadFromLenHint(t *testing.T) {
	p := newPair(t, 1500, nil, Config{}, nil)
	a, b := p.connect(t)
	defer a.Close()
	defer b.Close()
	if n, err := a.ReadFrom(bytes.NewReader(make([]byte, 100))); n != 100 || err != nil {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	a.mu.Lock()
	size := len(a.sndBuf.buf)
	a.mu.Unlock()
	if size > 4096 {
		t.Errorf("send buffer %d bytes after 100 from a bytes.Reader, want at most 4096", size)
	}
	buf := make([]byte, 200)
	if n, err := io.ReadFull(b, buf[:100]); n != 100 || err != nil {
		t.Fatalf("Read: %d, %v", n, err)
	}
}
