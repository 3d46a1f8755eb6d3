package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/netns"
	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/services"
)

// TestUp builds the berth binary once and runs `berth up` as a user would.
func TestUp(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "berth")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("usage", func(t *testing.T) { testUpUsage(t, bin) })
	t.Run("no-permission", func(t *testing.T) { testUpNoPermission(t, bin) })
	t.Run("no-tun-device", func(t *testing.T) { testUpNoTUNDevice(t, bin) })
	t.Run("interop", func(t *testing.T) { testUpInterop(t, bin) })
	t.Run("sigint", func(t *testing.T) { testUpSIGINT(t, bin) })
}

func runBin(t *testing.T, cmd *exec.Cmd) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return code, o.String(), e.String()
}

func testUpUsage(t *testing.T, bin string) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--tun NAME is required (or --tap NAME)"},
		{[]string{"--addr", "10.7.0.2/24"}, "--tun NAME is required (or --tap NAME)"},
		{[]string{"--tun", "bt0"}, "at least one --addr is required"},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.2"}, `"10.7.0.2" has no prefix length`},
		{[]string{"--tun", "bt0", "--addr", "ten/24"}, `"ten/24" is not an address with a prefix length`},
		{[]string{"--tun", "bt0", "--addr", "224.0.0.1/4"}, "cannot be an interface address"},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.0/24"}, "network's or the broadcast address"},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.255/24"}, "network's or the broadcast address"},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.2/24", "--host-addr", "10.7.0.2/24"}, "is also an --addr"},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.2/24", "--serve", "echo,gopher"}, `unknown service "gopher" (known: echo, discard, daytime, chargen, http, or all)`},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.2/24", "--serve", "ssh"}, `unknown service "ssh"`}, // registered, but not served
		{[]string{"--tun", "a-name-too-long-x", "--addr", "10.7.0.2/24"}, "is not a valid device name"},
		{[]string{"--tun", "a/b", "--addr", "10.7.0.2/24"}, "is not a valid device name"},
		{[]string{"--tun", "bt0", "--addr", "fd07::2/64", "--mtu", "1000"}, "--mtu 1000 out of range 1280-65535"},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.2/24", "--mtu", "70000"}, "--mtu 70000 out of range 68-65535"},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.2/24", "--mtu", "big"}, `invalid value "big" for flag -mtu`},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.2/24", "extra"}, `unexpected argument "extra"`},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.2/24", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--tun", "bt0", "--addr", "10.7.0.2/24", "--metrics", "9100"}, `--metrics "9100": want HOST:PORT`},
		{[]string{"--tun", "bt0", "--tap", "bt1", "--addr", "10.7.0.2/24"}, "--tun and --tap exclude each other"},
	} {
		code, stdout, stderr := runBin(t, exec.Command(bin, append([]string{"up"}, c.args...)...))
		if code != 2 || stdout != "" || !strings.HasPrefix(stderr, "berth up: ") || !strings.Contains(stderr, c.want) ||
			!strings.Contains(stderr, "usage: berth up --tun NAME|--tap NAME --addr PREFIX") {
			t.Errorf("berth up %s: exit %d, stdout %q, stderr %q; want exit 2 and %q with the usage line",
				strings.Join(c.args, " "), code, stdout, stderr, c.want)
		}
	}
	// help shows the services with their registry ports.
	code, stdout, _ := runBin(t, exec.Command(bin, "help", "up"))
	for _, want := range []string{"echo      7/tcp, 7/udp", "chargen   19/tcp, 19/udp", "http      80/tcp"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("berth help up: exit %d, missing %q:\n%s", code, want, stdout)
		}
	}
}

// A user without CAP_NET_ADMIN is told so, exit 1.
func testUpNoPermission(t *testing.T, bin string) {
	testenv.NeedRoot(t) // to become another user
	setpriv, err := exec.LookPath("setpriv")
	testenv.NeedCommand(t, "setpriv", err)
	// t.TempDir makes 0700 directories: let nobody reach the binary.
	os.Chmod(filepath.Dir(bin), 0o755)
	os.Chmod(filepath.Dir(filepath.Dir(bin)), 0o755)
	code, stdout, stderr := runBin(t, exec.Command(setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups",
		bin, "up", "--tun", "btperm0", "--addr", "10.7.0.2/24"))
	if code != 1 || stdout != "" || !strings.Contains(stderr, `msg="cannot open TUN device" tun=btperm0`) ||
		!strings.Contains(stderr, "CAP_NET_ADMIN") {
		t.Errorf("berth up as nobody: exit %d, stdout %q, stderr %q; want exit 1 and why (CAP_NET_ADMIN)", code, stdout, stderr)
	}
}

// Without /dev/net/tun (hidden in a private mount namespace) the message says so.
func testUpNoTUNDevice(t *testing.T, bin string) {
	testenv.NeedRoot(t)
	unshare, err := exec.LookPath("unshare")
	testenv.NeedCommand(t, "unshare", err)
	script := `mount -t tmpfs none /dev/net && exec "$0" up --tun btnodev0 --addr 10.7.0.2/24`
	code, stdout, stderr := runBin(t, exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c", script, bin))
	if code != 1 || stdout != "" || !strings.Contains(stderr, `msg="cannot open TUN device"`) ||
		!strings.Contains(stderr, "no TUN support") || !strings.Contains(stderr, "no such file or directory") {
		t.Errorf("berth up without /dev/net/tun: exit %d, stdout %q, stderr %q; want exit 1 and why", code, stdout, stderr)
	}
}

// logWatcher collects a child's stderr and reports when a line matches.
type logWatcher struct {
	mu    sync.Mutex
	lines []string
	cond  chan struct{} // closed and replaced on every new line
}

func newLogWatcher(r io.Reader) *logWatcher {
	w := &logWatcher{cond: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			close(w.cond)
			w.cond = make(chan struct{})
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *logWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// wait waits until a line contains s, up to d.
func (w *logWatcher) wait(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		w.mu.Lock()
		for _, l := range w.lines {
			if strings.Contains(l, s) {
				w.mu.Unlock()
				return
			}
		}
		c := w.cond
		w.mu.Unlock()
		select {
		case <-c:
		case <-deadline:
			t.Fatalf("no log line with %q after %v; log:\n%s", s, d, w)
		}
	}
}

// testUpInterop runs `berth up` inside a network namespace (so the TUN device is created
// there) with the kernel's side configured by --host-addr, and talks to it from the
// kernel: ping, UDP and TCP services with Go's net package, HTTP with curl.
func testUpInterop(t *testing.T, bin string) {
	ns := netns.New(t)
	dir := t.TempDir()
	pcapFile := filepath.Join(dir, "up.pcap")
	ctl := filepath.Join(dir, "c.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, bin, "up", "--tun", "bt0", "--addr", "10.7.0.2/24", "--addr", "fd07::2/64",
		"--host-addr", "10.7.0.1/24", "--host-addr", "fd07::1/64", "--serve", "all", "--pcap", pcapFile,
		"--control", ctl, "--metrics", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	logs := newLogWatcher(stderr)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill() // the child this test started, if a failure left it running
			<-exited
		}
	})
	logs.wait(t, "msg=up tun=bt0", 20*time.Second)

	t.Run("ping", func(t *testing.T) {
		for _, dst := range []string{"10.7.0.2", "fd07::2"} {
			out, err := ns.Output("ping", "-n", "-c", "3", "-i", "0.05", "-W", "2", dst)
			if err != nil || !strings.Contains(out, "3 packets transmitted, 3 received") {
				t.Errorf("kernel ping %s: %v\n%s", dst, err, out)
			}
		}
	})
	t.Run("udp", func(t *testing.T) {
		for _, host := range []string{"10.7.0.2", "fd07::2"} {
			echo := dialNS(t, ns, "udp", net.JoinHostPort(host, "7"))
			for _, msg := range []string{"ping over TUN", strings.Repeat("y", 1200)} {
				if got := udpRoundTrip(t, echo, msg); got != msg {
					t.Errorf("UDP echo via %s: %q, want %q", host, got, msg)
				}
			}
			day := dialNS(t, ns, "udp", net.JoinHostPort(host, "13"))
			got := udpRoundTrip(t, day, "?")
			if _, err := time.Parse("Monday, January 2, 2006 15:04:05-MST\r\n", got); err != nil {
				t.Errorf("UDP daytime via %s: %q: %v", host, got, err)
			}
			cg := dialNS(t, ns, "udp", net.JoinHostPort(host, "19"))
			for range 5 {
				got := udpRoundTrip(t, cg, "?")
				want := make([]byte, len(got))
				new(services.ChargenReader).Read(want)
				if len(got) > 512 || got != string(want) {
					t.Errorf("UDP chargen via %s: %d bytes, not a prefix of the pattern", host, len(got))
				}
			}
		}
	})
	t.Run("tcp", func(t *testing.T) {
		for _, host := range []string{"10.7.0.2", "fd07::2"} {
			c := dialNS(t, ns, "tcp", net.JoinHostPort(host, "7")).(*net.TCPConn)
			msg := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
			go func() { c.Write(msg); c.CloseWrite() }()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, msg) {
				t.Errorf("TCP echo via %s: %d of %d bytes back, err %v", host, len(got), len(msg), err)
			}
			cg := dialNS(t, ns, "tcp", net.JoinHostPort(host, "19"))
			got, want := make([]byte, 3*services.ChargenPeriod+11), make([]byte, 3*services.ChargenPeriod+11)
			new(services.ChargenReader).Read(want)
			if _, err := io.ReadFull(cg, got); err != nil || !bytes.Equal(got, want) {
				t.Errorf("TCP chargen via %s: err %v, pattern ok %v", host, err, bytes.Equal(got, want))
			}
			cg.Close()
			dc := dialNS(t, ns, "tcp", net.JoinHostPort(host, "9")).(*net.TCPConn)
			if _, err := dc.Write(msg); err != nil {
				t.Errorf("TCP discard via %s: %v", host, err)
			}
			dc.CloseWrite()
			if back, err := io.ReadAll(dc); err != nil || len(back) != 0 {
				t.Errorf("TCP discard via %s: %d bytes back, err %v", host, len(back), err)
			}
			d := dialNS(t, ns, "tcp", net.JoinHostPort(host, "13"))
			line, err := io.ReadAll(d)
			if _, perr := time.Parse("Monday, January 2, 2006 15:04:05-MST\r\n", string(line)); err != nil || perr != nil {
				t.Errorf("TCP daytime via %s: %q, %v, %v", host, line, err, perr)
			}
		}
	})
	t.Run("http", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{
			DialContext:       func(ctx context.Context, network, addr string) (net.Conn, error) { return ns.Dial(ctx, network, addr) },
			DisableKeepAlives: true,
		}, Timeout: 20 * time.Second}
		resp, err := client.Get("http://10.7.0.2/")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !regexp.MustCompile(`tcp +LISTEN +\[::\]:80 `).Match(page) || !regexp.MustCompile(`udp +UNCONN +\[::\]:7 `).Match(page) {
			t.Errorf("GET / does not list the listening sockets:\n%s", page)
		}
		curl, err := exec.LookPath("curl")
		testenv.NeedCommand(t, "curl", err)
		const n = 4<<20 + 7
		for _, url := range []string{fmt.Sprintf("http://10.7.0.2/bytes/%d", n), fmt.Sprintf("http://[fd07::2]/bytes/%d", n)} {
			cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
			out, err := ns.Command(cctx, curl, "-sS", "--fail", url).Output()
			ccancel()
			h := sha256.New()
			io.Copy(h, services.NewPatternReader(n))
			if err != nil || !bytes.Equal(sum(out), h.Sum(nil)) {
				t.Errorf("curl %s: %d bytes, err %v: SHA-256 differs from the pattern's", url, len(out), err)
			}
		}
	})

	// The control socket answers berth ss and berth stats; the metrics are served on the
	// namespace's own loopback (the host's network, from berth up's point of view).
	t.Run("control", func(t *testing.T) {
		code, out, errOut := runBin(t, exec.Command(bin, "ss", "-tln", "--control", ctl))
		if code != 0 || !regexp.MustCompile(`(?m)^tcp +LISTEN .*\[::\]:80\b`).MatchString(out) {
			t.Errorf("berth ss -tln: exit %d, stderr %q, want the http listener:\n%s", code, errOut, out)
		}
		code, out, errOut = runBin(t, exec.Command(bin, "stats", "--control", ctl, "IpInReceives"))
		if code != 0 || !regexp.MustCompile(`IpInReceives +[1-9]`).MatchString(out) {
			t.Errorf("berth stats IpInReceives: exit %d, stderr %q:\n%s", code, errOut, out)
		}
		// berth capture through the control socket: 4 packets of kernel pings.
		capFile := filepath.Join(dir, "ctl.pcap")
		capCmd := exec.Command(bin, "capture", capFile, "--count", "4", "--control", ctl)
		var capErr bytes.Buffer
		capCmd.Stderr = &capErr
		if err := capCmd.Start(); err != nil {
			t.Fatal(err)
		}
		capDone := make(chan error, 1)
		go func() { capDone <- capCmd.Wait() }()
	pinging:
		for range 50 {
			ns.Output("ping", "-n", "-c", "1", "-W", "1", "10.7.0.2")
			select {
			case err := <-capDone:
				capDone <- err
				break pinging
			default:
			}
		}
		select {
		case err := <-capDone:
			b, _ := os.ReadFile(capFile)
			// pcap header, then 4 records of at least a 16-byte header and a 20-byte IP header.
			if err != nil || len(b) < 24+4*(16+20) || !bytes.Equal(b[:4], []byte{0xd4, 0xc3, 0xb2, 0xa1}) {
				t.Errorf("berth capture --count 4: %v, %d bytes; stderr %s", err, len(b), capErr.String())
			}
		case <-time.After(10 * time.Second):
			capCmd.Process.Kill()
			<-capDone
			t.Errorf("berth capture --count 4 did not end while pings went through; stderr %s", capErr.String())
		}

		m := regexp.MustCompile(`msg="metrics serving" addr=(\S+)`).FindStringSubmatch(logs.String())
		if m == nil {
			t.Fatalf("no metrics address in the log:\n%s", logs)
		}
		client := &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return ns.Dial(ctx, network, addr) },
		}, Timeout: 10 * time.Second}
		resp, err := client.Get("http://" + m[1] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `berth_sockets{netid="tcp",state="LISTEN"} 5`) {
			t.Errorf("metrics lack the 5 TCP listeners:\n%s", body)
		}
	})

	// SIGTERM: a clean stop, exit 0, the device gone.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Errorf("berth up after SIGTERM: %v; log:\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("berth up did not stop within 15s of SIGTERM; log:\n%s", logs)
	}
	log := logs.String()
	for _, want := range []string{`msg="signal received, stopping" signal=terminated`, `msg="service stopped" service=http network=tcp`,
		`msg="capture stopped"`, `msg="control socket closed"`, `msg="metrics stopped"`, "msg=stopped tun=bt0 status=0"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "level=ERROR") {
		t.Errorf("errors logged:\n%s", log)
	}
	if _, err := os.Stat(ctl); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket %s left behind: %v", ctl, err)
	}
	if out, err := ns.Output("ip", "link", "show", "dev", "bt0"); err == nil {
		t.Errorf("bt0 still exists after berth up stopped:\n%s", out)
	}
	// The capture holds the traffic: a pcap file header and many records.
	b, err := os.ReadFile(pcapFile)
	if err != nil || len(b) < 24+1000 || !bytes.Equal(b[:4], []byte{0xd4, 0xc3, 0xb2, 0xa1}) {
		t.Errorf("capture: %d bytes, err %v; want a pcap file with the traffic", len(b), err)
	}
}

// testUpSIGINT: without --host-addr the kernel's side is left alone, and SIGINT stops
// berth up cleanly.
func testUpSIGINT(t *testing.T, bin string) {
	ns := netns.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, bin, "up", "--tun", "bt1", "--addr", "10.8.0.2/24", "--serve", "echo", "--mtu", "1300", "--control", "none")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := newLogWatcher(stderr)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	logs.wait(t, "msg=up tun=bt1", 20*time.Second)
	out := ns.Run(t, "ip", "-o", "addr", "show", "dev", "bt1")
	link := ns.Run(t, "ip", "-o", "link", "show", "dev", "bt1")
	if strings.Contains(out, "inet") || strings.Contains(link, ",UP") || !strings.Contains(link, "mtu 1300") {
		t.Errorf("without --host-addr the device should be down, unaddressed, mtu 1300:\n%s%s", link, out)
	}
	if strings.Contains(logs.String(), "host side configured") || strings.Contains(logs.String(), "control socket open") {
		t.Errorf("host side configured without --host-addr, or a control socket with --control none:\n%s", logs)
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("berth up after SIGINT: %v; log:\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("berth up did not stop within 15s of SIGINT; log:\n%s", logs)
	}
	for _, want := range []string{"signal=interrupt", `msg="service stopped" service=echo network=udp`, "msg=stopped tun=bt1 status=0"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func dialNS(t *testing.T, ns *netns.NS, network, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, network, addr)
	if err != nil {
		t.Fatalf("dial %s %s in the namespace: %v", network, addr, err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func udpRoundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	// A TUN link inside one machine does not lose datagrams, but retry once in case
	// the first answer raced neighbour discovery.
	buf := make([]byte, 65536)
	for try := 0; ; try++ {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n])
		}
		if try == 2 {
			t.Fatalf("no UDP answer from %s: %v", c.RemoteAddr(), err)
		}
	}
}
