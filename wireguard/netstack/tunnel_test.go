package netstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestPingThroughTunnel(t *testing.T) {
	a, b := tunnel(t, berthSide, berthSide, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The first echo waits for the WireGuard handshake.
	rtt, err := a.berth.Ping(ctx, b.addr, 1, []byte("through the tunnel"))
	if err != nil {
		t.Fatalf("ping %v: %v", b.addr, err)
	}
	if rtt <= 0 {
		t.Fatalf("rtt %v", rtt)
	}
	if _, err := b.berth.Ping(ctx, a.addr, 2, nil); err != nil {
		t.Fatalf("ping back %v: %v", a.addr, err)
	}
}

// payload is n deterministic bytes that a reordering, duplication or loss would change.
func payload(n int) []byte {
	p := make([]byte, n)
	var x uint32 = 2463534242
	for i := range p {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
	return p
}

// serveHTTP serves body at / on srv's port 80 inside the tunnel.
func serveHTTP(t *testing.T, srv side, body []byte) {
	t.Helper()
	ln, err := srv.listen(80)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(ln)
	}()
	t.Cleanup(func() {
		hs.Close()
		<-done
	})
}

func fetch(t *testing.T, cl side, url string) []byte {
	t.Helper()
	tr := &http.Transport{DialContext: cl.dial}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return got
}

func checkBody(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("body: %d bytes sha256 %x, want %d bytes sha256 %x", len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

func TestHTTPThroughTunnel(t *testing.T) {
	for _, c := range []struct{ client, server kind }{
		{berthSide, berthSide},
		{berthSide, gvisorSide},
		{gvisorSide, berthSide},
	} {
		t.Run(c.client.String()+"-to-"+c.server.String(), func(t *testing.T) {
			a, b := tunnel(t, c.client, c.server, nil)
			body := payload(1 << 20)
			serveHTTP(t, b, body)
			checkBody(t, fetch(t, a, "http://"+net.JoinHostPort(b.addr.String(), "80")+"/"), body)
		})
	}
}
