package berth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/nettest"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link/impair"
	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/tcp"
	"github.com/berthnet/berth/vnet"
)

func tcpStackPair(t testing.TB, opts ...vnet.Option) (a, b *berth.Stack) {
	t.Helper()
	a, b, err := vnet.Pair(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

// tcpConnPair dials from a to a listener on b (at addr) and returns both ends.
func tcpConnPair(t testing.TB, a, b *berth.Stack, network, addr string) (client, server net.Conn, ln net.Listener) {
	return tcpConnPairTo(t, a, b, network, addr, "")
}

// tcpConnPairTo is tcpConnPair dialling dial (the listener's address if empty).
func tcpConnPairTo(t testing.TB, a, b *berth.Stack, network, addr, dial string) (client, server net.Conn, ln net.Listener) {
	t.Helper()
	ctx := context.Background()
	ln, err := b.Listen(ctx, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		ch <- c
	}()
	if dial == "" {
		dial = ln.Addr().String()
	}
	client, err = a.DialContext(ctx, network, dial)
	if err != nil {
		t.Fatal(err)
	}
	server = <-ch
	if server == nil {
		t.FailNow()
	}
	return client, server, ln
}

func TestTCPNettestPipe(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		a, b, err := vnet.Pair()
		if err != nil {
			return nil, nil, nil, err
		}
		c1, c2, ln := tcpConnPair(t, a, b, "tcp", "10.0.0.2:0")
		return c1, c2, func() {
			c1.Close()
			c2.Close()
			ln.Close()
			a.Close()
			b.Close()
		}, nil
	})
}

func TestTCPNettestLoopback(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				s := berth.New()
				c1, c2, ln := tcpConnPair(t, s, s, "tcp", addr)
				return c1, c2, func() {
					c1.Close()
					c2.Close()
					ln.Close()
					s.Close()
				}, nil
			})
		})
	}
}

// checkOpErr asserts err is a *net.OpError with the given fields and message, as package
// net would return it.
func checkOpErr(t *testing.T, err error, op string, wantErr error, msg string) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("%v (%T): want *net.OpError", err, err)
	}
	if oe.Op != op || !errors.Is(err, wantErr) || err.Error() != msg {
		t.Fatalf("got %q (op %q, %#v), want %q", err.Error(), oe.Op, oe.Err, msg)
	}
	var errno syscall.Errno
	if errors.As(wantErr, &errno) {
		var se *os.SyscallError
		if !errors.As(oe.Err, &se) {
			t.Fatalf("%v: errno not wrapped in *os.SyscallError", err)
		}
	}
}

func TestTCPErrors(t *testing.T) {
	s := berth.New()
	defer s.Close()
	ctx := context.Background()

	_, err := s.DialContext(ctx, "tcp", "127.0.0.1:1")
	checkOpErr(t, err, "dial", syscall.ECONNREFUSED, "dial tcp 127.0.0.1:1: connect: connection refused")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = s.DialContext(cctx, "tcp", "127.0.0.1:1")
	checkOpErr(t, err, "dial", context.Canceled, "dial tcp 127.0.0.1:1: operation was canceled")

	_, err = (&berth.Dialer{Stack: s, Timeout: 50 * time.Millisecond}).Dial("tcp", "127.0.0.2:80")
	if err == nil {
		// 127.0.0.2 is local (127/8): refused at once. Use an address nobody answers.
		t.Log("127.0.0.2 answered")
	}

	ln, err := s.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Listen(ctx, "tcp", ln.Addr().String())
	checkOpErr(t, err, "listen", syscall.EADDRINUSE, "listen tcp "+ln.Addr().String()+": bind: address already in use")
	_, err = s.Listen(ctx, "tcp", "192.0.2.1:0")
	checkOpErr(t, err, "listen", syscall.EADDRNOTAVAIL, "listen tcp 192.0.2.1:0: bind: cannot assign requested address")

	// Reset by the peer, then EOF, then EPIPE (as Linux reports them).
	srvc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		srvc <- c
	}()
	c, err := s.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-srvc
	pair := c.LocalAddr().String() + "->" + c.RemoteAddr().String()
	sc.(*berth.TCPConn).SetLinger(0)
	sc.Close()
	buf := make([]byte, 10)
	_, err = c.Read(buf)
	checkOpErr(t, err, "read", syscall.ECONNRESET, "read tcp "+pair+": read: connection reset by peer")
	if _, err = c.Read(buf); err != io.EOF {
		t.Fatalf("second read: %v", err)
	}
	_, err = c.Write(buf)
	checkOpErr(t, err, "write", syscall.EPIPE, "write tcp "+pair+": write: broken pipe")
	c.Close()
	_, err = c.Read(buf)
	checkOpErr(t, err, "read", net.ErrClosed, "read tcp "+pair+": use of closed network connection")
	_, err = c.Write(buf)
	checkOpErr(t, err, "write", net.ErrClosed, "write tcp "+pair+": use of closed network connection")
	err = c.Close()
	checkOpErr(t, err, "close", net.ErrClosed, "close tcp "+pair+": use of closed network connection")
	err = c.SetDeadline(time.Now())
	checkOpErr(t, err, "set", net.ErrClosed, "set tcp "+c.LocalAddr().String()+": use of closed network connection")

	// Deadlines, half-close, EOF.
	go func() {
		c, _ := ln.Accept()
		srvc <- c
	}()
	c, err = s.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc = <-srvc
	pair = c.LocalAddr().String() + "->" + c.RemoteAddr().String()
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err = c.Read(buf)
	checkOpErr(t, err, "read", os.ErrDeadlineExceeded, "read tcp "+pair+": i/o timeout")
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatal("deadline error is not a timeout")
	}
	c.(*berth.TCPConn).CloseWrite()
	_, err = c.Write(buf)
	checkOpErr(t, err, "write", syscall.EPIPE, "write tcp "+pair+": write: broken pipe")
	if err := c.(*berth.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("second CloseWrite: %v", err)
	}
	if _, err := sc.Read(buf); err != io.EOF {
		t.Fatalf("read after peer's FIN: %v", err)
	}
	sc.Write([]byte("after"))
	c.SetReadDeadline(time.Time{})
	if n, err := io.ReadFull(c, buf[:5]); err != nil || string(buf[:n]) != "after" {
		t.Fatalf("half-closed read: %q %v", buf[:n], err)
	}
	c.Close()
	sc.Close()

	ln.(*berth.TCPListener).SetDeadline(time.Now())
	_, err = ln.Accept()
	checkOpErr(t, err, "accept", os.ErrDeadlineExceeded, "accept tcp "+ln.Addr().String()+": i/o timeout")
	ln.Close()
	_, err = ln.Accept()
	checkOpErr(t, err, "accept", net.ErrClosed, "accept tcp "+ln.Addr().String()+": use of closed network connection")
	err = ln.Close()
	checkOpErr(t, err, "close", net.ErrClosed, "close tcp "+ln.Addr().String()+": use of closed network connection")
}

func TestTCPDialTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := tcpStackPair(t, vnet.WithImpairment(impair.Config{Loss: 1}))
		_ = b
		_, err := (&berth.Dialer{Stack: a, Timeout: 3 * time.Second}).Dial("tcp", "10.0.0.2:80")
		checkOpErr(t, err, "dial", context.DeadlineExceeded, "dial tcp 10.0.0.2:80: i/o timeout")
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatal("not a timeout")
		}
	})
}

func TestTCPDialRetriesExhausted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _ := tcpStackPair(t, vnet.WithImpairment(impair.Config{Loss: 1}),
			vnet.WithStackOptions(berth.WithTCPConfig(tcp.Config{SynRetries: 2})))
		start := time.Now()
		_, err := a.DialContext(context.Background(), "tcp", "10.0.0.2:80")
		checkOpErr(t, err, "dial", syscall.ETIMEDOUT, "dial tcp 10.0.0.2:80: connect: connection timed out")
		// SYN at 0, retransmissions at 1 s and 3 s, give up at 7 s.
		if d := time.Since(start); d != 7*time.Second {
			t.Fatalf("gave up after %v", d)
		}
	})
}

func TestTCPEphemeralExhaustion(t *testing.T) {
	s := berth.New(berth.WithTCPConfig(tcp.Config{Ports: ports.Config{LocalPortRange: ports.Range{Low: 50000, High: 50001}}}))
	defer s.Close()
	ln, err := s.Listen(context.Background(), "tcp", "127.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		c, err := s.DialContext(context.Background(), "tcp", "127.0.0.1:7000")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	_, err = s.DialContext(context.Background(), "tcp", "127.0.0.1:7000")
	checkOpErr(t, err, "dial", syscall.EADDRNOTAVAIL, "dial tcp 127.0.0.1:7000: connect: cannot assign requested address")
}

func TestTCPSockets(t *testing.T) {
	a, b := tcpStackPair(t)
	c, sc, ln := tcpConnPairTo(t, a, b, "tcp", ":8080", "10.0.0.2:8080")
	defer ln.Close()
	c.Write([]byte("12345"))
	time.Sleep(50 * time.Millisecond)
	var listen, estab bool
	for _, si := range b.Sockets() {
		if si.Protocol != "tcp" {
			continue
		}
		switch si.State {
		case "LISTEN":
			listen = si.Local.Port() == 8080 && si.TCP != nil
		case "ESTAB":
			estab = si.RecvQ == 5 && si.Remote.Addr().String() == "10.0.0.1" && si.TCP.MSS == 1448 // 1460 less 12 bytes of timestamps (RFC 7323), as Linux reports it
		}
	}
	if !listen || !estab {
		t.Fatalf("sockets: %+v", b.Sockets())
	}
	// A dual-stack listener shows IPv4 peers as IPv4-mapped addresses, as Go does.
	if got := sc.RemoteAddr().(*net.TCPAddr); len(got.IP) != 16 || got.IP.To4() == nil {
		t.Fatalf("remote %v (%d bytes)", got, len(got.IP))
	}
	c.Close()
	sc.Close()
}

// ---- net/http ----

func TestTCPHTTP(t *testing.T) {
	a, b := tcpStackPair(t)
	ln, err := b.Listen(context.Background(), "tcp", "10.0.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	var newConns atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s", r.URL.Path)
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				newConns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	defer srv.Close()
	tr := &http.Transport{DialContext: a.DialContext, MaxIdleConnsPerHost: 100}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func(path string) error {
		resp, err := client.Get("http://10.0.0.2" + path)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if string(body) != "hello "+path {
			return fmt.Errorf("body %q", body)
		}
		return nil
	}
	for i := 0; i < 1000; i++ {
		if err := get(fmt.Sprintf("/seq/%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := newConns.Load(); n != 1 {
		t.Fatalf("1000 keep-alive requests used %d connections", n)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				if err := get(fmt.Sprintf("/c%d/%d", i, j)); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	t.Logf("%d connections for 2000 requests", newConns.Load())
}

// ---- crypto/tls ----

func selfSigned(t testing.TB) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "berth.test"},
		DNSNames:     []string{"berth.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTCPTLS(t *testing.T) {
	a, b := tcpStackPair(t)
	cert := selfSigned(t)
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	ln, err := b.Listen(context.Background(), "tcp", "10.0.0.2:443")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	n := int64(64 << 20)
	if testing.Short() || tcpRace {
		n = 8 << 20
	}
	sum := make(chan []byte, 1)
	go func() {
		c, err := tln.Accept()
		if err != nil {
			t.Error(err)
			sum <- nil
			return
		}
		defer c.Close()
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			t.Error(err)
		}
		sum <- h.Sum(nil)
	}()
	raw, err := a.DialContext(context.Background(), "tcp", "10.0.0.2:443")
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{ServerName: "berth.test", RootCAs: pool})
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(mrand.New(mrand.NewSource(1)), n), h)
	if m, err := io.CopyBuffer(c, src, make([]byte, 256<<10)); err != nil || m != n {
		t.Fatal(m, err)
	}
	c.Close()
	if got := <-sum; !bytes.Equal(got, h.Sum(nil)) {
		t.Fatal("SHA-256 mismatch")
	}
}

// ---- bulk transfers over impaired links ----

// tcpTransfer sends n pseudo-random bytes each way at once and checks them by SHA-256.
func tcpTransfer(t testing.TB, c1, c2 net.Conn, n int64) {
	t.Helper()
	type result struct {
		sent, got []byte
		m         int64
		err       error
	}
	oneWay := func(src, dst net.Conn, seed int64) chan result {
		ch := make(chan result, 1)
		sent := make(chan []byte, 1)
		go func() {
			want := sha256.New()
			r := io.TeeReader(io.LimitReader(mrand.New(mrand.NewSource(seed)), n), want)
			if _, err := io.CopyBuffer(src, r, make([]byte, 128<<10)); err != nil {
				t.Errorf("write: %v", err)
			}
			src.(*berth.TCPConn).CloseWrite()
			sent <- want.Sum(nil)
		}()
		go func() {
			got := sha256.New()
			m, err := io.CopyBuffer(got, dst, make([]byte, 128<<10))
			ch <- result{sent: <-sent, got: got.Sum(nil), m: m, err: err}
		}()
		return ch
	}
	r1, r2 := oneWay(c1, c2, 1), oneWay(c2, c1, 2)
	for _, ch := range []chan result{r1, r2} {
		r := <-ch
		if r.err != nil || r.m != n || !bytes.Equal(r.sent, r.got) {
			t.Fatalf("received %d of %d bytes (%v), digests equal: %v", r.m, n, r.err, bytes.Equal(r.sent, r.got))
		}
	}
}

func TestTCPImpairedTransfer(t *testing.T) {
	n := int64(64 << 20)
	switch {
	case testing.Short():
		n = 4 << 20
	case tcpRace:
		n = 8 << 20
	}
	cases := []struct {
		name string
		imp  impair.Config
	}{
		{"loss1", impair.Config{Loss: 0.01}},
		{"loss5", impair.Config{Loss: 0.05}},
		{"reorder", impair.Config{Reorder: 0.02}},
		{"duplicate", impair.Config{Duplicate: 0.02}},
		{"corrupt", impair.Config{Corrupt: 0.02}},
		{"all", impair.Config{Loss: 0.01, Reorder: 0.01, Duplicate: 0.01, Corrupt: 0.01, Delay: time.Millisecond}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// testing/synctest's virtual time makes timeouts and delays free.
			synctest.Test(t, func(t *testing.T) {
				tc.imp.Seed = int64(i + 1)
				a, b := tcpStackPair(t, vnet.WithImpairment(tc.imp))
				// The handshake may lose segments too; the dial retries by itself.
				c1, c2, ln := tcpConnPair(t, a, b, "tcp", "10.0.0.2:9000")
				defer ln.Close()
				defer c1.Close()
				defer c2.Close()
				tcpTransfer(t, c1, c2, n)
				ta, tb := a.TCP().Stats.RetransSegs.Load(), b.TCP().Stats.RetransSegs.Load()
				bad := a.TCP().Stats.InErrs.Load() + b.TCP().Stats.InErrs.Load()
				t.Logf("retransmitted %d+%d segments, %d bad checksums", ta, tb, bad)
				if tc.imp.Loss > 0 && ta+tb == 0 {
					t.Fatal("no retransmissions over a lossy link")
				}
				if tc.imp.Corrupt > 0 && bad == 0 {
					t.Fatal("no corrupted segment was caught")
				}
			})
		})
	}
}

// ---- many connections ----

func TestTCPManyConnections(t *testing.T) {
	n := 10000
	if testing.Short() || tcpRace {
		n = 1000
	}
	// 10,000 SYNs at once overflow the pipe's queue (1024 packets): some are dropped and
	// retransmitted after the 1 s initial RTO. Virtual time (testing/synctest) makes those
	// waits free. synctest.Test returns only once every goroutine started in the bubble
	// (stacks, links, timers, handlers) has exited, and fails if one is left blocked; the
	// count is checked again outside.
	g0 := runtime.NumGoroutine()
	synctest.Test(t, func(t *testing.T) { manyConnections(t, n) })
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > g0; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, were %d\n%s", runtime.NumGoroutine(), g0, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func manyConnections(t *testing.T, n int) {
	cfg := berth.WithTCPConfig(tcp.Config{TimeWait: time.Second})
	a, b := tcpStackPair(t, vnet.WithStackOptions(cfg))
	ln, err := b.Listen(context.Background(), "tcp", "10.0.0.2:7")
	if err != nil {
		t.Fatal(err)
	}
	var served sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			served.Add(1)
			go func() {
				defer served.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	// All n connections are open at once before any closes.
	var opened, wg sync.WaitGroup
	opened.Add(n)
	release := make(chan struct{})
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, err := a.DialContext(ctx, "tcp", "10.0.0.2:7")
			opened.Done()
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			<-release
			msg := fmt.Appendf(nil, "hello from %v", c.LocalAddr())
			if _, err := c.Write(msg); err != nil {
				errc <- err
				return
			}
			c.(*berth.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err == nil && !bytes.Equal(got, msg) {
				err = fmt.Errorf("echo %q, want %q", got, msg)
			}
			if err != nil {
				errc <- err
			}
		}()
	}
	opened.Wait()
	estab := 0
	for _, si := range a.Sockets() {
		if si.Protocol == "tcp" && si.State == "ESTAB" {
			estab++
		}
	}
	close(release)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if estab != n {
		t.Fatalf("%d connections established at once, want %d", estab, n)
	}
	t.Logf("listen drops %d, retransmissions %d+%d", b.TCP().Stats.ListenDrops.Load(),
		a.TCP().Stats.RetransSegs.Load(), b.TCP().Stats.RetransSegs.Load())
	ln.Close()
	served.Wait()
	// TIME-WAIT (1 s here) drains; then no socket is left.
	deadline := time.Now().Add(30 * time.Second)
	for a.TCP().NumSockets()+b.TCP().NumSockets() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("sockets left: %d + %d", a.TCP().NumSockets(), b.TCP().NumSockets())
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.Close()
	b.Close()
}

func TestTCPDialerLocalAddr(t *testing.T) {
	a, b := tcpStackPair(t)
	ln, err := b.Listen(context.Background(), "tcp4", "10.0.0.2:8081")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d := &berth.Dialer{Stack: a, LocalAddr: &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 40000}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp4", "10.0.0.2:8081")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-accepted
	defer sc.Close()
	if c.LocalAddr().String() != "10.0.0.1:40000" || sc.RemoteAddr().String() != "10.0.0.1:40000" {
		t.Fatalf("local %v, seen by the server as %v", c.LocalAddr(), sc.RemoteAddr())
	}
	// The same local address and port to the same destination: EADDRINUSE.
	_, err = d.Dial("tcp4", "10.0.0.2:8081")
	checkOpErr(t, err, "dial", syscall.EADDRINUSE, "dial tcp4 10.0.0.1:40000->10.0.0.2:8081: bind: address already in use")
	// A local address that is not the stack's: EADDRNOTAVAIL.
	d.LocalAddr = &net.TCPAddr{IP: net.ParseIP("10.0.0.9")}
	_, err = d.Dial("tcp4", "10.0.0.2:8081")
	checkOpErr(t, err, "dial", syscall.EADDRNOTAVAIL, "dial tcp4 10.0.0.9:0->10.0.0.2:8081: bind: cannot assign requested address")
	// tcp6 to an IPv4 address.
	_, err = a.DialContext(context.Background(), "tcp6", "10.0.0.2:8081")
	var ae *net.AddrError
	if !errors.As(err, &ae) {
		t.Fatalf("tcp6 to IPv4: %v", err)
	}
}

func TestTCPIPv6(t *testing.T) {
	a, b := tcpStackPair(t)
	c, sc, ln := tcpConnPair(t, a, b, "tcp6", "[fd00::2]:0")
	defer ln.Close()
	if mss := c.(*berth.TCPConn).Info().MSS; mss != 1500-40-20-12 { // less the timestamp option
		t.Fatalf("IPv6 MSS %d", mss)
	}
	tcpTransfer(t, c, sc, 4<<20)
	c.Close()
	sc.Close()
	// A "tcp6" wildcard listener is IPv6-only: IPv4 is refused; a "tcp" one is dual-stack.
	for _, tc := range []struct {
		network string
		v4ok    bool
	}{{"tcp6", false}, {"tcp", true}} {
		l, err := b.Listen(context.Background(), tc.network, "[::]:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		_, port, _ := net.SplitHostPort(l.Addr().String())
		c6, err := a.DialContext(context.Background(), "tcp", "[fd00::2]:"+port)
		if err != nil {
			t.Fatalf("%s: IPv6 dial: %v", tc.network, err)
		}
		c6.Close()
		c4, err := a.DialContext(context.Background(), "tcp", "10.0.0.2:"+port)
		if tc.v4ok != (err == nil) || (err != nil && !errors.Is(err, syscall.ECONNREFUSED)) {
			t.Fatalf("%s: IPv4 dial: %v", tc.network, err)
		}
		if c4 != nil {
			c4.Close()
		}
		l.Close()
	}
}
