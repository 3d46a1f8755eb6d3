package main

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLI builds the berth binary and runs it as a user would.
func TestCLI(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "berth")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args       []string
		code       int
		stdout     []string // substrings that must appear, in order
		stderr     string
		notStdout  string
		stdoutRows int // exact number of lines, if > 0
	}{
		{args: []string{"services", "https"}, stdout: []string{"https                 443/tcp", "https                 443/udp", "443/sctp"}},
		{args: []string{"services", "22/tcp"}, stdout: []string{"ssh                   22/tcp", "# The Secure Shell (SSH) Protocol"}, stdoutRows: 1},
		{args: []string{"services", "SSH/udp"}, stdout: []string{"ssh                   22/udp"}, stdoutRows: 1},
		{args: []string{"services", "x11/tcp"}, stdout: []string{"x11                   6000-6063/tcp"}, stdoutRows: 1},
		{args: []string{"services", "6010/udp"}, stdout: []string{"x11", "6000-6063/udp"}},
		{args: []string{"services", "htps"}, code: 2, stderr: `berth services: unknown service "htps"`},
		{args: []string{"services", "70000"}, code: 2, stderr: "port 70000 out of range 0-65535"},
		{args: []string{"services", "65535/tcp"}, code: 2, stderr: "no service registered for port 65535/tcp"},
		{args: []string{"services", "https/tcpp"}, code: 2, stderr: `unknown protocol "tcpp"`},
		{args: []string{"services", ""}, code: 2, stderr: "usage: berth services [NAME|PORT[/PROTO]]..."},
		{args: []string{"port", "443"}, stdout: []string{"443 system (well-known) 0-1023: https (tcp, udp, sctp)"}},
		{args: []string{"port", "8080"}, stdout: []string{"8080 user (registered) 1024-49151: http-alt"}},
		{args: []string{"port", "50000"}, stdout: []string{"50000 dynamic (ephemeral) 49152-65535"}},
		{args: []string{"port", "ssh"}, stdout: []string{"22 system (well-known)"}},
		{args: []string{"port", "70000"}, code: 1, stderr: "berth port: port 70000 out of range 0-65535"},
		{args: []string{"port", "htps"}, code: 1, stderr: `berth port: unknown service "htps"`},
		{args: []string{"port", ""}, code: 1, stderr: "berth port: empty port"},
		{args: []string{"port"}, code: 2, stderr: "usage: berth port"},
		{args: []string{"help"}, stdout: []string{"help", "port", "services"}},
		{args: []string{"help", "services"}, stdout: []string{"usage: berth services [NAME|PORT[/PROTO]]...", "getent"}},
		{args: []string{"help", "nope"}, code: 2, stderr: `unknown command "nope"`},
		{args: []string{"nope"}, code: 2, stderr: `berth: unknown command "nope"`},
		{args: nil, code: 2, stderr: "usage: berth COMMAND"},
	} {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			cmd := exec.Command(bin, c.args...)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != c.code {
				t.Errorf("exit %d, want %d; stderr %q", code, c.code, errb.String())
			}
			rest := out.String()
			for _, want := range c.stdout {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Errorf("stdout lacks %q (in order):\n%s", want, out.String())
					break
				}
				rest = rest[i+len(want):]
			}
			if c.stdoutRows > 0 {
				if n := strings.Count(out.String(), "\n"); n != c.stdoutRows {
					t.Errorf("%d lines, want %d:\n%s", n, c.stdoutRows, out.String())
				}
			}
			if !strings.Contains(errb.String(), c.stderr) {
				t.Errorf("stderr %q lacks %q", errb.String(), c.stderr)
			}
			if c.code != 0 && out.Len() > 0 && c.args != nil && c.args[0] != "help" {
				t.Errorf("failure wrote to stdout: %q", out.String())
			}
			if c.code == 0 && errb.Len() > 0 {
				t.Errorf("success wrote to stderr: %q", errb.String())
			}
		})
	}
}

// TestCommandTable: every command of the table has one name, its texts and a run
// function, and the table lists them in order.
func TestCommandTable(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for _, c := range commandTable() {
		if seen[c.name] {
			t.Errorf("command %q listed twice", c.name)
		}
		seen[c.name] = true
		if c.name <= prev {
			t.Errorf("command %q listed after %q: the table is in alphabetical order", c.name, prev)
		}
		prev = c.name
		if c.summary == "" || c.run == nil || !strings.HasPrefix(c.usage, c.name) {
			t.Errorf("command %q: summary %q, usage %q, run set %v", c.name, c.summary, c.usage, c.run != nil)
		}
		if lookup(c.name) == nil {
			t.Errorf("lookup(%q) found nothing", c.name)
		}
	}
	for _, name := range []string{"attach", "capture", "completion", "demo", "forward", "help", "man", "port", "run", "services", "ss", "stats", "up", "version"} {
		if !seen[name] {
			t.Errorf("command %q missing from the table", name)
		}
	}
	if lookup(rootlessChildArg) != nil {
		t.Errorf("the rootless child's hidden argument is a listed command")
	}
}
