//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/nsthread"
	"github.com/berthnet/berth/internal/testenv"
)

// inNetNS runs f on a thread in the network namespace at path (nsthread.Run): sockets
// f opens belong to it.
func inNetNS(t *testing.T, path string, f func()) {
	t.Helper()
	if err := nsthread.Run(path, func() error { f(); return nil }); err != nil {
		t.Fatal(err)
	}
}

// apiCall sends one request to a slirp4netns API socket and returns the reply.
func apiCall(t *testing.T, path, req string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("API socket: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, req)
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("API reply: %v", err)
	}
	return string(b)
}

// waitReady reads the ready fd's "1" and its close, as rootlesskit and Podman do.
func waitReady(t *testing.T, r *os.File, errb *bytes.Buffer) {
	t.Helper()
	r.SetDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "1" {
		t.Fatalf("ready fd: %q, %v; stderr: %s", b, err, errb)
	}
}

// waitExit waits up to 10 s for cmd to end and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, done <-chan error, what string) int {
	t.Helper()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Errorf("berth as slirp4netns did not exit after %s", what)
		return -1
	}
}

// echoPeer starts socat in a namespace (args: how to enter it) answering each
// connection or datagram on port with "peer=ADDRESS" of its client.
func echoPeer(t *testing.T, enter []string, listen string) {
	t.Helper()
	args := append(append([]string{}, enter...), "socat", listen, "SYSTEM:echo peer=$SOCAT_PEERADDR")
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// dialPeer connects (from inside the namespace enter names) to addr and returns what
// the server said, retrying while the server starts.
func dialPeer(t *testing.T, enter []string, proto, addr, bind string) string {
	t.Helper()
	spec := fmt.Sprintf("%s:%s", proto, addr)
	if bind != "" {
		spec += ",bind=" + bind
	}
	var out []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		args := append(append([]string{}, enter...), "socat", "-T", "3", "-", spec)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin = strings.NewReader("x\n")
		out, _ = cmd.Output()
		if len(out) > 0 {
			break
		}
	}
	got := strings.TrimSpace(string(out))
	// socat writes IPv6 addresses in full, in brackets.
	if a, err := netip.ParseAddr(strings.Trim(strings.TrimPrefix(got, "peer="), "[]")); err == nil {
		return "peer=" + a.Unmap().String()
	}
	return got
}

func needCommands(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		_, err := exec.LookPath(p)
		testenv.NeedCommand(t, p, err)
	}
}

// buildDropIn builds berth into a directory of the test's and links names (slirp4netns,
// pasta, pesto) to it there; it returns the directory and the binary.
func buildDropIn(t *testing.T, names ...string) (dir, bin string) {
	t.Helper()
	dir = t.TempDir()
	bin = filepath.Join(dir, "berth")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, n := range names {
		if err := os.Symlink(bin, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir, bin
}

// addNetns makes the network namespace name (ip netns add), deleted when the test ends.
func addNetns(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
}

// startCmd starts cmd with its stdout and stderr in out; done gets Wait's result.
func startCmd(t *testing.T, cmd *exec.Cmd) (out *bytes.Buffer, done chan error) {
	t.Helper()
	out = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return out, done
}

// waitFile waits up to limit for the file path, which a process in a namespace makes
// once it is ready; an error means it did not appear, or the command whose Wait
// reports on done ended first (its result is put back on done).
func waitFile(path string, limit time.Duration, done chan error) error {
	for deadline := time.Now().Add(limit); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("it ended first (%v)", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear in %v", path, limit)
		}
	}
}

// testHost is the host side of a drop-in test: a namespace of the test's whose loopback
// holds 192.0.2.7 (and 2001:db8::7), with an HTTP server on its 127.0.0.1 (p4) and
// [::1] (p6) and a DNS server answering 192.0.2.7 (dns, for BERTH_DNS_UPSTREAM).
type testHost struct {
	ns     string
	p4, p6 int
	dns    string
}

func newTestHost(t *testing.T, name string) testHost {
	t.Helper()
	h := testHost{ns: name}
	addNetns(t, name)
	for _, c := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", "192.0.2.7/32", "dev", "lo"},
		{"-6", "addr", "add", "2001:db8::7/128", "dev", "lo", "nodad"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, c...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", c, err, out)
		}
	}
	inNetNS(t, "/run/netns/"+name, func() {
		h.p4 = hostHTTP(t, "127.0.0.1:0")
		h.p6 = hostHTTP(t, "[::1]:0")
		h.dns = hostDNS(t)
	})
	return h
}

// TestSlirp4netns runs berth under the name slirp4netns as root, with its host side in a
// namespace of the test's (a "host" with the addresses 192.0.2.7 and 2001:db8::7) and
// the caller's namespace given by path, as Podman does: -c configures tap0, -r says
// ready, curl reaches the host's loopback over IPv4 and IPv6, DNS goes to 10.0.2.3, the
// API adds, lists and removes forwards (TCP and UDP, IPv4 and IPv6) that keep the
// client's address, and closing -e's pipe ends berth, leaving nothing behind.
func TestSlirp4netns(t *testing.T) {
	testenv.NeedRoot(t)
	needCommands(t, "ip", "curl", "socat", "getent", "nsenter")
	dir, bin := buildDropIn(t, "slirp4netns")
	link := filepath.Join(dir, "slirp4netns")
	th := newTestHost(t, fmt.Sprintf("drop-s4h-%d", os.Getpid()))
	hostNS, p4, p6, dns := th.ns, th.p4, th.p6, th.dns
	guestNS := fmt.Sprintf("drop-s4g-%d", os.Getpid())
	addNetns(t, guestNS)
	os.MkdirAll("/etc/netns/"+guestNS, 0o755)
	t.Cleanup(func() { os.RemoveAll("/etc/netns/" + guestNS) })
	if err := os.WriteFile("/etc/netns/"+guestNS+"/resolv.conf", []byte("nameserver 10.0.2.3\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	sock := filepath.Join(dir, "api.sock")
	readyR, readyW, _ := os.Pipe()
	exitR, exitW, _ := os.Pipe()
	defer readyR.Close()
	defer exitW.Close()
	cmd := exec.Command("ip", "netns", "exec", hostNS, link, "-c", "-6", "--mtu=65520", "-r", "3", "-e", "4", "--enable-sandbox", "--enable-seccomp",
		"--api-socket", sock, "--netns-type=path", "/run/netns/"+guestNS, "tap0")
	cmd.Env = append(os.Environ(), "BERTH_DNS_UPSTREAM="+dns)
	cmd.ExtraFiles = []*os.File{readyW, exitR}
	errb, done := startCmd(t, cmd)
	readyW.Close()
	exitR.Close()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	}()
	waitReady(t, readyR, errb)

	guest := []string{"ip", "netns", "exec", guestNS}
	host := []string{"ip", "netns", "exec", hostNS}
	run := func(args ...string) string {
		t.Helper()
		full := append(append([]string{}, guest...), args...)
		out, err := exec.Command(full[0], full[1:]...).CombinedOutput()
		if err != nil {
			t.Errorf("%v: %v: %s", args, err, out)
		}
		return string(out)
	}
	t.Run("configure", func(t *testing.T) {
		out := run("sh", "-c", "ip -br addr show dev tap0; ip route; ip -6 route; ip link show dev tap0")
		for _, want := range []string{"10.0.2.100/24", "fd00::100/64", "default via 10.0.2.2 dev tap0", "default via fd00::2 dev tap0", "mtu 65520"} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in:\n%s", want, out)
			}
		}
	})
	t.Run("host-loopback", func(t *testing.T) {
		if out := run("curl", "-sS", fmt.Sprintf("http://10.0.2.2:%d/hello", p4)); !strings.HasPrefix(out, "hello 127.0.0.1:") {
			t.Errorf("IPv4: %q", out)
		}
		if out := run("curl", "-sSg", fmt.Sprintf("http://[fd00::2]:%d/hello", p6)); !strings.HasPrefix(out, "hello [::1]:") {
			t.Errorf("IPv6: %q", out)
		}
	})
	t.Run("dns", func(t *testing.T) {
		if out := run("getent", "ahostsv4", "service.example"); !strings.Contains(out, "192.0.2.7") {
			t.Errorf("getent through 10.0.2.3: %q", out)
		}
	})
	t.Run("api", func(t *testing.T) {
		echoPeer(t, guest, "TCP4-LISTEN:8080,fork,reuseaddr")
		echoPeer(t, guest, "TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=1")
		echoPeer(t, guest, "UDP4-RECVFROM:5353,fork")
		add := func(proto, hostAddr string, hostPort, guestPort int) string {
			return apiCall(t, sock, fmt.Sprintf(`{"execute": "add_hostfwd", "arguments": {"proto": %q, "host_addr": %q, "host_port": %d, "guest_port": %d}}`,
				proto, hostAddr, hostPort, guestPort))
		}
		for i, c := range []struct {
			proto, addr string
			hp, gp      int
		}{{"tcp", "0.0.0.0", 18080, 8080}, {"tcp", "::", 18086, 8080}, {"udp", "0.0.0.0", 15353, 5353}} {
			if got, want := add(c.proto, c.addr, c.hp, c.gp), fmt.Sprintf(`{"return":{"id":%d}}`, i+1); got != want {
				t.Fatalf("add_hostfwd %v: %s, want %s", c, got, want)
			}
		}
		if got := add("tcp", "0.0.0.0", 18080, 8080); !strings.Contains(got, `"error"`) {
			t.Errorf("the same forward twice: %s", got)
		}
		list := apiCall(t, sock, `{"execute": "list_hostfwd"}`)
		for _, want := range []string{`"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":18080,"guest_addr":"10.0.2.100","guest_port":8080`,
			`"id":2,"proto":"tcp","host_addr":"::","host_port":18086,"guest_addr":"fd00::100"`, `"id":3,"proto":"udp"`} {
			if !strings.Contains(list, want) {
				t.Errorf("list_hostfwd: no %s in %s", want, list)
			}
		}
		// The namespace sees the client's own address; the host's loopback comes from
		// the gateway.
		for _, c := range []struct{ proto, addr, bind, want string }{
			{"TCP4", "192.0.2.7:18080", "192.0.2.7", "peer=192.0.2.7"},
			{"TCP4", "127.0.0.1:18080", "", "peer=10.0.2.2"},
			{"TCP6", "[2001:db8::7]:18086", "[2001:db8::7]", "peer=2001:db8::7"},
			{"TCP6", "[::1]:18086", "", "peer=fd00::2"},
			{"UDP4", "192.0.2.7:15353", "192.0.2.7", "peer=192.0.2.7"},
		} {
			if got := dialPeer(t, host, c.proto, c.addr, c.bind); !strings.Contains(got, c.want) {
				t.Errorf("%s %s from %q: %q, want %q", c.proto, c.addr, c.bind, got, c.want)
			}
		}
		if got := apiCall(t, sock, `{"execute": "remove_hostfwd", "arguments": {"id": 1}}`); got != `{"return":{}}` {
			t.Errorf("remove_hostfwd: %s", got)
		}
		full := append(append([]string{}, host...), "socat", "-T", "2", "-", "TCP4:192.0.2.7:18080")
		if out, err := exec.Command(full[0], full[1:]...).CombinedOutput(); err == nil {
			t.Errorf("a removed forward still connects: %s", out)
		}
	})

	exitW.Close() // the exit fd: berth ends
	if code := waitExit(t, cmd, done, "its exit fd closed"); code != 0 {
		t.Errorf("exit status %d; stderr: %s", code, errb.String())
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("the API socket %s is left behind", sock)
	}
	if out, err := exec.Command("ip", "-n", guestNS, "link", "show", "tap0").CombinedOutput(); err == nil {
		t.Errorf("tap0 outlived berth:\n%s", out)
	}
	if pids := berthProcs(bin); len(pids) > 0 {
		t.Errorf("berth processes left: %v", pids)
	}
}

// TestSlirp4netnsRootless runs `berth slirp4netns PID` as an ordinary user for a
// namespace that user made (unshare --user --map-root-user --net), as rootlesskit does:
// berth enters the user namespace to make the device, serves it from the host's
// namespaces, forwards through the API, and exits once the namespace's process is gone.
func TestSlirp4netnsRootless(t *testing.T) {
	e := newRootlessEnv(t)
	needCommands(t, "nsenter", "setpriv")
	p4 := hostHTTP(t, "127.0.0.1:0")
	target := exec.Command("setpriv", "--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--clear-groups",
		"unshare", "--user", "--map-root-user", "--net", "sleep", "120")
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	targetDone := make(chan struct{}) // closed once the target is reaped
	go func() { target.Wait(); close(targetDone) }()
	defer func() {
		target.Process.Kill()
		<-targetDone
	}()
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

	sock := filepath.Join(e.tmp, "api.sock")
	readyR, readyW, _ := os.Pipe()
	defer readyR.Close()
	cmd := e.command(0, "slirp4netns", "-c", "-6", "-m", "65520", "-r", "3", "-a", sock, strconv.Itoa(pid), "tap0")
	cmd.ExtraFiles = []*os.File{readyW}
	errb, done := startCmd(t, cmd)
	readyW.Close()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	}()
	waitReady(t, readyR, errb)

	guest := []string{"nsenter", "-t", strconv.Itoa(pid), "-n"}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "curl", "-sS", fmt.Sprintf("http://10.0.2.2:%d/hello", p4)).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "hello 127.0.0.1:") {
		t.Errorf("curl to the host's loopback: %v: %s; berth: %s", err, out, errb.String())
	}
	echoPeer(t, guest, "TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=0")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	hp := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	for _, req := range []string{
		fmt.Sprintf(`{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":%d,"guest_port":8080}}`, hp),
		fmt.Sprintf(`{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":%d,"guest_port":8080}}`, hp),
	} {
		if got := apiCall(t, sock, req); !strings.HasPrefix(got, `{"return":{"id":`) {
			t.Fatalf("%s: %s", req, got)
		}
	}
	if got := dialPeer(t, nil, "TCP4", fmt.Sprintf("127.0.0.1:%d", hp), ""); got != "peer=10.0.2.2" {
		t.Errorf("forwarded port over IPv4: %q", got)
	}
	if got := dialPeer(t, nil, "TCP6", fmt.Sprintf("[::1]:%d", hp), ""); got != "peer=fd00::2" {
		t.Errorf("forwarded port over IPv6: %q", got)
	}

	// The namespace goes with its process: berth follows.
	target.Process.Signal(syscall.SIGTERM)
	<-targetDone
	if code := waitExit(t, cmd, done, "the namespace's process ended"); code != 0 {
		t.Errorf("exit status %d; stderr: %s", code, errb.String())
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("the API socket %s is left behind", sock)
	}
	if pids := berthProcs(e.bin); len(pids) > 0 {
		t.Errorf("berth processes left: %v", pids)
	}
}
