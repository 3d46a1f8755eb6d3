package control

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/pipe"
)

type fakeSource struct {
	socks    []Socket
	counters []Counter
}

func (f *fakeSource) Sockets() []Socket   { return f.socks }
func (f *fakeSource) Counters() []Counter { return f.counters }

type fakeCapturer struct {
	fakeSource
	tap *Tap
}

func (f *fakeCapturer) Capture(ctx context.Context, w io.Writer, count int) error {
	return f.tap.Capture(ctx, w, count)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// sockPath is a short path: unix socket paths are limited to 107 bytes, and t.TempDir's
// can be long.
func sockPath(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "bc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return filepath.Join(d, "x", "h.sock")
}

func listen(t *testing.T, src Source) *Server {
	t.Helper()
	s, err := Listen(sockPath(t), src, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSocketsAndCounters(t *testing.T) {
	src := &fakeSource{
		socks: []Socket{
			{Netid: "tcp", State: "LISTEN", SendQ: 128, Local: netip.MustParseAddrPort("0.0.0.0:7")},
			{Netid: "tcp", State: "ESTAB", RecvQ: 3, Local: netip.MustParseAddrPort("10.0.0.2:7"),
				Peer: netip.MustParseAddrPort("10.0.0.1:49152"),
				TCP:  &TCPInfo{RTT: 1500 * time.Microsecond, MSS: 1460, CWnd: 14600, SndWScale: 7, RcvWScale: -1, Timer: "on"}},
			{Netid: "udp", State: "UNCONN", Local: netip.MustParseAddrPort("[::]:7"), Drops: 2},
		},
		counters: []Counter{{"UdpNoPorts", 4}, {"IpInReceives", 100}, {"TcpActiveOpens", 0}},
	}
	s := listen(t, src)
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want a socket with 0660", fi.Mode())
	}
	c := &Client{Path: s.Path()}
	ctx := context.Background()
	socks, err := c.Sockets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != len(src.socks) {
		t.Fatalf("got %d sockets, want %d", len(socks), len(src.socks))
	}
	for i := range socks {
		a, b := socks[i], src.socks[i]
		if a.Netid != b.Netid || a.State != b.State || a.RecvQ != b.RecvQ || a.SendQ != b.SendQ ||
			a.Local != b.Local || a.Peer != b.Peer || a.Drops != b.Drops || (a.TCP == nil) != (b.TCP == nil) {
			t.Errorf("socket %d: got %+v, want %+v", i, a, b)
		}
		if a.TCP != nil && *a.TCP != *b.TCP {
			t.Errorf("socket %d TCP: got %+v, want %+v", i, *a.TCP, *b.TCP)
		}
	}
	counters, err := c.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(counters) != 3 || counters[0] != src.counters[0] || counters[1] != src.counters[1] || counters[2] != src.counters[2] {
		t.Errorf("counters %v, want %v (same order)", counters, src.counters)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after Close: %v", err)
	}
	if _, err := c.Sockets(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("after Close: %v, want ErrNotRunning", err)
	}
}

// rawRequest sends line and returns the server's answer line.
func rawRequest(t *testing.T, path, line string) Response {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	var r Response
	if err := jsonUnmarshal(b, &r); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	return r
}

func TestBadRequests(t *testing.T) {
	s := listen(t, &fakeSource{})
	for _, c := range []struct{ line, want string }{
		{`{"op":"reboot"}` + "\n", `unknown op "reboot"`},
		{"not json\n", "malformed request"},
		{`{"op":"sockets"`, "malformed request"}, // no newline, then EOF
		{`{"op":"capture"}` + "\n", "cannot capture"},
		{strings.Repeat("x", maxRequest+10), "request too long"},
	} {
		r := rawRequest(t, s.Path(), c.line)
		if r.OK || !strings.Contains(r.Error, c.want) {
			t.Errorf("%.30q: got %+v, want an error containing %q", c.line, r, c.want)
		}
	}
	// The server still serves after bad requests.
	if _, err := (&Client{Path: s.Path()}).Sockets(context.Background()); err != nil {
		t.Fatal(err)
	}
	cp := listen(t, &fakeCapturer{tap: &Tap{}})
	if r := rawRequest(t, cp.Path(), `{"op":"capture","count":-1}`+"\n"); r.OK || !strings.Contains(r.Error, "negative count") {
		t.Errorf("negative count: %+v", r)
	}
}

func TestNotRunning(t *testing.T) {
	path := sockPath(t)
	c := &Client{Path: path}
	if _, err := c.Sockets(context.Background()); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), path) {
		t.Errorf("no socket file: %v, want ErrNotRunning naming the path", err)
	}
	// A socket file that nothing serves (a berth that was killed).
	os.MkdirAll(filepath.Dir(path), 0o755)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := c.Sockets(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("stale socket: %v, want ErrNotRunning", err)
	}
	// Listen replaces the stale file...
	s, err := Listen(path, &fakeSource{counters: []Counter{{"X", 1}}}, quietLog())
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer s.Close()
	if cs, err := c.Counters(context.Background()); err != nil || len(cs) != 1 {
		t.Errorf("Counters: %v %v", cs, err)
	}
	// ...but not a live server's socket, nor a file that is not a socket.
	if _, err := Listen(path, &fakeSource{}, quietLog()); err == nil || !strings.Contains(err.Error(), "another berth is serving") {
		t.Errorf("second Listen: %v", err)
	}
	other := filepath.Join(filepath.Dir(path), "file")
	os.WriteFile(other, nil, 0o600)
	if _, err := Listen(other, &fakeSource{}, quietLog()); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("Listen on a regular file: %v", err)
	}
	if _, err := Listen("/tmp/"+strings.Repeat("a", 120), &fakeSource{}, quietLog()); err == nil || !strings.Contains(err.Error(), "longer than 107") {
		t.Errorf("long path: %v", err)
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", dir)
	if got, want := Dir(), filepath.Join(dir, "berth"); got != want {
		t.Errorf("Dir = %s, want %s", got, want)
	}
	if got, want := DefaultPath("berth0"), filepath.Join(dir, "berth", "berth0.sock"); got != want {
		t.Errorf("DefaultPath = %s, want %s", got, want)
	}
	other := t.TempDir() // stands for RunDir
	dirs := []string{Dir(), other}
	if _, err := find(dirs); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), Dir()+" or "+other) {
		t.Errorf("find with no sockets: %v", err)
	}
	s1, err := Listen(DefaultPath("a"), &fakeSource{}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	if p, err := find(dirs); err != nil || p != s1.Path() {
		t.Errorf("find = %q, %v; want %s", p, err, s1.Path())
	}
	s2, err := Listen(filepath.Join(other, "b.sock"), &fakeSource{}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := find(dirs); err == nil || !strings.Contains(err.Error(), "several") ||
		!strings.Contains(err.Error(), s1.Path()) || !strings.Contains(err.Error(), s2.Path()) {
		t.Errorf("find with two: %v", err)
	}
}

// pcapRecords parses a little-endian microsecond pcap stream.
func pcapRecords(t *testing.T, b []byte) [][]byte {
	t.Helper()
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(b[20:]) != 101 {
		t.Fatalf("not a LINKTYPE_RAW pcap stream: % x", b[:min(len(b), 24)])
	}
	var out [][]byte
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatalf("truncated record header")
		}
		incl := int(binary.LittleEndian.Uint32(b[8:]))
		if len(b) < 16+incl {
			t.Fatalf("truncated record")
		}
		out = append(out, b[16:16+incl])
		b = b[16+incl:]
	}
	return out
}

// tapPair is a pipe whose end a is wrapped by tap; b's deliveries are counted.
func tapPair(t *testing.T, tap *Tap) (a link.Endpoint, delivered func() int) {
	pa, pb := pipe.New(1500)
	var mu sync.Mutex
	n := 0
	pb.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		mu.Lock()
		n += len(pkts)
		mu.Unlock()
	}))
	a = tap.Wrap(pa)
	a.Attach(link.DispatcherFunc(func([][]byte) {}))
	t.Cleanup(func() { a.Close() })
	return a, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func TestCaptureCount(t *testing.T) {
	tap := &Tap{}
	a, delivered := tapPair(t, tap)
	s := listen(t, &fakeCapturer{tap: tap})
	// Packets sent before the capture starts are not recorded.
	a.WritePackets([][]byte{[]byte("before")})
	var out bytes.Buffer
	started := make(chan struct{})
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, err := (&Client{Path: s.Path()}).Capture(context.Background(), &out, 3, func() { close(started) })
		res <- result{n, err}
	}()
	<-started
	waitFor(t, func() bool { p := tap.sessions.Load(); return p != nil && len(*p) == 1 })
	want := []string{"one", "two", "three"}
	for _, p := range want {
		a.WritePackets([][]byte{[]byte(p)})
	}
	a.WritePackets([][]byte{[]byte("four"), []byte("five")})
	r := <-res
	if r.err != nil || r.n != 3 {
		t.Fatalf("Capture = %d, %v; want 3 packets", r.n, r.err)
	}
	recs := pcapRecords(t, out.Bytes())
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	for i, w := range want {
		if string(recs[i]) != w {
			t.Errorf("record %d = %q, want %q", i, recs[i], w)
		}
	}
	waitFor(t, func() bool { return delivered() == 6 })
	waitFor(t, func() bool { p := tap.sessions.Load(); return p != nil && len(*p) == 0 })
}

func TestCaptureUntilCancelled(t *testing.T) {
	base := runtime.NumGoroutine()
	tap := &Tap{}
	a, _ := tapPair(t, tap)
	s, err := Listen(sockPath(t), &fakeCapturer{tap: tap}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	started := make(chan struct{})
	done := make(chan error, 1)
	var n int
	go func() {
		var err error
		n, err = (&Client{Path: s.Path()}).Capture(ctx, &out, 0, func() { close(started) })
		done <- err
	}()
	<-started
	waitFor(t, func() bool { p := tap.sessions.Load(); return p != nil && len(*p) == 1 })
	for range 10 {
		a.WritePackets([][]byte{[]byte("0123456789")})
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("cancelled capture: %v", err)
	}
	if recs := pcapRecords(t, out.Bytes()); len(recs) != n || n > 10 {
		t.Errorf("%d records, client counted %d (at most 10 sent)", len(recs), n)
	}
	// The server notices the client left and ends the session.
	waitFor(t, func() bool { p := tap.sessions.Load(); return p != nil && len(*p) == 0 })
	// Closing the server ends a capture that is still running.
	started2 := make(chan struct{})
	go func() {
		_, err := (&Client{Path: s.Path()}).Capture(context.Background(), io.Discard, 0, func() { close(started2) })
		done <- err
	}()
	<-started2
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("capture still running after Server.Close")
	}
	a.Close()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= base })
}

// TestSlowReader: a capture whose reader stalls drops records instead of blocking the
// link.
func TestSlowReader(t *testing.T) {
	tap := &Tap{SinkBytes: 1000}
	a, delivered := tapPair(t, tap)
	pr, pw := io.Pipe() // nobody reads until the packets are sent
	done := make(chan error, 1)
	go func() { done <- tap.Capture(context.Background(), pw, 0) }()
	waitFor(t, func() bool { p := tap.sessions.Load(); return p != nil && len(*p) == 1 })
	pkt := make([]byte, 100)
	start := time.Now()
	for range 200 {
		a.WritePackets([][]byte{pkt})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("writes took %v with a stalled capture reader", d)
	}
	waitFor(t, func() bool { return delivered() == 200 })
	pr.CloseWithError(errors.New("reader gone"))
	a.WritePackets([][]byte{pkt})
	select {
	case err := <-done:
		if err == nil {
			t.Error("Capture returned nil after its writer failed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Capture did not end after its writer failed")
	}
}

func TestFromStack(t *testing.T) {
	s := berth.New()
	defer s.Close()
	ctx := context.Background()
	pc, err := s.ListenPacket(ctx, "udp4", "127.0.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	src := FromStack(s, nil)
	if _, ok := src.(Capturer); ok {
		t.Error("a source without a tap is a Capturer")
	}
	if _, ok := FromStack(s, &Tap{}).(Capturer); !ok {
		t.Error("a source with a tap is not a Capturer")
	}
	var found bool
	for _, so := range src.Sockets() {
		if so.Netid == "udp" && so.State == "UNCONN" && so.Local == netip.MustParseAddrPort("127.0.0.1:7") && !so.Peer.IsValid() {
			found = true
		}
	}
	if !found {
		t.Errorf("udp 127.0.0.1:7 missing from %+v", src.Sockets())
	}
	// A datagram to a closed port counts UdpNoPorts.
	c, err := s.DialContext(ctx, "udp4", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	waitFor(t, func() bool { return counter(src.Counters(), "UdpNoPorts") == 1 })
	names := map[string]bool{}
	for _, c := range src.Counters() {
		if names[c.Name] {
			t.Errorf("counter %s twice", c.Name)
		}
		names[c.Name] = true
	}
	for _, n := range []string{"IpInReceives", "IcmpOutDestUnreachs", "UdpInDatagrams", "TcpActiveOpens", "TcpRetransSegs", "TcpCurrEstab"} {
		if !names[n] {
			t.Errorf("no counter %s", n)
		}
	}
}

// TestCountersAreStats: what `berth stats` prints of a stack (its Source's Counters) is
// exactly Stack.Stats, TCP's counters included.
func TestCountersAreStats(t *testing.T) {
	s := berth.New()
	defer s.Close()
	ctx := context.Background()
	ln, err := s.Listen(ctx, "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := s.DialContext(ctx, "tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	waitFor(t, func() bool { return s.Stats()["TcpCurrEstab"] == 2 })
	st := s.Stats()
	var cs []Counter
	for _, c := range FromStack(s, nil).Counters() {
		if !IsProcessFigure(c.Name) { // the process's own figures follow the stack's
			cs = append(cs, c)
		}
	}
	if len(cs) != len(st) {
		t.Errorf("%d counters printed, Stats has %d", len(cs), len(st))
	}
	for _, c := range cs {
		v, ok := st[c.Name]
		if !ok {
			t.Errorf("%s printed, not in Stats", c.Name)
		} else if c.Name == "TcpCurrEstab" && v != c.Value {
			t.Errorf("TcpCurrEstab %d printed, %d in Stats", c.Value, v)
		}
	}
	if counter(cs, "TcpActiveOpens") != 1 || counter(cs, "TcpPassiveOpens") != 1 || counter(cs, "TcpCurrEstab") != 2 {
		t.Errorf("TCP counters printed: %v", cs)
	}
}

func counter(cs []Counter, name string) uint64 {
	for _, c := range cs {
		if c.Name == name {
			return c.Value
		}
	}
	return 1 << 63
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(bytes.TrimSpace(b), v) }

// fakeForwarder is a Source with port forwards; AddPort refuses a mapping twice.
type fakeForwarder struct {
	fakeSource
	mu    sync.Mutex
	ports []string
}

func (f *fakeForwarder) AddPort(m string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if slices.Contains(f.ports, m) {
		return errors.New(m + " is already forwarded")
	}
	f.ports = append(f.ports, m)
	return nil
}

func (f *fakeForwarder) RemovePort(m string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.Index(f.ports, m)
	if i < 0 {
		return errors.New(m + " is not forwarded")
	}
	f.ports = slices.Delete(f.ports, i, i+1)
	return nil
}

func (f *fakeForwarder) Ports() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ports)
}

// TestForward: one socket serves a session's stack ops and its port forwards.
func TestForward(t *testing.T) {
	src := &fakeForwarder{fakeSource: fakeSource{counters: []Counter{{"UdpInDatagrams", 5}}}, ports: []string{"8080:80/tcp"}}
	s := listen(t, src)
	c := &Client{Path: s.Path()}
	ctx := context.Background()
	got, err := c.Forward(ctx, "add", "9090:90/udp")
	if err != nil || !slices.Equal(got, []string{"8080:80/tcp", "9090:90/udp"}) {
		t.Errorf("add: %q, %v", got, err)
	}
	if _, err := c.Forward(ctx, "add", "9090:90/udp"); err == nil || !strings.Contains(err.Error(), "already forwarded") {
		t.Errorf("add twice: %v, want the forwarder's error", err)
	}
	if got, err := c.Forward(ctx, "rm", "8080:80/tcp"); err != nil || !slices.Equal(got, []string{"9090:90/udp"}) {
		t.Errorf("rm: %q, %v", got, err)
	}
	if got, err := c.Forward(ctx, "ls", ""); err != nil || !slices.Equal(got, []string{"9090:90/udp"}) {
		t.Errorf("ls: %q, %v", got, err)
	}
	if _, err := c.Forward(ctx, "move", ""); err == nil || !strings.Contains(err.Error(), `unknown action "move"`) {
		t.Errorf("unknown action: %v", err)
	}
	// The same socket answers the stack's ops.
	if cs, err := c.Counters(ctx); err != nil || counter(cs, "UdpInDatagrams") != 5 {
		t.Errorf("counters on a forwarding socket: %v, %v", cs, err)
	}
	// A host without port forwards (berth up) says so.
	up := listen(t, &fakeSource{})
	if _, err := (&Client{Path: up.Path()}).Forward(ctx, "ls", ""); err == nil || !strings.Contains(err.Error(), "no port forwards") {
		t.Errorf("forward on a source without forwards: %v", err)
	}
}
