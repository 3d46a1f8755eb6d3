//go:build linux

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/services"
)

// hostHTTP serves /hello (the client's address) and /N (N bytes of the pattern) on the
// host's loopback.
func hostHTTP(t *testing.T, addr string) int {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hello" {
			fmt.Fprintf(w, "hello %s", r.RemoteAddr)
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

// hostDNS answers every A query with 192.0.2.7, over UDP on the host's loopback.
func hostDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(b[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			out := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			out.StartQuestions()
			out.Question(q)
			out.StartAnswers()
			if q.Type == dnsmessage.TypeA {
				out.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
					dnsmessage.AResource{A: [4]byte{192, 0, 2, 7}})
			}
			msg, _ := out.Finish()
			pc.WriteTo(msg, from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestRun builds berth and runs `berth run` as a user would: curl inside the namespace
// reaches servers on the host's loopback through the gateways, exit statuses come back,
// host ports are forwarded in.
func TestRun(t *testing.T) {
	testenv.NeedRoot(t)
	for _, prog := range []string{"ip", "curl", "socat", "getent"} {
		_, err := exec.LookPath(prog)
		testenv.NeedCommand(t, prog, err)
	}
	bin := filepath.Join(t.TempDir(), "berth")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	runNamespaces := func() (n int) {
		ents, _ := os.ReadDir("/run/netns")
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "berth-run-") {
				n++
			}
		}
		return n
	}
	before := runNamespaces()
	p4 := hostHTTP(t, "127.0.0.1:0")
	p6 := hostHTTP(t, "[::1]:0")
	berth := func(args ...string) (int, string, string) {
		t.Helper()
		return runBin(t, exec.Command(bin, args...))
	}

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"run"}, {"run", "-p", "80", "--", "true"}, {"run", "--bogus", "--", "true"}} {
			if code, _, errs := berth(args...); code != 2 || !strings.Contains(errs, "usage: berth run") {
				t.Errorf("%q: exit %d, %s", args, code, errs)
			}
		}
	})

	t.Run("curl", func(t *testing.T) {
		for url, want := range map[string]string{
			fmt.Sprintf("http://10.0.2.2:%d/hello", p4):  "hello 127.0.0.1:",
			fmt.Sprintf("http://[fd00::2]:%d/hello", p6): "hello [::1]:",
		} {
			code, out, errs := berth("run", "--", "curl", "-sSg", url)
			if code != 0 || !strings.HasPrefix(out, want) {
				t.Errorf("curl %s: exit %d, %q, %s", url, code, out, errs)
			}
		}
	})

	t.Run("download", func(t *testing.T) {
		n := int64(runDownload)
		h := sha256.New()
		io.Copy(h, services.NewPatternReader(n))
		want := hex.EncodeToString(h.Sum(nil))
		code, out, errs := berth("run", "--", "sh", "-c",
			fmt.Sprintf("curl -sS http://10.0.2.2:%d/%d | sha256sum", p4, n))
		if code != 0 || !strings.HasPrefix(out, want) {
			t.Errorf("download of %d bytes: exit %d, sha256 %q (want %s), %s", n, code, out, want, errs)
		}
	})

	t.Run("exit-status", func(t *testing.T) {
		if code, _, _ := berth("run", "--", "sh", "-c", "exit 7"); code != 7 {
			t.Errorf("exit 7: berth run exited %d", code)
		}
		if code, _, _ := berth("run", "--", "sh", "-c", "kill -TERM $$"); code != 128+int(syscall.SIGTERM) {
			t.Errorf("killed by SIGTERM: berth run exited %d", code)
		}
	})

	t.Run("refused", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		// curl's 7 is "failed to connect"; a RST fails it at once, where a dropped SYN
		// would wait for curl's connect timeout (set to 20 s here). The forward package's
		// tests check that the error is ECONNREFUSED.
		start := time.Now()
		code, _, errs := berth("run", "--", "curl", "-sS", "--connect-timeout", "20", fmt.Sprintf("http://10.0.2.2:%d/", port))
		if code != 7 || time.Since(start) > 10*time.Second || !strings.Contains(errs, "connect") {
			t.Errorf("closed host port: exit %d after %v, %s", code, time.Since(start), errs)
		}
	})

	t.Run("host-port-in-use", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		code, _, errs := berth("run", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), "--", "true")
		if code != 1 || !strings.Contains(errs, fmt.Sprint(port)) || !strings.Contains(errs, "address already in use") {
			t.Errorf("busy host port: exit %d, %s", code, errs)
		}
	})

	t.Run("dns", func(t *testing.T) {
		up := hostDNS(t)
		code, out, errs := berth("run", "--dns-upstream", up, "--", "getent", "ahostsv4", "service.example")
		if code != 0 || !strings.Contains(out, "192.0.2.7") {
			t.Errorf("getent through 10.0.2.3: exit %d, %q, %s", code, out, errs)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ln, _ = net.Listen("tcp", "127.0.0.1:0")
		q := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		sock := filepath.Join(t.TempDir(), "fwd.sock")
		cmd := exec.Command(bin, "run", "--control", sock, "-p", fmt.Sprintf("127.0.0.1:%d:8080", p), "--",
			"socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo peer=$SOCAT_PEERADDR")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Error("berth run did not end on SIGTERM")
			}
		}()
		ask := func(port int) string {
			var last string
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
				if err != nil {
					last = err.Error()
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				b, _ := io.ReadAll(c)
				c.Close()
				if len(b) > 0 {
					return string(b)
				}
				last = "empty answer (the server was not listening yet)"
			}
			return last
		}
		// The namespace sees the loopback client as the gateway.
		if got := ask(p); got != "peer=10.0.2.2\n" {
			t.Fatalf("-p: %q; berth: %s", got, errb.String())
		}
		fwd := func(args ...string) (int, string, string) {
			return berth(append([]string{"forward", "--control", sock}, args...)...)
		}
		mapping := fmt.Sprintf("127.0.0.1:%d:8080/tcp", q)
		if code, _, errs := fwd("add", mapping); code != 0 {
			t.Fatalf("forward add: exit %d, %s", code, errs)
		}
		if code, out, _ := fwd("ls"); code != 0 || !strings.Contains(out, mapping) || !strings.Contains(out, fmt.Sprintf(":%d:8080/tcp", p)) {
			t.Errorf("forward ls: exit %d, %q", code, out)
		}
		if got := ask(q); got != "peer=10.0.2.2\n" {
			t.Errorf("after forward add: %q", got)
		}
		if code, _, errs := fwd("rm", mapping); code != 0 {
			t.Errorf("forward rm: exit %d, %s", code, errs)
		}
		if _, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", q), time.Second); err == nil {
			t.Errorf("after forward rm: the host port still accepts")
		}
		if code, _, errs := fwd("add", fmt.Sprintf("127.0.0.1:%d:8080", p)); code != 1 || !strings.Contains(errs, "already forwarded") {
			t.Errorf("forward add of an existing mapping: exit %d, %s", code, errs)
		}
	})

	if after := runNamespaces(); after != before {
		t.Errorf("namespaces: %d before, %d after: berth run left one behind", before, after)
	}
}

// TestRunLimitFlags: the forwarder's limits reach the session's configuration, default to
// forward's, and a limit below 1 is a usage error naming the flag.
func TestRunLimitFlags(t *testing.T) {
	parse := func(args ...string) (forward.SessionConfig, error) {
		var ff fwdFlags
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		ff.register(fs)
		if err := fs.Parse(args); err != nil {
			return forward.SessionConfig{}, err
		}
		return ff.config("")
	}
	cfg, err := parse("--dns-upstream", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Forward
	if f.MaxTCPFlows != forward.DefaultMaxTCPFlows || f.MaxUDPFlows != forward.DefaultMaxUDPFlows ||
		f.MaxConnects != forward.DefaultMaxConnects || f.MaxConnectsPerDest != forward.DefaultMaxConnectsPerDest ||
		f.MaxConnectBacklog != forward.DefaultMaxConnectBacklog || f.MaxEchoSessions != forward.DefaultMaxEchoSessions ||
		f.MaxBuffered != forward.DefaultMaxBuffered {
		t.Errorf("defaults: %+v", f)
	}
	cfg, err = parse("--dns-upstream", "127.0.0.1", "--max-tcp-flows", "7", "--max-udp-flows", "8", "--max-connects", "9",
		"--max-connects-per-dest", "10", "--max-connect-backlog", "11", "--max-echo-sessions", "12", "--max-buffered", "1048576")
	if err != nil {
		t.Fatal(err)
	}
	f = cfg.Forward
	if f.MaxTCPFlows != 7 || f.MaxUDPFlows != 8 || f.MaxConnects != 9 || f.MaxConnectsPerDest != 10 ||
		f.MaxConnectBacklog != 11 || f.MaxEchoSessions != 12 || f.MaxBuffered != 1<<20 {
		t.Errorf("given: %+v", f)
	}
	if _, err := parse("--dns-upstream", "127.0.0.1", "--max-connects-per-dest", "0"); err == nil || !strings.Contains(err.Error(), "--max-connects-per-dest 0") {
		t.Errorf("--max-connects-per-dest 0: %v", err)
	}
}
