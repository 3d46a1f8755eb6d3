//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/control"
	"github.com/berthnet/berth/internal/testenv"
)

// TestRunControl starts a real berth run session whose COMMAND holds a TCP connection to
// the host open, and reads the session through its control socket, at its default path
// in the control socket directory (XDG_RUNTIME_DIR/berth here): ss shows the forwarded
// connection, stats the session stack's counters (UDP's among them), capture records its
// packets, forward ls answers on the same socket. Afterwards the socket is gone. The
// clients name the socket (--control): other berths may run on this machine, and
// without it they would find several.
func TestRunControl(t *testing.T) {
	testenv.NeedRoot(t)
	for _, prog := range []string{"ip", "bash"} {
		_, err := exec.LookPath(prog)
		testenv.NeedCommand(t, prog, err)
	}
	bin := filepath.Join(t.TempDir(), "berth")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	runtimeDir, err := os.MkdirTemp("", "brc") // short: unix socket paths end at 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(runtimeDir)
	env := append(os.Environ(), "XDG_RUNTIME_DIR="+runtimeDir)
	var sockPath string // known once berth run has started
	berth := func(args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{args[0], "--control", sockPath}, args[1:]...)...)
		cmd.Env = env
		return runBin(t, cmd)
	}

	// The host's server: it takes one connection and holds it open; the test writes to it
	// and closes it, which ends COMMAND.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()

	// COMMAND (bash, for its /dev/udp and /dev/tcp): a datagram to a closed port of the
	// berth stack's own address (10.0.2.1), which its UDP answers with a port unreachable
	// and counts as UdpNoPorts, then a TCP connection through the gateway to the host's
	// server, read until the server closes it.
	script := fmt.Sprintf("echo x >/dev/udp/10.0.2.1/9; exec 3<>/dev/tcp/10.0.2.2/%d; exec cat <&3", port)
	run := exec.Command(bin, "run", "--no-ipv6", "--", "bash", "-c", script)
	run.Env = env
	var runOut, runErr bytes.Buffer
	run.Stdout, run.Stderr = &runOut, &runErr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			run.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				run.Process.Kill()
				<-exited
			}
		}
	}()
	var host net.Conn
	select {
	case host = <-accepted:
	case err := <-exited:
		t.Fatalf("berth run ended before connecting: %v\n%s%s", err, runOut.String(), runErr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("no connection from the namespace; berth run: %s", runErr.String())
	}
	defer host.Close()
	sockPath = filepath.Join(runtimeDir, "berth", fmt.Sprintf("forward-%d.sock", run.Process.Pid))
	if fi, err := os.Stat(sockPath); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no control socket at the default path %s: %v", sockPath, err)
	}

	// ss: the berth side of the forwarded connection, local address the destination the
	// namespace dialled, peer the namespace. The host accepted before berth answers the
	// namespace's SYN, so the connection may need a moment to show as ESTAB.
	local := netip.AddrPortFrom(netip.MustParseAddr("10.0.2.2"), uint16(port))
	var socks []control.Socket
	var ssOut string
	found := false
	for deadline := time.Now().Add(10 * time.Second); !found && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		code, out, errs := berth("ss", "-tn", "--json")
		if code != 0 {
			t.Fatalf("berth ss: exit %d, %s", code, errs)
		}
		ssOut = out
		socks = nil
		if err := json.Unmarshal([]byte(out), &socks); err != nil {
			t.Fatalf("berth ss --json: %v\n%s", err, out)
		}
		for _, s := range socks {
			found = found || (s.Netid == "tcp" && s.State == "ESTAB" && s.Local == local &&
				s.Peer.Addr() == netip.MustParseAddr("10.0.2.100"))
		}
	}
	if !found {
		t.Errorf("berth ss: no ESTAB connection %s <-> 10.0.2.100 in\n%s", local, ssOut)
	}
	if code, out, errs := berth("ss", "-tn"); code != 0 || !strings.Contains(out, local.String()) || !strings.Contains(out, "ESTAB") {
		t.Errorf("berth ss -tn: exit %d, %q, %s", code, out, errs)
	}

	// stats: the session stack's counters, UDP's included (before, the forwarder's UDP
	// kept them private).
	counters := map[string]uint64{}
	for deadline := time.Now().Add(10 * time.Second); counters["UdpNoPorts"] == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		// -a: totals, -s: no history file left behind.
		code, out, errs := berth("stats", "--json", "-z", "-a", "-s")
		if code != 0 {
			t.Fatalf("berth stats: exit %d, %s", code, errs)
		}
		var doc map[string]map[string]uint64
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("berth stats --json: %v\n%s", err, out)
		}
		counters = doc["berth"]
	}
	for _, name := range []string{"IpInReceives", "UdpNoPorts", "IcmpOutDestUnreachs", "TcpCurrEstab", "ForwardTCPOutbound", "ForwardTCPFlows"} {
		if counters[name] == 0 {
			t.Errorf("berth stats: %s is %d, want at least 1", name, counters[name])
		}
	}
	for _, name := range []string{"UdpInDatagrams", "TcpActiveOpens"} {
		if _, ok := counters[name]; !ok {
			t.Errorf("berth stats: no %s", name)
		}
	}

	// capture: the host writes to the connection until the capture has its packets; what
	// it records is the forwarded connection's segments on the namespace's device.
	pcapFile := filepath.Join(t.TempDir(), "run.pcap")
	capture := exec.Command(bin, "capture", pcapFile, "--count", "4", "--duration", "20s", "--control", sockPath)
	capture.Env = env
	var capOut, capErr bytes.Buffer
	capture.Stdout, capture.Stderr = &capOut, &capErr
	if err := capture.Start(); err != nil {
		t.Fatal(err)
	}
	captured := make(chan error, 1)
	go func() { captured <- capture.Wait() }()
	var capErrV error
writing:
	for {
		select {
		case capErrV = <-captured:
			break writing
		case <-time.After(50 * time.Millisecond):
			host.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := host.Write([]byte("hello\n")); err != nil {
				t.Fatalf("writing to the namespace: %v", err)
			}
		}
	}
	if capErrV != nil {
		t.Fatalf("berth capture: %v, %s", capErrV, capErr.String())
	}
	recs := readPcap(t, pcapFile)
	if len(recs) != 4 {
		t.Fatalf("capture: %d records, want 4; berth capture: %s", len(recs), capErr.String())
	}
	seen := false
	for _, p := range recs {
		// An IPv4 TCP segment between the gateway's port and the namespace.
		if len(p) >= 24 && p[0]>>4 == 4 && p[9] == 6 {
			ihl := int(p[0]&15) * 4
			src, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
			sport, dport := binary.BigEndian.Uint16(p[ihl:]), binary.BigEndian.Uint16(p[ihl+2:])
			seen = seen || (src == local.Addr() && int(sport) == port && dst.String() == "10.0.2.100") ||
				(dst == local.Addr() && int(dport) == port && src.String() == "10.0.2.100")
		}
	}
	if !seen {
		t.Errorf("capture: no segment of the connection to %s among %d records", local, len(recs))
	}

	// The same socket serves berth forward.
	if code, _, errs := berth("forward", "ls"); code != 0 {
		t.Errorf("berth forward ls: exit %d, %s", code, errs)
	}

	// Closing the host's side ends COMMAND, and with it berth run, which removes its socket.
	host.Close()
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("berth run: %v\n%s", err, runErr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("berth run did not end after the host closed the connection")
	}
	if _, err := os.Stat(sockPath); !os.IsNotExist(err) {
		t.Errorf("control socket %s after berth run ended: %v", sockPath, err)
	}
	if code, _, errs := berth("ss"); code != 1 || !strings.Contains(errs, "no berth running at "+sockPath) {
		t.Errorf("berth ss after berth run ended: exit %d, %s", code, errs)
	}
}

// readPcap returns the packets of a pcap file (microsecond or nanosecond, either byte
// order).
func readPcap(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 {
		t.Fatalf("%s: %d bytes, no pcap header", path, len(b))
	}
	var order binary.ByteOrder = binary.LittleEndian
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
	case 0xd4c3b2a1, 0x4d3cb2a1:
		order = binary.BigEndian
	default:
		t.Fatalf("%s: not a pcap file (magic %x)", path, b[:4])
	}
	var recs [][]byte
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatalf("%s: truncated record header", path)
		}
		n := int(order.Uint32(b[8:]))
		if len(b) < 16+n {
			t.Fatalf("%s: truncated record", path)
		}
		recs = append(recs, b[16:16+n])
		b = b[16+n:]
	}
	return recs
}
