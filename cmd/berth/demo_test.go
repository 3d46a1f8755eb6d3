package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/berthnet/berth/wire"
)

// buildBerth builds the command into a temporary directory.
func buildBerth(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "berth")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runBerth runs the binary with args (and extra environment) and returns its exit
// status and output.
func runBerth(t *testing.T, bin string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%v: %v", args, err)
	}
	return code, o.String(), e.String()
}

// demoJSON is the part of the --json report the tests read.
type demoJSON struct {
	Clients   int    `json:"clients"`
	Family    string `json:"family"`
	Client    string `json:"client"`
	Server    string `json:"server"`
	Exchanges []struct {
		Client  int    `json:"client"`
		Service string `json:"service"`
		Network string `json:"network"`
		Local   string `json:"local"`
		Remote  string `json:"remote"`
		OK      bool   `json:"ok"`
		Error   string `json:"error"`
	} `json:"exchanges"`
	Probes []struct {
		Network string `json:"network"`
		Errno   string `json:"errno"`
	} `json:"probes"`
	UDPPeers []struct {
		Service string `json:"service"`
		Peer    string `json:"peer"`
	} `json:"udp_peers"`
	ServerSockets  []sockJSON `json:"server_sockets"`
	ClientSockets  []sockJSON `json:"client_sockets"`
	ServerCounters []struct {
		Name  string `json:"name"`
		Value uint64 `json:"value"`
	} `json:"server_counters"`
	ClientCounters []struct {
		Name  string `json:"name"`
		Value uint64 `json:"value"`
	} `json:"client_counters"`
}

type sockJSON struct {
	Netid string `json:"netid"`
	State string `json:"state"`
	Local string `json:"local"`
	Peer  string `json:"peer"`
}

func splitPort(t *testing.T, ap string) (string, int) {
	t.Helper()
	i := strings.LastIndexByte(ap, ':')
	if i < 0 {
		t.Fatalf("address %q has no port", ap)
	}
	p, err := strconv.Atoi(ap[i+1:])
	if err != nil {
		t.Fatalf("address %q: %v", ap, err)
	}
	return strings.Trim(ap[:i], "[]"), p
}

func TestDemo(t *testing.T) {
	bin := buildBerth(t)
	t.Run("json", func(t *testing.T) { testDemoJSON(t, bin, false) })
	t.Run("json-ipv6", func(t *testing.T) { testDemoJSON(t, bin, true) })
	t.Run("text", func(t *testing.T) { testDemoText(t, bin) })
	t.Run("impaired-pcap", func(t *testing.T) { testDemoPcap(t, bin) })
	t.Run("usage", func(t *testing.T) { testDemoUsage(t, bin) })
}

// testDemoJSON checks the story the demo tells: the server's sockets on one well-known
// port differ only by the peer's port, and those are the source ports the client's
// stack chose.
func testDemoJSON(t *testing.T, bin string, v6 bool) {
	args := []string{"demo", "--clients", "4", "--json"}
	serverAddr, clientAddr := "10.0.0.2", "10.0.0.1"
	if v6 {
		args = append(args, "-6")
		serverAddr, clientAddr = "fd00::2", "fd00::1"
	}
	code, stdout, stderr := runBerth(t, bin, nil, args...)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var rep demoJSON
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, stdout)
	}
	if rep.Clients != 4 || rep.Server != serverAddr || rep.Client != clientAddr {
		t.Errorf("clients %d server %s client %s", rep.Clients, rep.Server, rep.Client)
	}
	if len(rep.Exchanges) != 16 {
		t.Fatalf("%d exchanges, want 16 (4 clients x echo, daytime, http, echo/udp)", len(rep.Exchanges))
	}
	// The client's chosen source ports, per service.
	chosen := map[string][]int{} // "echo/tcp" -> ports
	all := map[int]bool{}
	for _, e := range rep.Exchanges {
		if !e.OK {
			t.Errorf("exchange %+v failed", e)
			continue
		}
		a, p := splitPort(t, e.Local)
		if a != clientAddr || p < 49152 {
			t.Errorf("exchange from %s: want %s and an ephemeral port (49152-65535)", e.Local, clientAddr)
		}
		if all[p] {
			t.Errorf("source port %d chosen twice", p)
		}
		all[p] = true
		chosen[e.Service+"/"+e.Network] = append(chosen[e.Service+"/"+e.Network], p)
	}
	// The server's table: each TCP service port has its listener and one connection per
	// client, whose peer ports are exactly the ports the client chose.
	for svc, port := range map[string]int{"echo": 7, "daytime": 13, "http": 80} {
		listeners := 0
		var peers []int
		for _, s := range rep.ServerSockets {
			if s.Netid != "tcp" {
				continue
			}
			la, lp := splitPort(t, s.Local)
			if lp != port {
				continue
			}
			if s.State == "LISTEN" {
				listeners++
				continue
			}
			if la != serverAddr {
				t.Errorf("server socket %+v: local address not %s", s, serverAddr)
			}
			pa, pp := splitPort(t, s.Peer)
			if pa != clientAddr {
				t.Errorf("server socket %+v: peer not %s", s, clientAddr)
			}
			want := "ESTAB"
			if svc == "daytime" {
				want = "TIME-WAIT" // the daytime server closes first (RFC 867)
			}
			if s.State != want {
				t.Errorf("server socket %+v: state %s, want %s", s, s.State, want)
			}
			peers = append(peers, pp)
		}
		if listeners != 1 {
			t.Errorf("%s: %d listeners on port %d, want 1", svc, listeners, port)
		}
		slices.Sort(peers)
		want := slices.Sorted(slices.Values(chosen[svc+"/tcp"]))
		if len(peers) != 4 || !slices.Equal(peers, want) {
			t.Errorf("%s: server connections on port %d have peer ports %v; the client chose %v", svc, port, peers, want)
		}
	}
	// UDP: one unconnected socket on port 7 heard from every client's port.
	unconn := 0
	for _, s := range rep.ServerSockets {
		if s.Netid == "udp" && strings.HasSuffix(s.Local, ":7") && s.State == "UNCONN" && s.Peer == "" {
			unconn++
		}
	}
	if unconn != 1 {
		t.Errorf("%d unconnected UDP sockets on port 7, want 1", unconn)
	}
	var heard []int
	for _, p := range rep.UDPPeers {
		if p.Service == "echo" {
			_, pp := splitPort(t, p.Peer)
			heard = append(heard, pp)
		}
	}
	slices.Sort(heard)
	if want := slices.Sorted(slices.Values(chosen["echo/udp"])); !slices.Equal(heard, want) {
		t.Errorf("the UDP echo socket heard from ports %v; the client sent from %v", heard, want)
	}
	// The client's own table shows the connections it still holds, from those ports.
	for _, s := range rep.ClientSockets {
		if s.State == "ESTAB" {
			_, p := splitPort(t, s.Local)
			if !all[p] {
				t.Errorf("client socket %+v: port not among the exchanges' ports", s)
			}
		}
	}
	// Closed ports: refused, and counted on both sides.
	if len(rep.Probes) != 2 || rep.Probes[0].Errno != "ECONNREFUSED" || rep.Probes[1].Errno != "ECONNREFUSED" {
		t.Errorf("probes %+v, want tcp and udp refused", rep.Probes)
	}
	counters := func(cs []struct {
		Name  string `json:"name"`
		Value uint64 `json:"value"`
	}) map[string]uint64 {
		m := map[string]uint64{}
		for _, c := range cs {
			m[c.Name] = c.Value
		}
		return m
	}
	sc, cc := counters(rep.ServerCounters), counters(rep.ClientCounters)
	icmp := "Icmp"
	if v6 {
		icmp = "Icmp6"
	}
	for _, c := range []struct {
		name string
		got  uint64
		want uint64
	}{
		{"server TcpPassiveOpens", sc["TcpPassiveOpens"], 12},
		{"client TcpActiveOpens", cc["TcpActiveOpens"], 13}, // 12 and the probe
		{"client TcpAttemptFails", cc["TcpAttemptFails"], 1},
		{"server TcpOutRsts", sc["TcpOutRsts"], 1},
		{"server UdpNoPorts", sc["UdpNoPorts"], 1},
		{"server " + icmp + "OutDestUnreachs", sc[icmp+"OutDestUnreachs"], 1},
		{"client " + icmp + "InDestUnreachs", cc[icmp+"InDestUnreachs"], 1},
		{"server UdpInDatagrams", sc["UdpInDatagrams"], 4},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

var (
	ansiRE    = regexp.MustCompile("\x1b\\[")
	headerRE  = regexp.MustCompile(`(?m)^Netid +State +Recv-Q +Send-Q +Local Address:Port +Peer Address:Port$`)
	echoRowRE = regexp.MustCompile(`(?m)^tcp +ESTAB +0 +0 +10\.0\.0\.2:echo +10\.0\.0\.1:(\d+)$`)
	chosenRE  = regexp.MustCompile(`(?m)^  \d+ +echo/tcp +10\.0\.0\.1:(\d+) +-> 10\.0\.0\.2:7 +echoed`)
)

func testDemoText(t *testing.T, bin string) {
	code, stdout, stderr := runBerth(t, bin, nil, "demo", "--clients", "3")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q\n%s", code, stderr, stdout)
	}
	if ansiRE.MatchString(stdout) {
		t.Error("colour escapes in output that is not a terminal")
	}
	for i, line := range strings.Split(stdout, "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Errorf("line %d has %d columns (> 80): %q", i+1, n, line)
		}
	}
	if !headerRE.MatchString(stdout) {
		t.Errorf("no ss header line:\n%s", stdout)
	}
	var rows, chosen []int
	for _, m := range echoRowRE.FindAllStringSubmatch(stdout, -1) {
		p, _ := strconv.Atoi(m[1])
		rows = append(rows, p)
	}
	for _, m := range chosenRE.FindAllStringSubmatch(stdout, -1) {
		p, _ := strconv.Atoi(m[1])
		chosen = append(chosen, p)
	}
	slices.Sort(rows)
	slices.Sort(chosen)
	if len(rows) != 3 || !slices.Equal(rows, chosen) {
		t.Errorf("server rows for 10.0.0.2:echo have peer ports %v; the multiplexing lines show %v:\n%s", rows, chosen, stdout)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^tcp +LISTEN +0 +\d+ +\[::\]:echo +\[::\]:\*$`),
		regexp.MustCompile(`(?m)^tcp +TIME-WAIT +0 +0 +10\.0\.0\.2:daytime +10\.0\.0\.1:\d+$`),
		regexp.MustCompile(`(?m)^tcp +ESTAB +0 +0 +10\.0\.0\.2:http +10\.0\.0\.1:\d+$`),
		regexp.MustCompile(`(?m)^udp +UNCONN +0 +0 +\[::\]:echo +\[::\]:\*$`),
		regexp.MustCompile(`(?m)^  echo 7/udp: 3 peers on one socket, from ports \d+ \d+ \d+$`),
		regexp.MustCompile(`(?m)^  tcp: connection refused \(the server's stack sent a TCP RST\)$`),
		regexp.MustCompile(`(?m)^  udp: connection refused \(the server's stack sent ICMP port unreachable\)$`),
		regexp.MustCompile(`(?m)^  TcpPassiveOpens +0 +9$`),
		regexp.MustCompile(`(?m)^  UdpNoPorts +0 +1$`),
	} {
		if !want.MatchString(stdout) {
			t.Errorf("output lacks a line matching %s:\n%s", want, stdout)
		}
	}
}

func testDemoPcap(t *testing.T, bin string) {
	file := filepath.Join(t.TempDir(), "demo.pcap")
	code, stdout, stderr := runBerth(t, bin, nil, "demo", "--clients", "2", "--loss", "5%", "--delay", "5ms", "--seed", "7", "--pcap", file, "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q\n%s", code, stderr, stdout)
	}
	var rep demoJSON
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(b[20:]) != 101 {
		t.Fatalf("%s is not a LINKTYPE_RAW pcap file", file)
	}
	// Every record is an IPv4 packet from or to the client; the SYNs of the client's
	// connections to port 7 are there, from the ports the report names.
	syns := map[int]bool{}
	n := 0
	for r := b[24:]; len(r) > 0; n++ {
		if len(r) < 16 {
			t.Fatal("truncated record")
		}
		incl := int(binary.LittleEndian.Uint32(r[8:]))
		pkt := r[16 : 16+incl]
		r = r[16+incl:]
		if pkt[0]>>4 != 4 {
			t.Fatalf("record %d is not IPv4", n)
		}
		ihl := int(pkt[0]&15) * 4
		if pkt[9] == wire.ProtoTCP && pkt[ihl+13]&0x12 == 0x02 { // TCP SYN without ACK
			syns[int(binary.BigEndian.Uint16(pkt[ihl:]))] = true
		}
	}
	for _, e := range rep.Exchanges {
		if !e.OK {
			t.Errorf("exchange %+v failed with 5%% loss", e)
		}
		if e.Network == "tcp" {
			if _, p := splitPort(t, e.Local); !syns[p] {
				t.Errorf("no SYN from port %d in the capture", p)
			}
		}
	}
}

func testDemoUsage(t *testing.T, bin string) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--clients", "0"}, 2, `--clients "0": want a number from 1 to 64`},
		{[]string{"--clients", "many"}, 2, `--clients "many"`},
		{[]string{"--clients"}, 2, "flag --clients needs a value (N)"},
		{[]string{"--loss", "101"}, 2, `--loss "101": want a percentage from 0 to 90`},
		{[]string{"--delay", "5s"}, 2, `--delay "5s": want a duration from 0 to 2s`},
		{[]string{"--delay", "soon"}, 2, `--delay "soon"`},
		{[]string{"-4", "-6"}, 2, "-4 and -6 exclude each other"},
		{[]string{"--bogus"}, 2, "unknown flag --bogus"},
		{[]string{"-x"}, 2, "unknown flag -x"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--pcap", "/nonexistent-dir/demo.pcap"}, 1, "berth demo: open /nonexistent-dir/demo.pcap: no such file or directory"},
	} {
		code, stdout, stderr := runBerth(t, bin, nil, append([]string{"demo"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("demo %v: exit %d, stderr %q, stdout %q; want exit %d and %q", c.args, code, stderr, stdout, c.code, c.want)
		}
		if c.code == 2 && !strings.Contains(stderr, "usage: berth demo") {
			t.Errorf("demo %v: no usage line in %q", c.args, stderr)
		}
	}
	for _, args := range [][]string{{"demo", "-h"}, {"demo", "--help"}, {"help", "demo"}} {
		code, stdout, _ := runBerth(t, bin, nil, args...)
		if code != 0 || !strings.Contains(stdout, "usage: berth demo") || !strings.Contains(stdout, "Examples:\n  berth demo\n") {
			t.Errorf("%v: exit %d\n%s", args, code, stdout)
		}
	}
}

// TestDemoInProcess runs the demo with colour in this process: the colours do not change
// the text, and closing the demo's stacks leaves no goroutine behind.
func TestDemoInProcess(t *testing.T) {
	base := runtime.NumGoroutine()
	var b bytes.Buffer
	rep, err := demo(context.Background(), &demoConfig{clients: 2, seed: 1, color: true}, &b)
	if err != nil {
		t.Fatal(err)
	}
	if rep.failures() != 0 {
		t.Errorf("%d exchanges failed", rep.failures())
	}
	out := b.String()
	if !strings.Contains(out, "\x1b[1mMultiplexing:\x1b[0m") || !strings.Contains(out, ":\x1b[36mecho\x1b[0m") {
		t.Errorf("no colour:\n%q", out)
	}
	plain := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(out, "")
	if !headerRE.MatchString(plain) || !regexp.MustCompile(`(?m)^tcp +ESTAB +0 +0 +10\.0\.0\.2:echo +10\.0\.0\.1:\d+$`).MatchString(plain) {
		t.Errorf("table misaligned with colour:\n%s", plain)
	}
	for i, line := range strings.Split(plain, "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Errorf("line %d has %d columns: %q", i+1, n, line)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the demo, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
