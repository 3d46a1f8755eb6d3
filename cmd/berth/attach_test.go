//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/testenv"
)

// TestAttach: berth attach serves a namespace that exists, and ends when the namespace is
// deleted, and on SIGTERM.
func TestAttach(t *testing.T) {
	testenv.NeedRoot(t)
	for _, prog := range []string{"ip", "curl"} {
		_, err := exec.LookPath(prog)
		testenv.NeedCommand(t, prog, err)
	}
	bin := filepath.Join(t.TempDir(), "berth")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port := hostHTTP(t, "127.0.0.1:0")
	for _, end := range []string{"netns-deleted", "sigterm"} {
		t.Run(end, func(t *testing.T) {
			name := fmt.Sprintf("berth-attach-test-%d-%s", os.Getpid(), end)
			if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
				t.Fatalf("ip netns add: %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
			cmd := exec.Command(bin, "attach", "--netns", name, "--control", "none")
			var errb bytes.Buffer
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() { cmd.Process.Kill() })
			var out []byte
			var err error
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				out, err = exec.Command("ip", "netns", "exec", name, "curl", "-sS", "--max-time", "5",
					fmt.Sprintf("http://10.0.2.2:%d/hello", port)).CombinedOutput()
				if err == nil {
					break
				}
			}
			if err != nil || !strings.HasPrefix(string(out), "hello 127.0.0.1:") {
				t.Fatalf("curl in the attached namespace: %v, %s; berth: %s", err, out, errb.String())
			}
			if end == "sigterm" {
				cmd.Process.Signal(syscall.SIGTERM)
			} else {
				exec.Command("ip", "netns", "delete", name).Run()
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("berth attach: %v; %s", err, errb.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("berth attach did not end after %s", end)
			}
		})
	}
}
