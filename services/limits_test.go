package services

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"
)

func startLimited(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Services = []string{"echo", "chargen", "http"}
	cfg.Host = "127.0.0.1"
	cfg.Ports = allRandom
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// Issue 19 (6): clients that hold connections open without talking (idle keep-alive HTTP
// connections, an idle echo client) or without reading (a chargen or /bytes/N client
// that never reads) no longer hold the service's goroutines and buffers forever.
func TestIdleAndStalledClientsAreDropped(t *testing.T) {
	srv := startLimited(t, Config{IdleTimeout: time.Second, WriteTimeout: time.Second})
	base := runtime.NumGoroutine()
	var conns []net.Conn
	dial := func(service string) net.Conn {
		c, err := net.Dial("tcp", srv.Addr(service, "tcp").String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
		return c
	}
	const n = 20
	for range n {
		dial("echo")    // idle: never sends
		dial("chargen") // never reads
		// One keep-alive request answered, then idle.
		c := dial("http")
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: berth\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// A /bytes stream that is never read.
		io.WriteString(dial("http"), "GET /bytes/1000000000 HTTP/1.1\r\nHost: berth\r\n\r\n")
	}
	if g := runtime.NumGoroutine(); g < base+n {
		t.Fatalf("%d goroutines with %d connections open, base %d: connections not served?", g, len(conns), base)
	}
	// Every connection is still open on the client side; the service ends its side.
	waitGoroutines(t, base)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			// A reset is fine (unread data at close); a timeout means still open.
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection %d still open after the timeouts", i)
			}
		}
	}
}

// A connection that keeps talking is never cut by the idle or write bounds.
func TestActiveClientsAreNotDropped(t *testing.T) {
	srv := startLimited(t, Config{IdleTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", srv.Addr("echo", "tcp").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4)
	end := time.Now().Add(600 * time.Millisecond) // three idle timeouts
	for time.Now().Before(end) {
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q, %v", buf, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// MaxConns: at the limit a service stops accepting; a closed connection frees a slot.
func TestMaxConns(t *testing.T) {
	srv := startLimited(t, Config{MaxConns: 2})
	addr := srv.Addr("echo", "tcp").String()
	echoes := func(c net.Conn, wait time.Duration) bool {
		io.WriteString(c, "x")
		c.SetReadDeadline(time.Now().Add(wait))
		b := make([]byte, 1)
		_, err := io.ReadFull(c, b)
		return err == nil
	}
	var cs []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr) // the kernel's backlog completes the handshake
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	if !echoes(cs[0], 5*time.Second) || !echoes(cs[1], 5*time.Second) {
		t.Fatal("the first two connections are not served")
	}
	if echoes(cs[2], 300*time.Millisecond) {
		t.Fatal("a third connection was served with MaxConns 2")
	}
	cs[0].Close()
	if !echoes(cs[2], 5*time.Second) {
		t.Fatal("the third connection was not served after the first closed")
	}
}
