package bench

import (
	"context"
	"io"
	"runtime"
	"slices"
	"testing"
	"time"
)

// The harness must measure what it claims: these tests check that the occupied ports
// really are unavailable to each stack's picker, and that each pair carries TCP and UDP.

func TestPickerHonoursOccupancy(t *testing.T) {
	const low, high = 49152, 49152 + 99 // 100 ports: 99% leaves exactly one
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			occupied := occupiedPorts(low, high, 99)
			connect, err := k.newPicker(low, high, occupied)
			if err != nil {
				t.Fatal(err)
			}
			for range 10 {
				port, release, err := connect()
				if err != nil {
					t.Fatalf("connect with one free port: %v", err)
				}
				if port < low || port > high || slices.Contains(occupied, port) {
					t.Fatalf("picked port %d: outside the range or already bound", port)
				}
				release()
			}
			full, err := k.newPicker(low, high, occupiedPorts(low, high, 100))
			if err != nil {
				t.Fatal(err)
			}
			if port, _, err := full(); err == nil {
				t.Fatalf("connect with every port bound picked %d, want an error", port)
			}
		})
	}
}

func TestPairCarriesTCPAndUDP(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			g0 := runtime.NumGoroutine()
			p, err := k.newPair(1500)
			if err != nil {
				t.Fatal(err)
			}
			testTCP(t, p)
			pc, err := p.ListenPacket(53)
			if err != nil {
				t.Fatal(err)
			}
			uc, err := p.DialUDP(53)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := uc.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := pc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "ping" {
				t.Fatalf("UDP: got %q, %v", buf[:n], err)
			}
			uc.Close()
			pc.Close()
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for runtime.NumGoroutine() > g0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if g := runtime.NumGoroutine(); g > g0 {
				t.Errorf("%d goroutines after Close, %d before", g, g0)
			}
		})
	}
}

func testTCP(t *testing.T, p pair) {
	t.Helper()
	ln, err := p.Listen(9)
	if err != nil {
		t.Fatal(err)
	}
	acc := acceptOne(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.Dial(ctx, 9)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := <-acc
	if !ok {
		t.Fatal("accept failed")
	}
	msg := make([]byte, 100000)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	go func() { c.Write(msg); c.Close() }()
	got, err := io.ReadAll(s)
	if err != nil || !slices.Equal(got, msg) {
		t.Fatalf("TCP: read %d bytes (err %v), want the %d written", len(got), err, len(msg))
	}
	s.Close()
	ln.Close()

}
