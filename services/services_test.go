package services

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/ports"
)

func TestResolve(t *testing.T) {
	got, err := Resolve("echo", "HTTP", "daytime", "echo")
	if err != nil {
		t.Fatal(err)
	}
	want := []Socket{
		{"echo", "tcp", 7}, {"echo", "udp", 7},
		{"http", "tcp", 80},
		{"daytime", "tcp", 13}, {"daytime", "udp", 13},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Resolve = %v, want %v", got, want)
	}
	all, err := Resolve(Names()...)
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprint(all); s != "[echo 7/tcp echo 7/udp discard 9/tcp discard 9/udp daytime 13/tcp daytime 13/udp chargen 19/tcp chargen 19/udp http 80/tcp]" {
		t.Errorf("Resolve(all) = %s", s)
	}
	for _, bad := range []string{"ssh", "ech0", ""} {
		_, err := Resolve("echo", bad)
		if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("Resolve(%q) error = %v, want ErrUnknown naming it", bad, err)
		}
	}
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitGoroutines waits until the goroutine count is back to at most n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var allRandom = map[string]ports.Port{"echo": 0, "discard": 0, "daytime": 0, "chargen": 0, "http": 0}

// TestServeOverNet runs every service over Go's net on 127.0.0.1 with real clients.
func TestServeOverNet(t *testing.T) {
	before := runtime.NumGoroutine()
	var logs lockedBuffer
	clock := time.Date(2026, 11, 26, 5, 30, 0, 0, time.UTC)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := Start(ctx, Config{
		Services: Names(),
		Host:     "127.0.0.1",
		Ports:    allRandom,
		Now:      func() time.Time { return clock },
		Rand:     rand.New(rand.NewPCG(1, 2)),
		Sockets:  func() []string { return []string{"sock-a", "sock-b"} },
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := func(service, network string) string { return srv.Addr(service, network).String() }

	t.Run("echo/tcp", func(t *testing.T) {
		c := dialTCP(t, addr("echo", "tcp"))
		msg := bytes.Repeat([]byte("echo, RFC 862\n"), 20000) // more than a socket buffer
		go func() { c.Write(msg); c.CloseWrite() }()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo: got %d bytes (err %v), want the %d sent", len(got), err, len(msg))
		}
	})
	t.Run("echo/udp", func(t *testing.T) {
		c := dialUDP(t, addr("echo", "udp"))
		for _, msg := range []string{"hello", "", strings.Repeat("x", 1400)} {
			if got := roundTrip(t, c, msg); got != msg {
				t.Fatalf("echo/udp: got %q, want %q", got, msg)
			}
		}
	})
	t.Run("discard/tcp", func(t *testing.T) {
		c := dialTCP(t, addr("discard", "tcp"))
		if _, err := c.Write(bytes.Repeat([]byte{1}, 1<<20)); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		got, err := io.ReadAll(c) // the server closes after our FIN, sending nothing
		if err != nil || len(got) != 0 {
			t.Fatalf("discard sent %d bytes back (err %v)", len(got), err)
		}
	})
	t.Run("discard/udp", func(t *testing.T) {
		c := dialUDP(t, addr("discard", "udp"))
		c.Write([]byte("into the void"))
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.Read(make([]byte, 100)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("discard/udp answered: %d bytes, err %v", n, err)
		}
	})
	want := "Thursday, November 26, 2026 05:30:00-UTC\r\n"
	t.Run("daytime/tcp", func(t *testing.T) {
		c := dialTCP(t, addr("daytime", "tcp"))
		got, err := io.ReadAll(c) // one line, then the server closes
		if err != nil || string(got) != want {
			t.Fatalf("daytime = %q (err %v), want %q", got, err, want)
		}
	})
	t.Run("daytime/udp", func(t *testing.T) {
		c := dialUDP(t, addr("daytime", "udp"))
		if got := roundTrip(t, c, "what time is it?"); got != want {
			t.Fatalf("daytime/udp = %q, want %q", got, want)
		}
	})
	t.Run("chargen/tcp", func(t *testing.T) {
		c := dialTCP(t, addr("chargen", "tcp"))
		c.Write([]byte("thrown away"))
		b := make([]byte, 3*ChargenPeriod+123)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		checkChargen(t, b)
	})
	t.Run("chargen/tcp-abort", func(t *testing.T) {
		// RFC 864: "prepared for either the carfull close or the rude abort".
		c := dialTCP(t, addr("chargen", "tcp"))
		io.ReadFull(c, make([]byte, 1000))
		c.SetLinger(0) // Close sends RST
		c.Close()
	})
	t.Run("chargen/udp", func(t *testing.T) {
		c := dialUDP(t, addr("chargen", "udp"))
		lengths := rand.New(rand.NewPCG(1, 2)) // the server's source, replayed
		seen := map[int]bool{}
		for i := range 30 {
			got := roundTrip(t, c, "any")
			wantLen := lengths.IntN(ChargenMaxDatagram + 1)
			if len(got) != wantLen {
				t.Fatalf("datagram %d: %d characters, want %d from the seeded source", i, len(got), wantLen)
			}
			checkChargen(t, []byte(got))
			seen[len(got)] = true
		}
		if len(seen) < 10 {
			t.Errorf("only %d distinct lengths in 30 answers", len(seen))
		}
	})
	t.Run("http", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		base := "http://" + addr("http", "tcp")
		resp, err := client.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(page), "sock-a\n") || !strings.Contains(string(page), "sock-b\n") {
			t.Errorf("GET / = %q: want the sockets from the callback", page)
		}
		const n = 5<<20 + 1
		resp, err = client.Get(fmt.Sprintf("%s/bytes/%d", base, n))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		got, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || got != n || resp.ContentLength != n {
			t.Fatalf("/bytes/%d: read %d (err %v), Content-Length %d", n, got, err, resp.ContentLength)
		}
		if want := patternSHA256(n); !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatal("/bytes: SHA-256 differs from the pattern's")
		}
	})
	t.Run("http/curl", func(t *testing.T) {
		curl, err := exec.LookPath("curl")
		testenv.NeedCommand(t, "curl", err)
		const n = 3<<20 + 5
		out, err := exec.Command(curl, "-sS", "--fail", fmt.Sprintf("http://%s/bytes/%d", addr("http", "tcp"), n)).Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		want := patternSHA256(n)
		if got := sha256.Sum256(out); got != want {
			t.Fatalf("curl got %d bytes, SHA-256 %s, want %s", len(out), hex.EncodeToString(got[:]), hex.EncodeToString(want[:]))
		}
	})

	// A connection left open is closed by the shutdown.
	idle := dialTCP(t, addr("echo", "tcp"))
	idle.Write([]byte("x"))
	io.ReadFull(idle, make([]byte, 1))

	cancel()
	if err := srv.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("open echo connection after shutdown: read %d, %v; want EOF", n, err)
	}
	idle.Close()
	if err := srv.Close(); err != nil { // idempotent
		t.Errorf("Close after Wait: %v", err)
	}
	waitGoroutines(t, before)

	log := logs.String()
	for _, sock := range srv.Sockets() {
		for _, msg := range []string{"service started", "service stopped"} {
			line := fmt.Sprintf("msg=%q service=%s network=%s addr=%s", msg, sock.Service, sock.Network, srv.Addr(sock.Service, sock.Network))
			if strings.Count(log, line) != 1 {
				t.Errorf("log: want one %q line, log:\n%s", line, log)
			}
		}
	}
	if n := strings.Count(log, "\n"); n != 2*len(srv.Sockets()) {
		t.Errorf("log has %d lines, want %d (start and stop per socket):\n%s", n, 2*len(srv.Sockets()), log)
	}
}

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func dialUDP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and returns the answer (loopback does not lose datagrams).
func roundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 65536)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

// TestStartFailureClosesOpened: when one socket cannot be opened, Start closes the others.
func TestStartFailureClosesOpened(t *testing.T) {
	before := runtime.NumGoroutine()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := ports.Port(busy.Addr().(*net.TCPAddr).Port)

	var opened []io.Closer
	var pcs []net.PacketConn
	_, err = Start(context.Background(), Config{
		Services: []string{"echo", "http"},
		Host:     "127.0.0.1",
		Ports:    map[string]ports.Port{"echo": 0, "http": busyPort},
		Listen: func(network, addr string) (net.Listener, error) {
			ln, err := net.Listen(network, addr)
			if err == nil {
				opened = append(opened, ln)
			}
			return ln, err
		},
		ListenPacket: func(network, addr string) (net.PacketConn, error) {
			pc, err := net.ListenPacket(network, addr)
			if err == nil {
				pcs = append(pcs, pc)
			}
			return pc, err
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err == nil || !strings.Contains(err.Error(), "http 80/tcp") {
		t.Fatalf("Start with a busy port: err %v, want one naming http 80/tcp", err)
	}
	if len(opened) != 1 || len(pcs) != 1 {
		t.Fatalf("opened %d listeners and %d packet conns, want 1 and 1", len(opened), len(pcs))
	}
	if _, err := opened[0].(net.Listener).Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("echo/tcp listener not closed: Accept err %v", err)
	}
	if _, _, err := pcs[0].ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("echo/udp socket not closed: ReadFrom err %v", err)
	}
	waitGoroutines(t, before)
}

// TestServeReportsServiceError: a listener that fails for good is logged and returned.
func TestServeReportsServiceError(t *testing.T) {
	var logs lockedBuffer
	boom := errors.New("listener broke")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{
			Services: []string{"discard"},
			Listen: func(string, string) (net.Listener, error) {
				return failingListener{err: boom}, nil
			},
			ListenPacket: func(network, addr string) (net.PacketConn, error) {
				return net.ListenPacket(network, "127.0.0.1:0")
			},
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
	}()
	time.Sleep(100 * time.Millisecond) // the UDP side keeps running after the TCP error
	select {
	case err := <-done:
		t.Fatalf("Serve returned before its context ended: %v", err)
	default:
	}
	cancel()
	err := <-done
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "discard 9/tcp") {
		t.Errorf("Serve = %v, want the listener's error for discard 9/tcp", err)
	}
	if !strings.Contains(logs.String(), `msg="service error" service=discard network=tcp`) {
		t.Errorf("no service error line in the log:\n%s", logs.String())
	}
}

type failingListener struct{ err error }

func (l failingListener) Accept() (net.Conn, error) { return nil, l.err }
func (l failingListener) Close() error              { return nil }
func (l failingListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9} }
