package main

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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/control"
	"github.com/berthnet/berth/internal/netns"
	"github.com/berthnet/berth/link/pipe"
	"github.com/berthnet/berth/wire"
)

// opsHost is a berth host served on a control socket by this test process, the way
// `berth up` serves its stack, and a peer that talks to it over a pipe.
type opsHost struct {
	host, peer *berth.Stack
	path       string
	conns      []net.Conn // the peer's connections to the host's port 80
}

func newOpsHost(t *testing.T) *opsHost {
	t.Helper()
	ctx := context.Background()
	h := &opsHost{host: berth.New(), peer: berth.New()}
	t.Cleanup(func() { h.peer.Close(); h.host.Close() })
	tap := &control.Tap{}
	pa, pb := pipe.New(1500)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(h.host.AddInterface("eth0", tap.Wrap(pa)))
	must(h.peer.AddInterface("eth0", pb))
	must(h.host.AddAddress("eth0", netip.MustParsePrefix("10.0.0.1/24")))
	must(h.peer.AddAddress("eth0", netip.MustParsePrefix("10.0.0.2/24")))
	ln, err := h.host.Listen(ctx, "tcp4", ":80")
	must(err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	pc, err := h.host.ListenPacket(ctx, "udp4", ":7")
	must(err)
	t.Cleanup(func() { pc.Close() })
	go func() { // UDP echo
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	for range 2 {
		c, err := h.peer.DialContext(ctx, "tcp4", "10.0.0.1:80")
		must(err)
		t.Cleanup(func() { c.Close() })
		h.conns = append(h.conns, c)
	}
	// A datagram to a closed port: UdpNoPorts and an ICMP port unreachable on the host.
	u, err := h.peer.DialContext(ctx, "udp4", "10.0.0.1:9")
	must(err)
	u.Write([]byte("x"))
	u.Close()
	waitUntil(t, func() bool { return h.host.Stats()["UdpNoPorts"] == 1 })
	waitUntil(t, func() bool {
		n := 0
		for _, s := range h.host.Sockets() {
			if s.State == "ESTAB" {
				n++
			}
		}
		return n == 2
	})
	d, err := os.MkdirTemp("", "bss")
	must(err)
	t.Cleanup(func() { os.RemoveAll(d) })
	h.path = filepath.Join(d, "h.sock")
	srv, err := control.Listen(h.path, control.FromStack(h.host, tap), slog.New(slog.NewTextHandler(io.Discard, nil)))
	must(err)
	t.Cleanup(func() { srv.Close() })
	return h
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOperatorViews runs berth ss, stats and capture as a user would, against a control
// socket served by this process.
func TestOperatorViews(t *testing.T) {
	bin := buildBerth(t)
	h := newOpsHost(t)
	ctl := "--control=" + h.path
	// berth stats keeps its history here rather than in $TMPDIR.
	t.Setenv("BERTH_STATS_HISTORY", filepath.Join(t.TempDir(), "stats-history"))
	peerPorts := []string{}
	for _, c := range h.conns {
		peerPorts = append(peerPorts, strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port))
	}
	estab := func(port string, named bool) *regexp.Regexp {
		local := "10.0.0.1:80"
		if named {
			local = "10.0.0.1:http"
		}
		return regexp.MustCompile(`(?m)^tcp +ESTAB +0 +0 +` + regexp.QuoteMeta(local) + ` +10\.0\.0\.2:` + port + `$`)
	}
	listenRow := regexp.MustCompile(`(?m)^tcp +LISTEN +0 +\d+ +0\.0\.0\.0:http +0\.0\.0\.0:\*$`)
	udpRow := regexp.MustCompile(`(?m)^udp +UNCONN +0 +0 +0\.0\.0\.0:echo +0\.0\.0\.0:\*$`)

	t.Run("ss-default", func(t *testing.T) {
		code, out, errs := runBerth(t, bin, nil, "ss", ctl)
		if code != 0 || errs != "" {
			t.Fatalf("exit %d: %s", code, errs)
		}
		if !headerRE.MatchString(out) {
			t.Errorf("no header:\n%s", out)
		}
		for _, p := range peerPorts {
			if !estab(p, true).MatchString(out) {
				t.Errorf("no ESTAB row from port %s:\n%s", p, out)
			}
		}
		// Like ss: listening sockets only with -l or -a.
		if listenRow.MatchString(out) || udpRow.MatchString(out) || strings.Count(out, "\n") != 3 {
			t.Errorf("default view shows more than the 2 connections:\n%s", out)
		}
	})
	t.Run("ss-listening", func(t *testing.T) {
		code, out, _ := runBerth(t, bin, nil, "ss", "-tl", ctl)
		if code != 0 || !listenRow.MatchString(out) || strings.Contains(out, "ESTAB") || strings.Contains(out, "udp") {
			t.Errorf("ss -tl: exit %d\n%s", code, out)
		}
		code, out, _ = runBerth(t, bin, nil, "ss", "--udp", "--all", "--control", h.path)
		if code != 0 || !udpRow.MatchString(out) || strings.Contains(out, "tcp") {
			t.Errorf("ss --udp --all: exit %d\n%s", code, out)
		}
	})
	t.Run("ss-numeric-all", func(t *testing.T) {
		code, out, _ := runBerth(t, bin, nil, "ss", "-tuan", ctl)
		if code != 0 || strings.Contains(out, ":http") || strings.Count(out, "\n") != 5 {
			t.Errorf("ss -tuan: exit %d\n%s", code, out)
		}
		for _, p := range peerPorts {
			if !estab(p, false).MatchString(out) {
				t.Errorf("no numeric ESTAB row from port %s:\n%s", p, out)
			}
		}
	})
	t.Run("ss-info", func(t *testing.T) {
		code, out, _ := runBerth(t, bin, nil, "ss", "-tio", ctl)
		info := regexp.MustCompile(`(?m)^\tts sack cubic wscale:\d+,\d+ rto:\d+ rtt:[\d.]+/[\d.]+ mss:1448 cwnd:\d+ snd_wnd:\d+ rcv_wnd:\d+ retrans:0/0$`)
		timer := regexp.MustCompile(`(?m) timer:\(keepalive,\d+sec,0\)$`)
		if code != 0 || len(info.FindAllString(out, -1)) != 2 || len(timer.FindAllString(out, -1)) != 2 {
			t.Errorf("ss -tio: exit %d, want 2 info lines and 2 timers:\n%s", code, out)
		}
	})
	t.Run("ss-json", func(t *testing.T) {
		code, out, _ := runBerth(t, bin, nil, "ss", "-a", "--json", ctl)
		var socks []map[string]any
		if err := json.Unmarshal([]byte(out), &socks); err != nil || code != 0 {
			t.Fatalf("exit %d, %v:\n%s", code, err, out)
		}
		if len(socks) != len(h.host.Sockets()) {
			t.Errorf("%d sockets, the host has %d", len(socks), len(h.host.Sockets()))
		}
		// Every quantity's key carries its unit.
		estab := 0
		for _, s := range socks {
			if s["state"] == "LISTEN" {
				if _, ok := s["accept_queue_conns"]; !ok {
					t.Errorf("listener without accept_queue_conns: %v", s)
				}
				continue
			}
			if _, ok := s["recv_q_bytes"]; !ok {
				t.Errorf("no recv_q_bytes: %v", s)
			}
			if s["state"] != "ESTAB" || s["netid"] != "tcp" {
				continue
			}
			estab++
			tcp, _ := s["tcp"].(map[string]any)
			for _, k := range []string{"rtt_us", "rttvar_us", "rto_us", "mss_bytes", "cwnd_segments", "snd_wnd_bytes", "timer_left_ms"} {
				if _, ok := tcp[k]; !ok {
					t.Errorf("ESTAB row without tcp.%s: %v", k, s)
				}
			}
			if tcp["mss_bytes"] != 1448.0 || tcp["cwnd_segments"].(float64) < 1 || tcp["rto_us"].(float64) < 1000 {
				t.Errorf("implausible values: %v", tcp)
			}
		}
		if estab != 2 {
			t.Errorf("%d ESTAB rows, want 2:\n%s", estab, out)
		}
	})
	t.Run("stats", func(t *testing.T) {
		code, out, errs := runBerth(t, bin, nil, "stats", ctl)
		if code != 0 || errs != "" {
			t.Fatalf("exit %d: %s", code, errs)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if lines[0] != "#berth "+h.path {
			t.Errorf("first line %q", lines[0])
		}
		row := regexp.MustCompile(`^([A-Za-z0-9]+) +(\d+)$`)
		got := map[string]string{}
		for _, l := range lines[1:] {
			m := row.FindStringSubmatch(l)
			if m == nil || m[2] == "0" {
				t.Errorf("bad or zero line %q", l)
				continue
			}
			got[m[1]] = m[2]
		}
		for k, v := range map[string]string{"UdpNoPorts": "1", "IcmpOutDestUnreachs": "1", "TcpPassiveOpens": "2", "TcpCurrEstab": "2"} {
			if got[k] != v {
				t.Errorf("%s = %q, want %s\n%s", k, got[k], v, out)
			}
		}
		code, out, _ = runBerth(t, bin, nil, "stats", "-z", ctl, "Tcp*", "UdpNoPorts")
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			if !strings.HasPrefix(l, "Tcp") && !strings.HasPrefix(l, "UdpNoPorts ") {
				t.Errorf("stats Tcp* UdpNoPorts shows %q", l)
			}
		}
		if code != 0 || !strings.Contains(out, "\nTcpRetransSegs ") {
			t.Errorf("stats -z Tcp*: exit %d, no zero TcpRetransSegs:\n%s", code, out)
		}
		code, out, _ = runBerth(t, bin, nil, "stats", "-a", "--json", ctl)
		var doc map[string]map[string]uint64
		if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 0 || doc["berth"]["UdpNoPorts"] != 1 {
			t.Errorf("stats -a --json: exit %d, %v:\n%s", code, err, out)
		}
		code, _, errs = runBerth(t, bin, nil, "stats", ctl, "NoSuchCounter")
		if code != 1 || !strings.Contains(errs, "no counter matches NoSuchCounter") {
			t.Errorf("unknown counter: exit %d, %q", code, errs)
		}
		code, _, errs = runBerth(t, bin, nil, "stats", ctl, "[")
		if code != 2 || !strings.Contains(errs, `bad pattern "["`) {
			t.Errorf("bad pattern: exit %d, %q", code, errs)
		}
	})
	t.Run("stats-deltas", func(t *testing.T) {
		hist := []string{"BERTH_STATS_HISTORY=" + filepath.Join(t.TempDir(), "h")}
		noPorts := func(flags ...string) uint64 {
			t.Helper()
			code, out, errs := runBerth(t, bin, hist, append(append([]string{"stats", "--json", ctl}, flags...), "UdpNoPorts")...)
			var doc map[string]map[string]uint64
			if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 0 {
				t.Fatalf("stats %v: exit %d, %v %s:\n%s", flags, code, err, errs, out)
			}
			v, ok := doc["berth"]["UdpNoPorts"]
			if !ok {
				t.Fatalf("stats %v: no UdpNoPorts in\n%s", flags, out)
			}
			return v
		}
		total := h.host.Stats()["UdpNoPorts"]
		if v := noPorts(); v != total {
			t.Errorf("first call: UdpNoPorts %d, want the total %d", v, total)
		}
		if v := noPorts(); v != 0 {
			t.Errorf("nothing happened, yet UdpNoPorts grew by %d", v)
		}
		u, err := h.peer.DialContext(context.Background(), "udp4", "10.0.0.1:9")
		if err != nil {
			t.Fatal(err)
		}
		u.Write([]byte("x"))
		u.Close()
		waitUntil(t, func() bool { return h.host.Stats()["UdpNoPorts"] == total+1 })
		if v := noPorts("-s"); v != 1 {
			t.Errorf("after one datagram to a closed port: grew by %d, want 1", v)
		}
		if v := noPorts("-a"); v != total+1 { // -s above left the history as it was
			t.Errorf("-a: %d, want %d", v, total+1)
		}
		if v := noPorts(); v != 0 {
			t.Errorf("after -a updated the history: grew by %d, want 0", v)
		}
		if v := noPorts("-r"); v != total+1 {
			t.Errorf("-r: %d, want the total %d", v, total+1)
		}
		code, out, _ := runBerth(t, bin, hist, "stats", "-n", ctl)
		if code != 0 || out != "" {
			t.Errorf("stats -n: exit %d, printed %q", code, out)
		}
	})
	t.Run("capture", func(t *testing.T) {
		// The peer pings the host's UDP echo while the capture runs.
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		defer func() { cancel(); wg.Wait() }()
		u, err := h.peer.DialContext(ctx, "udp4", "10.0.0.1:7")
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				u.Write([]byte("ping"))
				time.Sleep(5 * time.Millisecond)
			}
		}()
		file := filepath.Join(t.TempDir(), "c.pcap")
		code, out, errs := runBerth(t, bin, nil, "capture", file, "--count", "6", ctl)
		if code != 0 || out != "" || !strings.Contains(errs, "6 packets written to "+file) {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
		}
		b, _ := os.ReadFile(file)
		recs := pcapRecordsOf(t, b)
		if len(recs) != 6 {
			t.Fatalf("%d records, want 6", len(recs))
		}
		uport := uint16(u.LocalAddr().(*net.UDPAddr).Port)
		for i, r := range recs {
			// IPv4, UDP, between the peer's port and 7, in either direction.
			if r[0]>>4 != 4 || r[9] != wire.ProtoUDP {
				t.Fatalf("record %d is not IPv4/UDP", i)
			}
			sp, dp := binary.BigEndian.Uint16(r[20:]), binary.BigEndian.Uint16(r[22:])
			if !(sp == uport && dp == 7 || sp == 7 && dp == uport) {
				t.Errorf("record %d: ports %d -> %d", i, sp, dp)
			}
		}
		// To standard output, stopped by --duration.
		code, out, _ = runBerth(t, bin, nil, "capture", "-", "--duration", "200ms", ctl)
		if code != 0 || len(pcapRecordsOf(t, []byte(out))) == 0 {
			t.Errorf("capture - --duration: exit %d, %d bytes", code, len(out))
		}
	})
	t.Run("not-running", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "none.sock")
		for _, cmd := range [][]string{{"ss"}, {"stats"}, {"capture", filepath.Join(t.TempDir(), "x.pcap")}} {
			code, out, errs := runBerth(t, bin, nil, append(cmd, "--control", missing)...)
			if code != 1 || out != "" || !strings.Contains(errs, "no berth running at "+missing) || !strings.Contains(errs, "berth up") {
				t.Errorf("%v: exit %d, stderr %q", cmd, code, errs)
			}
		}
		if _, err := os.Stat(filepath.Join(t.TempDir(), "x.pcap")); err == nil {
			t.Error("a failed capture left its file behind")
		}
		xdg := t.TempDir()
		code, _, errs := runBerth(t, bin, []string{"XDG_RUNTIME_DIR=" + xdg}, "ss", "--tun", "berth9")
		if want := filepath.Join(xdg, "berth", "berth9.sock"); code != 1 || !strings.Contains(errs, want) {
			t.Errorf("ss --tun berth9: exit %d, stderr %q; want the path %s", code, errs, want)
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"ss", "-q"}, "unknown flag -q"},
			{[]string{"ss", "--tcpp"}, "unknown flag --tcpp"},
			{[]string{"ss", "-4", "-6"}, "-4 and -6 exclude each other"},
			{[]string{"ss", "state", "established"}, `unexpected argument "state"`},
			{[]string{"ss", "--control"}, "flag --control needs a value (PATH)"},
			{[]string{"stats", "--zeros=1"}, "flag --zeros takes no value"},
			{[]string{"capture"}, "missing FILE"},
			{[]string{"capture", "a", "b"}, `unexpected argument "b"`},
			{[]string{"capture", "a", "--count", "0"}, `--count "0" is not a positive number`},
			{[]string{"capture", "a", "--duration", "-1s"}, `--duration "-1s" is not a positive duration`},
		} {
			code, out, errs := runBerth(t, bin, nil, c.args...)
			if code != 2 || out != "" || !strings.Contains(errs, c.want) || !strings.Contains(errs, "usage: berth "+c.args[0]) {
				t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", c.args, code, errs, c.want)
			}
		}
		for _, name := range []string{"ss", "stats", "capture"} {
			code, out, _ := runBerth(t, bin, nil, name, "-h")
			if code != 0 || !strings.Contains(out, "usage: berth "+name) || !strings.Contains(out, "Examples:") {
				t.Errorf("%s -h: exit %d\n%s", name, code, out)
			}
		}
	})
}

func pcapRecordsOf(t *testing.T, b []byte) [][]byte {
	t.Helper()
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 {
		t.Fatalf("not a pcap stream (%d bytes)", len(b))
	}
	var out [][]byte
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatal("truncated record header")
		}
		incl := int(binary.LittleEndian.Uint32(b[8:]))
		if len(b) < 16+incl {
			t.Fatal("truncated record")
		}
		out = append(out, bytes.Clone(b[16:16+incl]))
		b = b[16+incl:]
	}
	return out
}

// TestOperatorViewsUp runs berth up on a TUN device in a network namespace, connects to
// it from the kernel's side, and reads the connections back with berth ss and berth
// stats: the peer ports berth ss shows are the ports the kernel chose.
func TestOperatorViewsUp(t *testing.T) {
	ns := netns.New(t) // needs root: skips outside CI, fails in CI without it
	bin := buildBerth(t)
	ctl := filepath.Join(t.TempDir(), "up.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	up := ns.Command(ctx, bin, "up", "--tun", "bo0", "--addr", "10.77.0.2/24", "--host-addr", "10.77.0.1/24",
		"--serve", "echo", "--control", ctl)
	var upLog bytes.Buffer
	up.Stderr = &syncWriter{w: &upLog}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- up.Wait() }()
	defer func() {
		up.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			up.Process.Kill()
			<-exited
			t.Errorf("berth up did not stop after SIGTERM")
		}
	}()
	// Ready when berth ss answers and shows the echo listener.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, errs := runBerth(t, bin, nil, "ss", "-tln", "--control", ctl)
		if code == 0 && strings.Contains(out, "]:7 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth up did not come up: berth ss -tln: exit %d, %s%s; log:\n%s", code, out, errs, upLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var kernelPorts []string
	for range 3 {
		c, err := ns.Dial(ctx, "tcp", "10.77.0.2:7")
		if err != nil {
			t.Fatalf("kernel dial: %v; log:\n%s", err, upLog.String())
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("hi\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 3)); err != nil {
			t.Fatal(err)
		}
		kernelPorts = append(kernelPorts, strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port))
	}
	// A datagram to a port berth does not serve: UdpNoPorts, ICMP port unreachable.
	u, err := ns.Dial(ctx, "udp", "10.77.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("x"))
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := u.Read(make([]byte, 8)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("kernel UDP to a closed berth port: %v, want ECONNREFUSED", err)
	}
	u.Close()

	code, out, errs := runBerth(t, bin, nil, "ss", "-tni", "--control", ctl)
	if code != 0 {
		t.Fatalf("berth ss -tni: exit %d: %s", code, errs)
	}
	for _, p := range kernelPorts {
		row := regexp.MustCompile(`(?m)^tcp +ESTAB +0 +0 +10\.77\.0\.2:7 +10\.77\.0\.1:` + p + "\n\tts sack cubic wscale:\\d+,\\d+ rto:\\d+ rtt:")
		if !row.MatchString(out) {
			t.Errorf("no ESTAB row (with its -i line) for the kernel's port %s:\n%s", p, out)
		}
	}
	code, out, _ = runBerth(t, bin, nil, "stats", "--control", ctl, "TcpPassiveOpens", "TcpCurrEstab", "UdpNoPorts", "IcmpOutDestUnreachs")
	for _, want := range []string{"TcpPassiveOpens                 3", "TcpCurrEstab                    3", "UdpNoPorts                      1", "IcmpOutDestUnreachs             1"} {
		if code != 0 || !strings.Contains(out, "\n"+want+"\n") {
			t.Errorf("berth stats lacks %q (exit %d):\n%s", want, code, out)
		}
	}
}

// syncWriter serialises writes from a child's output copier and reads by the test.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestParseFlags(t *testing.T) {
	var tcp, listen, numeric bool
	var path, count string
	specs := []flagSpec{
		{short: 't', long: "tcp", bool: &tcp},
		{short: 'l', long: "listening", bool: &listen},
		{short: 'n', long: "numeric", bool: &numeric},
		{short: 'c', long: "count", value: &count, valueN: "N"},
		{long: "control", value: &path, valueN: "PATH"},
	}
	reset := func() { tcp, listen, numeric, path, count = false, false, false, "", "" }
	pos, help, err := parseFlags(specs, []string{"-tln", "file", "--control=/x", "-c5", "--", "-t"})
	if err != nil || help || !tcp || !listen || !numeric || path != "/x" || count != "5" || !slices.Equal(pos, []string{"file", "-t"}) {
		t.Errorf("got pos %v help %v err %v tcp %v listen %v numeric %v path %q count %q", pos, help, err, tcp, listen, numeric, path, count)
	}
	reset()
	if _, _, err := parseFlags(specs, []string{"-tc", "7", "--control", "/y"}); err != nil || !tcp || count != "7" || path != "/y" {
		t.Errorf("-tc 7 --control /y: %v %v %q %q", err, tcp, count, path)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-tx"}, "unknown flag -x"},
		{[]string{"--nope"}, "unknown flag --nope"},
		{[]string{"--tcp=yes"}, "flag --tcp takes no value"},
		{[]string{"-c"}, "flag -c needs a value (N)"},
		{[]string{"--control"}, "flag --control needs a value (PATH)"},
	} {
		reset()
		if _, _, err := parseFlags(specs, c.args); err == nil || err.Error() != c.want {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	if _, help, _ := parseFlags(specs, []string{"-t", "--help"}); !help {
		t.Error("--help not seen")
	}
}

func sock(netid, state, local, peer string) control.Socket {
	s := control.Socket{Netid: netid, State: state, Local: netip.MustParseAddrPort(local)}
	if peer != "" {
		s.Peer = netip.MustParseAddrPort(peer)
	}
	return s
}

func TestSSFilterAndTable(t *testing.T) {
	socks := []control.Socket{
		sock("udp", "UNCONN", "0.0.0.0:53", ""),
		sock("tcp", "ESTAB", "10.0.0.2:80", "10.0.0.1:50000"),
		sock("tcp", "LISTEN", "[::]:80", ""),
		sock("tcp", "TIME-WAIT", "[fd00::2]:22", "[fd00::1]:61000"),
		sock("udp", "ESTAB", "10.0.0.1:49999", "10.0.0.2:53"),
		sock("tcp", "LISTEN", "0.0.0.0:22", ""),
	}
	states := func(o ssOptions) []string {
		var out []string
		for _, s := range sortSockets(o.filter(socks)) {
			out = append(out, s.Netid+" "+s.State+" "+s.Local.String())
		}
		return out
	}
	for _, c := range []struct {
		o    ssOptions
		want []string
	}{
		{ssOptions{}, []string{"tcp ESTAB 10.0.0.2:80", "udp ESTAB 10.0.0.1:49999"}},
		{ssOptions{listening: true}, []string{"tcp LISTEN 0.0.0.0:22", "tcp LISTEN [::]:80", "udp UNCONN 0.0.0.0:53"}},
		{ssOptions{tcp: true, all: true}, []string{"tcp LISTEN 0.0.0.0:22", "tcp TIME-WAIT [fd00::2]:22", "tcp LISTEN [::]:80", "tcp ESTAB 10.0.0.2:80"}},
		{ssOptions{udp: true, all: true, v4: true}, []string{"udp UNCONN 0.0.0.0:53", "udp ESTAB 10.0.0.1:49999"}},
		{ssOptions{all: true, v6: true}, []string{"tcp TIME-WAIT [fd00::2]:22", "tcp LISTEN [::]:80"}},
	} {
		if got := states(c.o); !slices.Equal(got, c.want) {
			t.Errorf("%+v: %q, want %q", c.o, got, c.want)
		}
	}
	var b bytes.Buffer
	writeSocketTable(&b, sortSockets(socks), ssOptions{all: true}, nil)
	want := `Netid State     Recv-Q Send-Q Local Address:Port   Peer Address:Port
tcp   LISTEN    0      0            0.0.0.0:ssh         0.0.0.0:*
tcp   TIME-WAIT 0      0          [fd00::2]:ssh       [fd00::1]:61000
tcp   LISTEN    0      0               [::]:http           [::]:*
tcp   ESTAB     0      0           10.0.0.2:http       10.0.0.1:50000
udp   UNCONN    0      0            0.0.0.0:domain      0.0.0.0:*
udp   ESTAB     0      0           10.0.0.1:49999      10.0.0.2:domain
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	// Colour codes do not change the layout.
	b.Reset()
	p := &palette{header: func(s string) string { return "<" + s + ">" }, state: func(s string) string { return "<" + s + ">" },
		service: func(s string) string { return "<" + s + ">" }}
	writeSocketTable(&b, sortSockets(socks), ssOptions{all: true}, p)
	if plain := strings.NewReplacer("<", "", ">", "").Replace(b.String()); plain != want {
		t.Errorf("coloured table, colours removed:\n%s\nwant:\n%s", plain, want)
	}
}

func TestTCPInfoLine(t *testing.T) {
	ti := &control.TCPInfo{RTT: 1234 * time.Microsecond, RTTVar: 617 * time.Microsecond, RTO: 204 * time.Millisecond,
		MSS: 1460, CWnd: 14600, SSThresh: 1 << 30, SndWnd: 65535, RcvWnd: 262144, SndWScale: -1, RcvWScale: -1, Retrans: 3, Backoff: 1}
	if got, want := tcpInfoLine(ti), "rto:204 rtt:1.234/0.617 mss:1460 cwnd:10 snd_wnd:65535 rcv_wnd:262144 retrans:1/3"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	ti.SSThresh, ti.SndWScale, ti.RcvWScale = 7300, 7, 8
	if got, want := tcpInfoLine(ti), "wscale:7,8 rto:204 rtt:1.234/0.617 mss:1460 cwnd:10 ssthresh:5 snd_wnd:65535 rcv_wnd:262144 retrans:1/3"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	ti.TS, ti.SACK, ti.Congestion = true, true, "cubic"
	if got, want := tcpInfoLine(ti), "ts sack cubic wscale:7,8 rto:204 rtt:1.234/0.617 mss:1460 cwnd:10 ssthresh:5 snd_wnd:65535 rcv_wnd:262144 retrans:1/3"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	for d, want := range map[time.Duration]string{
		200 * time.Millisecond:                  "200ms",
		14*time.Second + 900*time.Millisecond:   "14sec",
		9*time.Minute + 59*time.Second + 999999: "9min59sec",
	} {
		if got := ssDuration(d); got != want {
			t.Errorf("ssDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
