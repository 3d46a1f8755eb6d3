//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/testenv"
)

func TestPastaNSSpecs(t *testing.T) {
	ms, auto, notes, err := pastaNSSpecs([]string{"none", "8080", "9000-9001:19000-19001,~9001", "auto", "1-100,auto,~22", "~5000"}, "tcp")
	if err != nil {
		t.Fatal(err)
	}
	want := []nsMapping{{"tcp", 8080, 8080}, {"tcp", 9000, 19000}}
	if !reflect.DeepEqual(ms, want) {
		t.Errorf("forwards %v, want %v", ms, want)
	}
	if len(auto) != 2 || !autoIncludes(auto[0], 80) || autoIncludes(auto[0], 40000) ||
		!autoIncludes(auto[1], 80) || autoIncludes(auto[1], 22) || autoIncludes(auto[1], 8080) {
		t.Errorf("auto specs %+v", auto)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "-T ~5000") {
		t.Errorf("notes %q", notes)
	}
	if got := (nsMapping{"udp", 53, 5353}).String(); got != "ns 53:5353/udp" {
		t.Errorf("String: %q", got)
	}
	// pasta: "Listening address not allowed for -T"; berth forwards to the host's
	// loopback, so no target address either.
	for _, bad := range []string{"127.0.0.1/80", "%lo/80", "80:192.0.2.1/80", "x"} {
		if _, _, _, err := pastaNSSpecs([]string{bad}, "udp"); err == nil {
			t.Errorf("-U %s: no error", bad)
		}
		if _, err := parsePastaOpts([]string{"-T", bad, "42"}); err == nil {
			t.Errorf("pasta -T %s: no error", bad)
		}
	}
}

// TestPastaNSHelp: callers look for the flags' names in --help, pasta's and pesto's.
func TestPastaNSHelp(t *testing.T) {
	for _, c := range []struct {
		run  func([]string) int
		want []string
	}{
		{runPasta, []string{"-T, --tcp-ns SPEC", "-U, --udp-ns SPEC"}},
		{runPesto, []string{"-T, --tcp-ns SPEC", "-U, --udp-ns SPEC"}},
	} {
		var out bytes.Buffer
		stdout = &out
		code := c.run([]string{"--help"})
		stdout = os.Stdout
		for _, w := range c.want {
			if code != 0 || !strings.Contains(out.String(), w) {
				t.Errorf("--help (exit %d) lacks %q:\n%s", code, w, out.String())
			}
		}
		if strings.Contains(out.String(), "forwards nothing from the namespace") {
			t.Errorf("--help still says -T/-U forward nothing")
		}
	}
}

// nsListening lists the TCP (or UDP) ports something listens on in the namespace
// enter names, from ss(8).
func nsListening(t *testing.T, enter []string, proto string) map[int]bool {
	t.Helper()
	flag := map[string]string{"tcp": "-Htln", "udp": "-Huln"}[proto]
	args := append(append([]string{}, enter...), "ss", flag)
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	ports := map[int]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if i := strings.LastIndexByte(f[3], ':'); i >= 0 {
			if p, err := strconv.Atoi(f[3][i+1:]); err == nil {
				ports[p] = true
			}
		}
	}
	return ports
}

// waitListening waits up to 10 s for port to be listened on (or not) in enter's namespace.
func waitListening(t *testing.T, enter []string, proto string, port int, want bool) bool {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if nsListening(t, enter, proto)[port] == want {
			return true
		}
	}
	return false
}

// TestPastaNSForwards runs berth as pasta as root with -T and -U, its host side in a
// namespace of the test's: curl and socat in the namespace reach the host's loopback
// servers through 127.0.0.1 and ::1 with the client's loopback address kept, over TCP
// and UDP; -T auto follows the host's listeners but leaves berth's own -t ports out;
// pesto adds and deletes -T forwards; and once berth ends, nothing listens in the
// namespace and no berth process is left.
func TestPastaNSForwards(t *testing.T) {
	testenv.NeedRoot(t)
	needCommands(t, "ip", "curl", "socat", "nsenter", "ss")
	dir, bin := buildDropIn(t, "pasta", "pesto")
	th := newTestHost(t, fmt.Sprintf("drop-pnh-%d", os.Getpid()))
	guestNS := fmt.Sprintf("drop-png-%d", os.Getpid())
	addNetns(t, guestNS)
	host := []string{"ip", "netns", "exec", th.ns}
	guest := []string{"ip", "netns", "exec", guestNS}
	pidFile, sock := filepath.Join(dir, "pasta.pid"), filepath.Join(dir, "pasta.sock")

	// The host's loopback servers: socat's answer names the client's address.
	echoPeer(t, host, "TCP4-LISTEN:18610,bind=127.0.0.1,fork,reuseaddr")
	echoPeer(t, host, "TCP6-LISTEN:18610,bind=[::1],ipv6only=1,fork,reuseaddr")
	echoPeer(t, host, "UDP4-RECVFROM:18611,bind=127.0.0.1,fork")
	echoPeer(t, host, "UDP6-RECVFROM:18611,bind=[::1],fork")
	// One for -T auto to find, stopped later.
	autoArgs := append(append([]string{}, host...), "socat", "TCP4-LISTEN:18620,bind=127.0.0.1,fork,reuseaddr", "SYSTEM:echo peer=$SOCAT_PEERADDR")
	autoSrv := exec.Command(autoArgs[0], autoArgs[1:]...)
	if err := autoSrv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { autoSrv.Process.Kill(); autoSrv.Wait() }()
	waitListening(t, host, "tcp", 18620, true)

	cmd := exec.Command("ip", "netns", "exec", th.ns, filepath.Join(dir, "pasta"), "--config-net",
		"-t", "18630:8080", "-u", "none",
		"-T", "18700:18610", "-T", strconv.Itoa(th.p4), "-T", strconv.Itoa(th.p6), "-T", "auto",
		"-U", "18701:18611", "--pid", pidFile, "-c", sock, "--netns", "/run/netns/"+guestNS)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("pasta: %v: %s", err, out.String())
	}
	b, err := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !alive(pid) {
		t.Fatalf("--pid %s: %q, %v", pidFile, b, err)
	}
	defer func() {
		if alive(pid) {
			exec.Command("kill", "-KILL", strconv.Itoa(pid)).Run()
		}
	}()
	run := func(args ...string) string {
		full := append(append([]string{}, guest...), args...)
		o, _ := exec.Command(full[0], full[1:]...).CombinedOutput()
		return string(o)
	}

	// curl, IPv4 and IPv6, and a megabyte through.
	if got := run("curl", "-sS", fmt.Sprintf("http://127.0.0.1:%d/hello", th.p4)); !strings.HasPrefix(got, "hello 127.0.0.1:") {
		t.Errorf("-T to the host's 127.0.0.1: %q", got)
	}
	if got := run("curl", "-sS", "-g", fmt.Sprintf("http://[::1]:%d/hello", th.p6)); !strings.HasPrefix(got, "hello [::1]:") {
		t.Errorf("-T to the host's ::1: %q", got)
	}
	if got := run("curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", fmt.Sprintf("http://127.0.0.1:%d/1000000", th.p4)); got != "1000000" {
		t.Errorf("a megabyte through -T: %q", got)
	}
	for _, c := range []struct{ proto, addr, want string }{
		{"TCP4", "127.0.0.1:18700", "peer=127.0.0.1"},
		{"TCP6", "[::1]:18700", "peer=::1"},
		{"UDP4", "127.0.0.1:18701", "peer=127.0.0.1"},
		{"UDP6", "[::1]:18701", "peer=::1"},
		// -T auto: the host listens on 18620.
		{"TCP4", "127.0.0.1:18620", "peer=127.0.0.1"},
	} {
		if got := dialPeer(t, guest, c.proto, c.addr, ""); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.proto, c.addr, got, c.want)
		}
	}
	// -T auto leaves berth's own -t port (18630 on the host) out, or a connection
	// would come back into the namespace; and a port the namespace's loopback listens
	// on for -T does not become a -t auto forward (there is no -t auto here, but the
	// host's 18700 must stay free).
	time.Sleep(2500 * time.Millisecond) // two scans
	if nsListening(t, guest, "tcp")[18630] {
		t.Errorf("-T auto forwards berth's own -t port 18630")
	}
	if nsListening(t, host, "tcp")[18700] {
		t.Errorf("the host listens on -T's namespace port 18700")
	}
	// The host's server goes: so does auto's listener in the namespace.
	autoSrv.Process.Kill()
	autoSrv.Wait()
	if !waitListening(t, guest, "tcp", 18620, false) {
		t.Errorf("-T auto kept 18620 after the host's server ended")
	}

	pesto := func(args ...string) (int, string) {
		c := exec.Command(filepath.Join(dir, "pesto"), append(args, sock)...)
		o, err := c.CombinedOutput()
		if err != nil && c.ProcessState == nil {
			t.Fatal(err)
		}
		return c.ProcessState.ExitCode(), string(o)
	}
	if code, o := pesto("-A", "--tcp-ns=18702:18610", "-D", "-T", "18700:18610"); code != 0 {
		t.Fatalf("pesto -A -D -T: exit %d: %s", code, o)
	}
	if got := dialPeer(t, guest, "TCP4", "127.0.0.1:18702", ""); got != "peer=127.0.0.1" {
		t.Errorf("a -T forward pesto added: %q", got)
	}
	if nsListening(t, guest, "tcp")[18700] {
		t.Errorf("a -T forward pesto deleted still listens")
	}
	show := []string{"18630:8080/tcp", fmt.Sprintf("ns %d:%d/tcp", th.p4, th.p4), fmt.Sprintf("ns %d:%d/tcp", th.p6, th.p6),
		"ns 18701:18611/udp", "ns 18702:18610/tcp"}
	slices.Sort(show)
	wantShow := strings.Join(show, "\n") + "\n"
	if code, o := pesto(); code != 0 || o != wantShow {
		t.Errorf("pesto (show): exit %d: %q, want %q", code, o, wantShow)
	}
	if code, o := pesto("-D", "-T", "18700:18610"); code == 0 || !strings.Contains(o, "not forwarded") {
		t.Errorf("deleting a -T forward twice: exit %d: %s", code, o)
	}
	if code, o := pesto("-A", "-U", "127.0.0.1/53"); code == 0 || !strings.Contains(o, "listening address") {
		t.Errorf("pesto -U with an address: exit %d: %s", code, o)
	}

	// berth ends: nothing of it listens in the namespace, and no helper is left.
	exec.Command("kill", "-TERM", strconv.Itoa(pid)).Run()
	for deadline := time.Now().Add(10 * time.Second); alive(pid); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pasta (pid %d) did not end on SIGTERM", pid)
		}
	}
	for _, proto := range []string{"tcp", "udp"} {
		if l := nsListening(t, guest, proto); len(l) > 0 {
			t.Errorf("%s listeners left in the namespace: %v", proto, l)
		}
	}
	if pids := berthProcs(bin); len(pids) > 0 {
		t.Errorf("berth processes left: %v", pids)
	}
}

// TestPastaNSRootless: as an ordinary user serving a namespace of that user's user
// namespace, -T's helper enters the user namespace too (the owner's CAP_NET_BIND_SERVICE
// lets it bind port 80 there), and curl in the namespace reaches the test's loopback
// server; when the namespace's process ends, berth does, leaving no process.
func TestPastaNSRootless(t *testing.T) {
	e := newRootlessEnv(t)
	needCommands(t, "nsenter", "setpriv", "curl")
	p4 := hostHTTP(t, "127.0.0.1:0")
	target, targetDone := nobodyNetns(t)
	pid := target.Process.Pid
	pidFile := filepath.Join(e.tmp, "pasta.pid")
	cmd := e.command(0, "pasta", "--config-net", "-t", "none", "-u", "none", "-T", fmt.Sprintf("80:%d", p4), "-U", "none",
		"--pid", pidFile, strconv.Itoa(pid))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pasta as nobody: %v: %s", err, out)
	}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "curl", "-sS", "http://127.0.0.1:80/hello").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "hello 127.0.0.1:") {
		t.Errorf("curl through -T 80: %v: %s", err, out)
	}
	target.Process.Signal(syscall.SIGTERM)
	<-targetDone
	for deadline := time.Now().Add(10 * time.Second); len(berthProcs(e.bin)) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("berth processes left: %v", berthProcs(e.bin))
		}
	}
}

// nobodyNetns starts, as nobody, a process (sleep) in a user and network namespace of
// its own, as rootlesskit's child; done closes once it has ended (the test kills it at
// the latest when it ends).
func nobodyNetns(t *testing.T) (target *exec.Cmd, done <-chan struct{}) {
	t.Helper()
	target = exec.Command("setpriv", "--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--clear-groups",
		"unshare", "--user", "--map-root-user", "--net", "sleep", "120")
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	targetDone := make(chan struct{})
	go func() { target.Wait(); close(targetDone) }()
	t.Cleanup(func() {
		target.Process.Kill()
		<-targetDone
	})
	pid := target.Process.Pid
	self, _ := os.Readlink("/proc/self/ns/net")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if ns != "" && ns != self && strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the target namespace did not appear")
		}
	}
	return target, targetDone
}
