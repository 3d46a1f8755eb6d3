//go:build linux

package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/services"
)

// tapBulk is the size of each transfer through berth's TAP and VM modes.
const tapBulk = 64 << 20

// sumServer serves GET /N (N bytes of services' pattern) and POST /sum (the SHA-256 of
// the body, in hex, and its length) on addr of the host's loopback; it returns the port.
func sumServer(t *testing.T, addr string) int {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%x %d\n", h.Sum(nil), n)
			return
		}
		var n int64
		fmt.Sscanf(r.URL.Path, "/%d", &n)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		io.Copy(w, services.NewPatternReader(n))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// transferScript is a shell script for the namespace (or guest) side: it pings both
// gateways, prints the neighbour entries for them, downloads tapBulk bytes from the host
// and uploads upload to it, over IPv4 and IPv6, printing SHA-256 sums.
func transferScript(p4, p6 int, upload, dev string) string {
	return fmt.Sprintf(`set -e
ping -c 2 -i 0.2 -W 3 10.0.2.2 >/dev/null
ping -6 -c 2 -i 0.2 -W 3 fd00::2 >/dev/null
echo "neigh4 $(ip neigh show 10.0.2.2 dev %[5]s)"
echo "neigh6 $(ip neigh show fd00::2 dev %[5]s)"
echo "down4 $(curl -sS --max-time 120 http://10.0.2.2:%[1]d/%[4]d | sha256sum)"
echo "down6 $(curl -sS --max-time 120 'http://[fd00::2]:%[2]d/%[4]d' | sha256sum)"
echo "up4 $(curl -sS --max-time 120 --data-binary @%[3]s http://10.0.2.2:%[1]d/sum)"
echo "up6 $(curl -sS --max-time 120 --data-binary @%[3]s 'http://[fd00::2]:%[2]d/sum')"
`, p4, p6, upload, tapBulk, dev)
}

// checkTransfers checks transferScript's output: both gateways REACHABLE at berth's
// session MAC, and every sum right.
func checkTransfers(t *testing.T, out string, upSum string) {
	t.Helper()
	h := sha256.New()
	io.Copy(h, services.NewPatternReader(tapBulk))
	downSum := hex.EncodeToString(h.Sum(nil))
	mac := net.HardwareAddr(forward.SessionMAC[:]).String()
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, " "); ok {
			lines[k] = strings.TrimSpace(v)
		}
	}
	for _, k := range []string{"neigh4", "neigh6"} {
		if !strings.Contains(lines[k], mac) || !strings.Contains(lines[k], "REACHABLE") {
			t.Errorf("%s: %q, want %s REACHABLE", k, lines[k], mac)
		}
	}
	for k, want := range map[string]string{"down4": downSum, "down6": downSum, "up4": upSum, "up6": upSum} {
		if !strings.HasPrefix(lines[k], want) {
			t.Errorf("%s: SHA-256 %q, want %s", k, lines[k], want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// uploadFile writes tapBulk random bytes to a file and returns its name and SHA-256.
func uploadFile(t *testing.T) (string, string) {
	t.Helper()
	b := make([]byte, tapBulk)
	rand.Read(b)
	name := filepath.Join(t.TempDir(), "upload")
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return name, hex.EncodeToString(s[:])
}

func needTAPTools(t *testing.T, progs ...string) {
	t.Helper()
	testenv.NeedRoot(t)
	for _, prog := range append([]string{"ip", "curl", "sh", "sha256sum", "ping"}, progs...) {
		_, err := exec.LookPath(prog)
		testenv.NeedCommand(t, prog, err)
	}
}

// TestRunTAP: `berth run --tap` gives the namespace a TAP device: the kernel there
// resolves the gateways by ARP and ND to berth's MAC (REACHABLE), pings them, and moves
// 64 MiB each way over IPv4 and IPv6 to the host's loopback, byte-exact. The namespace
// also has an address by SLAAC from berth's router advertisements.
func TestRunTAP(t *testing.T) {
	needTAPTools(t)
	bin := buildBerth(t)
	p4, p6 := sumServer(t, "127.0.0.1:0"), sumServer(t, "[::1]:0")
	up, upSum := uploadFile(t)
	script := transferScript(p4, p6, up, "berth0") +
		// SLAAC: an address in fd00::/64 besides the configured fd00::100.
		"sleep 1; echo \"slaac $(ip -6 addr show dev berth0 scope global dynamic)\"\n"
	code, out, errs := runBin(t, exec.Command(bin, "run", "--tap", "--control", "none", "--", "sh", "-c", script))
	if code != 0 {
		t.Fatalf("berth run --tap: exit %d\n%s\n%s", code, out, errs)
	}
	checkTransfers(t, out, upSum)
	if !strings.Contains(out, "slaac") || !strings.Contains(out[strings.Index(out, "slaac"):], "inet6 fd00::") {
		t.Errorf("no SLAAC address in the namespace:\n%s", out)
	}
}

// TestAttachTAP: `berth attach --tap` serves a namespace the test made, with the same
// traffic as TestRunTAP; berth stats shows the Ethernet layer's ARP and ND counters; it
// ends on SIGTERM.
func TestAttachTAP(t *testing.T) {
	needTAPTools(t)
	bin := buildBerth(t)
	p4, p6 := sumServer(t, "127.0.0.1:0"), sumServer(t, "[::1]:0")
	up, upSum := uploadFile(t)
	name := fmt.Sprintf("tap-attach-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	sockDir, err := os.MkdirTemp("", "bat") // short: UNIX socket paths end at 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "c.sock")
	cmd := exec.Command(bin, "attach", "--tap", "--netns", name, "--control", sock)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if exec.Command("ip", "-n", name, "link", "show", "berth0", "up").Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth0 did not come up; berth: %s", errb.String())
		}
	}
	out, err := exec.Command("ip", "netns", "exec", name, "sh", "-c", transferScript(p4, p6, up, "berth0")).CombinedOutput()
	if err != nil {
		t.Fatalf("transfers in the attached namespace: %v\n%s\nberth: %s", err, out, errb.String())
	}
	checkTransfers(t, string(out), upSum)
	code, stats, errs := runBin(t, exec.Command(bin, "stats", "--control", sock))
	if code != 0 {
		t.Fatalf("berth stats: exit %d, %s", code, errs)
	}
	for _, name := range []string{"EtherInFrames", "ArpInRequests", "ArpOutReplies", "Icmp6InNeighborSolicits", "Icmp6OutNeighborAdvertisements", "Icmp6OutRouterAdvertisements"} {
		if !regexp.MustCompile(`(?m)^` + name + `\s+[1-9]`).MatchString(stats) {
			t.Errorf("berth stats: %s not counted\n%s", name, stats)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("berth attach --tap: %v; %s", err, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("berth attach --tap did not end after SIGTERM")
	}
}

// TestUpTAP: `berth up --tap` runs a stack on a TAP device that the kernel reaches by
// ARP; --pcap records the frames as LINKTYPE_ETHERNET, ARP included (tshark decodes it).
func TestUpTAP(t *testing.T) {
	needTAPTools(t, "tshark")
	bin := buildBerth(t)
	dev := fmt.Sprintf("tapup%d", os.Getpid()%10000)
	pcapFile := filepath.Join(t.TempDir(), "up.pcap")
	cmd := exec.Command(bin, "up", "--tap", dev, "--addr", "10.79.0.2/24", "--host-addr", "10.79.0.1/24",
		"--pcap", pcapFile, "--control", "none", "--serve", "echo")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); exec.Command("ip", "link", "del", dev).Run() })
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(errb.String(), "msg=up"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("berth up --tap did not come up: %s", errb.String())
		}
	}
	out, err := exec.Command("ping", "-c", "2", "-i", "0.2", "-W", "3", "-I", dev, "10.79.0.2").CombinedOutput()
	if err != nil {
		t.Fatalf("ping over the TAP device: %v\n%s\n%s", err, out, errb.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	recs := strings.Join(tsharkFields(t, pcapFile, "eth.type", "arp.opcode", "icmp.type"), "\n")
	// An ARP request from the kernel and berth's reply; echo requests and replies.
	for _, want := range []string{"0x0806|1|", "0x0806|2|", "0x0800||8", "0x0800||0"} {
		if !strings.Contains(recs, want) {
			t.Errorf("capture has no %q record:\n%s", want, recs)
		}
	}
}

// tsharkFields returns tshark's field lines for the records of file.
func tsharkFields(t *testing.T, file string, fields ...string) []string {
	t.Helper()
	args := []string{"-r", file, "-T", "fields", "-E", "separator=|"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(l, "|") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestRunTAPDHCP: `berth run --tap --dhcp` leaves berth0 unconfigured; busybox's udhcpc in
// the namespace gets its lease from berth's DHCP server (the namespace's address, the
// gateway as router, the DNS address, the MTU), and the kernel configures IPv6 by SLAAC
// from berth's router advertisements; then both families reach the host's loopback.
func TestRunTAPDHCP(t *testing.T) {
	needTAPTools(t, "busybox")
	bin := buildBerth(t)
	p4, p6 := sumServer(t, "127.0.0.1:0"), sumServer(t, "[::1]:0")
	dir := t.TempDir()
	script := filepath.Join(dir, "udhcpc.script")
	// udhcpc runs the script with the lease in the environment (busybox's
	// examples/udhcp/simple.script does the same).
	if err := os.WriteFile(script, []byte(`#!/bin/sh
case "$1" in
bound|renew)
	ip addr add "$ip/$subnet" dev "$interface"
	[ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
	for r in $router; do ip route add default via "$r" dev "$interface"; done
	echo "lease ip=$ip subnet=$subnet router=$router dns=$dns mtu=$mtu lease=$lease"
	;;
esac
`), 0o755); err != nil {
		t.Fatal(err)
	}
	sh := fmt.Sprintf(`set -e
echo "before $(ip -4 addr show dev berth0 | grep -c inet || true)"
busybox udhcpc -i berth0 -n -q -t 5 -T 1 -s %s
curl -sS --max-time 20 -o /dev/null -w "v4 %%{http_code}\n" http://10.0.2.2:%d/1000
for i in $(seq 50); do
	ip -6 addr show dev berth0 scope global | grep -q tentative || break
	sleep 0.1
done
echo "slaac $(ip -6 addr show dev berth0 scope global | grep -o 'fd00::[0-9a-f:]*/64')"
echo "route6 $(ip -6 route show default)"
curl -sS --max-time 20 -o /dev/null -w "v6 %%{http_code}\n" 'http://[fd00::2]:%d/1000'
`, script, p4, p6)
	code, out, errs := runBin(t, exec.Command(bin, "run", "--tap", "--dhcp", "--control", "none", "--", "sh", "-c", sh))
	if code != 0 {
		t.Fatalf("berth run --tap --dhcp: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"before 0", "lease ip=10.0.2.100 subnet=255.255.255.0 router=10.0.2.2 dns=10.0.2.3 mtu=65520",
		"v4 200", "slaac fd00::", "route6 default via fe80::", "v6 200"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the namespace's output:\n%s", want, out)
		}
	}
}

// TestRunUsernsTAP: the rootless mode with --tap (--userns as root): the child opens a
// TAP device in the user and network namespace, berth adopts it (tun.TAPFromFile), and
// the TestRunTAP traffic passes.
func TestRunUsernsTAP(t *testing.T) {
	needTAPTools(t)
	e := newRootlessEnv(t)
	p4, p6 := sumServer(t, "127.0.0.1:0"), sumServer(t, "[::1]:0")
	up, upSum := uploadFile(t)
	os.Chmod(filepath.Dir(up), 0o755)
	cmd := exec.Command(e.bin, "run", "--userns", "--tap", "--control", "none", "--", "sh", "-c", transferScript(p4, p6, up, "berth0"))
	cmd.Env = e.env
	code, out, errs := runBin(t, cmd)
	if code != 0 {
		t.Fatalf("berth run --userns --tap: exit %d\n%s\n%s", code, out, errs)
	}
	checkTransfers(t, out, upSum)
}
