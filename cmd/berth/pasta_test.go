//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/internal/testenv"
)

func TestPastaOpts(t *testing.T) {
	// rootlesskit v3.3.0's pasta driver, with --ipv6 and the pesto port driver.
	o, err := parsePastaOpts(strings.Fields("--ns-ifname=tap0 --mtu=65520 --config-net --address=10.0.2.100 --netmask=24 " +
		"--gateway=10.0.2.2 --dns-forward=10.0.2.3 --no-map-gw --tcp-ns=none --udp-ns=none --address=fd00::100 " +
		"--gateway=fd00::2 --dns-forward=fd00::3 --tcp-ports=none --udp-ports=none --conf-path=/run/x.sock 4242"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := o.network()
	if err != nil {
		t.Fatal(err)
	}
	want := pastaNet{addr4: forward.DefaultNSAddr4, gw4: forward.DefaultGateway4, dns4: forward.DefaultDNS4,
		addr6: forward.DefaultNSAddr6, gw6: forward.DefaultGateway6, dns6: forward.DefaultDNS6, noHostLoopback: true}
	if n != want || o.target != "4242" || o.ifname != "tap0" || !o.configNet || o.confPath != "/run/x.sock" {
		t.Errorf("rootlesskit's options: %+v, network %+v", o, n)
	}
	// Podman's, with its host.containers.internal address.
	o, err = parsePastaOpts([]string{"--config-net", "--dns-forward", "169.254.1.1", "--map-guest-addr", "169.254.1.2",
		"-t", "8080-8081:80-81", "-u", "127.0.0.1/5353:53", "-T", "none", "-U", "none", "--quiet", "--netns", "podman-ns"})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ = o.network(); n.dns4.String() != "169.254.1.1" || n.gw4.String() != "169.254.1.2" || n.noHostLoopback || o.netns != "/run/netns/podman-ns" {
		t.Errorf("Podman's options: %+v, network %+v", o, n)
	}
	tcp, _, err := pastaForwards(o.tcp, "tcp", n, false)
	if err != nil {
		t.Fatal(err)
	}
	udp, _, _ := pastaForwards(o.udp, "udp", n, false)
	var got []string
	for _, m := range append(tcp, udp...) {
		got = append(got, m.String())
	}
	if w := []string{"8080:80/tcp", "8081:81/tcp", "127.0.0.1:5353:53/udp"}; !reflect.DeepEqual(got, w) {
		t.Errorf("forwards %v, want %v", got, w)
	}
	for _, bad := range [][]string{
		{}, {"sh"}, {"--netns", "x", "42"}, {"-4", "-6", "42"}, {"--mtu", "1000", "42"}, {"--tcp-ns", "x", "42"},
		{"--address", "nope", "42"}, {"--bogus", "42"}, {"-t"},
	} {
		if _, err := parsePastaOpts(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if o, err := parsePastaOpts([]string{"--conf-path=/dev/null", "--version"}); err != nil || !o.version {
		t.Errorf("rootlesskit's feature probe: %v", err)
	}
}

// TestPasta runs berth under the name pasta as root for a namespace given by path, its
// host side in a namespace of the test's, as Podman does: the parent exits 0 once the
// namespace is served, the background process writes --pid, -t and -u forward with
// the client's address, pesto adds and deletes forwards at run time, and deleting the
// namespace ends it, taking its pid file and control socket along.
func TestPasta(t *testing.T) {
	testenv.NeedRoot(t)
	needCommands(t, "ip", "curl", "socat", "nsenter")
	dir, bin := buildDropIn(t, "pasta", "pesto")
	th := newTestHost(t, fmt.Sprintf("drop-pah-%d", os.Getpid()))
	hostNS, p4 := th.ns, th.p4
	guestNS := fmt.Sprintf("drop-pag-%d", os.Getpid())
	addNetns(t, guestNS)
	host := []string{"ip", "netns", "exec", hostNS}
	guest := []string{"ip", "netns", "exec", guestNS}
	pidFile, sock := filepath.Join(dir, "pasta.pid"), filepath.Join(dir, "pasta.sock")

	start := time.Now()
	cmd := exec.Command("ip", "netns", "exec", hostNS, filepath.Join(dir, "pasta"), "--config-net", "-t", "18500:8080", "-t", "auto", "-u", "18501:5353",
		"-T", "none", "-U", "none", "--dns-forward", "10.0.2.3", "--pid", pidFile, "-c", sock, "--ns-ifname", "eth0", "--netns", "/run/netns/"+guestNS)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The parent ends once the namespace is served (and Output-style callers are not
	// held by the background process's stdio).
	if err := cmd.Run(); err != nil {
		t.Fatalf("pasta: %v: %s", err, out.String())
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("pasta took %v to return", d)
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
	if got := run("ip", "-br", "addr", "show", "dev", "eth0"); !strings.Contains(got, "10.0.2.100/24") || !strings.Contains(got, "fd00::100/64") {
		t.Errorf("--config-net: %s", got)
	}
	if got := run("curl", "-sS", fmt.Sprintf("http://10.0.2.2:%d/hello", p4)); !strings.HasPrefix(got, "hello 127.0.0.1:") {
		t.Errorf("the host's loopback: %q", got)
	}
	echoPeer(t, guest, "TCP4-LISTEN:8080,fork,reuseaddr")
	echoPeer(t, guest, "UDP4-RECVFROM:5353,fork")
	for _, c := range []struct{ proto, addr, bind, want string }{
		{"TCP4", "192.0.2.7:18500", "192.0.2.7", "peer=192.0.2.7"},
		{"TCP4", "127.0.0.1:18500", "", "peer=10.0.2.2"},
		{"UDP4", "192.0.2.7:18501", "192.0.2.7", "peer=192.0.2.7"},
		// -t auto: the namespace listens on 8080, so the host's 8080 goes there (found
		// through a process in the --netns namespace: socat).
		{"TCP4", "192.0.2.7:8080", "192.0.2.7", "peer=192.0.2.7"},
	} {
		if got := dialPeer(t, host, c.proto, c.addr, c.bind); got != c.want {
			t.Errorf("-t/-u %s %s: %q, want %q", c.proto, c.addr, got, c.want)
		}
	}

	pesto := func(args ...string) (int, string) {
		c := exec.Command(filepath.Join(dir, "pesto"), append(args, sock)...)
		o, err := c.CombinedOutput()
		if err != nil && c.ProcessState == nil {
			t.Fatal(err)
		}
		return c.ProcessState.ExitCode(), string(o)
	}
	if code, o := pesto("-A", "--tcp-ports=0.0.0.0/18502:8080", "-D", "-t", "18500:8080"); code != 0 {
		t.Fatalf("pesto -A -D: exit %d: %s", code, o)
	}
	if got := dialPeer(t, host, "TCP4", "192.0.2.7:18502", "192.0.2.7"); got != "peer=192.0.2.7" {
		t.Errorf("a forward pesto added: %q", got)
	}
	full := append(append([]string{}, host...), "socat", "-T", "2", "-", "TCP4:127.0.0.1:18500")
	if o, err := exec.Command(full[0], full[1:]...).CombinedOutput(); err == nil {
		t.Errorf("a forward pesto deleted still connects: %s", o)
	}
	if code, o := pesto(); code != 0 || o != "0.0.0.0:18502:8080/tcp\n18501:5353/udp\n" {
		t.Errorf("pesto (show): exit %d: %q", code, o)
	}
	if code, o := pesto("-D", "-t", "18500:8080"); code == 0 || !strings.Contains(o, "not forwarded") {
		t.Errorf("deleting a forward twice: exit %d: %s", code, o)
	}

	// The namespace goes: so does berth, with its pid file and socket.
	exec.Command("ip", "netns", "delete", guestNS).Run()
	for deadline := time.Now().Add(10 * time.Second); alive(pid); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pasta (pid %d) outlived its namespace", pid)
		}
	}
	for _, f := range []string{pidFile, sock} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
	if pids := berthProcs(bin); len(pids) > 0 {
		t.Errorf("berth processes left: %v", pids)
	}
}
