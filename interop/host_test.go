//go:build linux

package interop

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/netns/tunhost"
	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/impair"
	"github.com/berthnet/berth/link/pcap"
	"github.com/berthnet/berth/link/tun"
	"github.com/berthnet/berth/services"
)

// Addresses on the TUN device, tunhost's defaults: berth's side and the kernel's side.
// They exist only inside the test's namespace.
var (
	berth4 = defaultAddr(tunhost.DefaultAddrs, 0)
	berth6 = defaultAddr(tunhost.DefaultAddrs, 1)
	kern4  = defaultAddr(tunhost.DefaultHostAddrs, 0)
	kern6  = defaultAddr(tunhost.DefaultHostAddrs, 1)
)

func defaultAddr(prefixes []string, i int) netip.Addr {
	return netip.MustParsePrefix(prefixes[i]).Addr()
}

// hostConfig says how to build a host: the device's options and what berth's side of
// the link goes through (tunhost.Config.WrapLink), innermost first.
type hostConfig struct {
	tun tun.Options
	// inboundLoss drops packets the kernel sends before berth (and impair) sees them.
	inboundLoss float64
	impair      *impair.Config // non-nil: berth's link goes through link/impair
	pcap        bool           // record berth's side of the link (host.pcapFile)
}

// host is a tunhost.Host and the link wrappers its test asked for.
type host struct {
	*tunhost.Host
	imp      *impair.Endpoint
	lossy    *lossyInbound
	pcapFile string
	pcapW    *pcap.Writer
}

// newHost is tunhost.New with tunhost's default addresses (berth4/berth6 on berth's side,
// kern4/kern6 on the kernel's) and berth's link wrapped as cfg says. The cleanups close
// the stack (and with it the device and the capture) and delete the namespace, also when
// the test fails.
func newHost(t testing.TB, cfg hostConfig) *host {
	t.Helper()
	h := &host{}
	if cfg.pcap {
		h.pcapFile = filepath.Join(t.TempDir(), "berth.pcap")
		f, err := os.Create(h.pcapFile)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() }) // after tunhost's cleanups have closed the stack
		// Full packets: with the vnet header the kernel hands over 64 KiB super-segments.
		// Unbuffered, so the file is complete once the stack is closed.
		h.pcapW, err = pcap.NewWriter(f, 65535)
		if err != nil {
			t.Fatal(err)
		}
	}
	h.Host = tunhost.New(t, tunhost.Config{TUN: cfg.tun, WrapLink: func(ep link.Endpoint) link.Endpoint {
		if cfg.inboundLoss > 0 {
			h.lossy = newLossyInbound(ep, cfg.inboundLoss, 1)
			ep = h.lossy
		}
		if cfg.impair != nil {
			h.imp = impair.New(ep, *cfg.impair)
			ep = h.imp
		}
		if h.pcapW != nil {
			ep = pcap.Tap(ep, h.pcapW)
		}
		return ep
	}})
	return h
}

// stopCapture closes the stack, so that nothing more is recorded, and returns the pcap
// file's name.
func (h *host) stopCapture(t testing.TB) string {
	t.Helper()
	h.Stack.Close()
	if err := h.pcapW.Err(); err != nil {
		t.Fatalf("pcap: %v", err)
	}
	return h.pcapFile
}

// needCommand fails (CI) or skips the test when name is not installed.
func needCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	testenv.NeedCommand(t, name, err)
	return p
}

// hostPort formats an address and port for dialing.
func hostPort(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

// url is the http URL of path on a:port.
func url(a netip.Addr, port uint16, path string) string {
	return "http://" + hostPort(a, port) + path
}

// patternSum is the SHA-256 of the first n pattern bytes (services.FillPattern), which
// GET /bytes/n serves. Sums are cached: several tests transfer the same sizes.
func patternSum(n int64) [32]byte {
	sumsMu.Lock()
	defer sumsMu.Unlock()
	if s, ok := sums[n]; ok {
		return s
	}
	h := sha256.New()
	io.Copy(h, services.NewPatternReader(n))
	var s [32]byte
	h.Sum(s[:0])
	sums[n] = s
	return s
}

var (
	sumsMu sync.Mutex
	sums   = map[int64][32]byte{}
)

// serveHTTP serves services.HTTPHandler on ln until the test ends.
func serveHTTP(t testing.TB, ln net.Listener) {
	srv := &http.Server{Handler: services.HTTPHandler(nil), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// berthHTTP starts the http service on berth's port 80 (all addresses).
func (h *host) berthHTTP(t testing.TB) {
	t.Helper()
	ln, err := h.Stack.Listen(context.Background(), "tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, ln)
}

// kernelHTTP starts the http service on a kernel socket in the namespace, port 8080 on
// all addresses (IPv4 and IPv6).
func (h *host) kernelHTTP(t testing.TB) {
	t.Helper()
	ln, err := h.NS.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, ln)
}

// transfer is the outcome of one HTTP download.
type transfer struct {
	n   int64
	sum [32]byte
	dur time.Duration
}

func (x transfer) String() string {
	return fmt.Sprintf("%d bytes in %v (%.1f MB/s)", x.n, x.dur.Round(time.Millisecond), mbps(x.n, x.dur))
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

// curl downloads u with curl inside the namespace and hashes what it got.
func (h *host) curl(ctx context.Context, u string) (transfer, error) {
	cmd := h.NS.Command(ctx, "curl", "-sS", "--fail", "-g", "-o", "-", u)
	var stderr bytesBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return transfer{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return transfer{}, err
	}
	hs := sha256.New()
	n, cerr := io.Copy(hs, out)
	err = cmd.Wait()
	x := transfer{n: n, dur: time.Since(start)}
	hs.Sum(x.sum[:0])
	if err == nil {
		err = cerr
	}
	if err != nil {
		return x, fmt.Errorf("curl %s: %v: %s", u, err, stderr.String())
	}
	return x, nil
}

// berthGet downloads u with net/http over berth and hashes the body.
func (h *host) berthGet(ctx context.Context, u string) (transfer, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext:        h.Stack.DialContext,
		DisableKeepAlives:  true,
		DisableCompression: true,
	}}
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return transfer{}, err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return transfer{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return transfer{}, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	hs := sha256.New()
	n, err := io.Copy(hs, resp.Body)
	x := transfer{n: n, dur: time.Since(start)}
	hs.Sum(x.sum[:0])
	if err != nil {
		return x, fmt.Errorf("GET %s: after %d bytes: %w", u, n, err)
	}
	return x, nil
}

// checkTransfer fails the test unless x is exactly the first n pattern bytes.
func checkTransfer(t testing.TB, what string, x transfer, err error, n int64) {
	t.Helper()
	switch {
	case err != nil:
		t.Errorf("%s: %v (%d of %d bytes)", what, err, x.n, n)
	case x.n != n:
		t.Errorf("%s: %d bytes, want %d", what, x.n, n)
	case x.sum != patternSum(n):
		t.Errorf("%s: %d bytes, but the SHA-256 differs from the pattern's", what, x.n)
	default:
		t.Logf("%s: %v, SHA-256 ok", what, x)
	}
}

// bytesBuffer is a bytes.Buffer safe for exec's stderr copier and the test reading it.
type bytesBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (b *bytesBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	return len(p), nil
}

func (b *bytesBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

// tunVnet turns on the virtio-net header offloads: the kernel hands over TSO
// super-segments and partial checksums, which link/tun completes.
var tunVnet = tun.Options{VnetHdr: true}
