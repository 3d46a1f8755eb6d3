//go:build linux

package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/testenv"
)

// TestPodmanSlirp4netns runs Debian's Podman (as root, storage in the test's directory)
// with `--network slirp4netns` and berth as its network_cmd_path, on a busybox image
// the test imports (no registry): the container reaches the host's loopback and DNS,
// gets its addresses (IPv4 configured by slirp4netns -c, IPv6 by berth's router
// advertisements), and ports published with port_handler=slirp4netns reach it with the
// client's address. The host side is a namespace of the test's; nothing of berth is left
// once the container is gone.
func TestPodmanSlirp4netns(t *testing.T) {
	testenv.NeedRoot(t)
	needCommands(t, "podman", "runc", "busybox", "ip", "curl", "nsenter", "tar")
	dir := t.TempDir()
	bin := filepath.Join(dir, "berth")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	link := filepath.Join(dir, "slirp4netns")
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	// The image: busybox and its applets, an httpd whose CGI says who called.
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "etc", "tmp", "www/cgi-bin", "x"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	bb, _ := exec.LookPath("busybox")
	if b, err := os.ReadFile(bb); err != nil || os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755) != nil {
		t.Fatalf("busybox: %v", err)
	}
	for _, a := range []string{"sh", "wget", "nslookup", "httpd", "ip", "cat", "sleep", "echo", "test", "kill"} {
		os.Symlink("busybox", filepath.Join(root, "bin", a))
	}
	os.WriteFile(filepath.Join(root, "www/cgi-bin/peer"), []byte("#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"peer=$REMOTE_ADDR\"\n"), 0o755)
	tarball := filepath.Join(dir, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", root, "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	hostNS := fmt.Sprintf("drop-pmh-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", hostNS).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", hostNS).Run() })
	for _, c := range [][]string{{"link", "set", "lo", "up"}, {"addr", "add", "192.0.2.7/32", "dev", "lo"}} {
		if out, err := exec.Command("ip", append([]string{"-n", hostNS}, c...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", c, err, out)
		}
	}
	var p4 int
	var dns string
	inNetNS(t, "/run/netns/"+hostNS, func() {
		p4 = hostHTTP(t, "127.0.0.1:0")
		dns = hostDNS(t)
	})
	// runc, cgroupfs and explicit limits: crun and the default limits need more than a
	// CI sandbox may give (cgroups v2 only, CAP_SYS_RESOURCE).
	podman := func(args ...string) *exec.Cmd {
		// nsenter, not ip netns exec: that remounts /sys, and runc wants its cgroups.
		base := []string{"--net=/run/netns/" + hostNS, "podman", "--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"),
			"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc",
			"--network-cmd-path", link}
		cmd := exec.Command("nsenter", append(base, args...)...)
		cmd.Env = append(os.Environ(), "BERTH_DNS_UPSTREAM="+dns)
		return cmd
	}
	if out, err := podman("import", tarball, "localhost/berth-busybox:test").CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v: %s", err, out)
	}
	shared := filepath.Join(dir, "x") // the container's /x: it says ready, the test says finish
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`wget -q -O - http://10.0.2.2:%d/hello; echo; nslookup service.example 10.0.2.3; ip addr show dev tap0
httpd -p 80 -h /www; echo ready > /x/ready; while ! test -e /x/finish; do sleep 0.1; done`, p4)
	cmd := podman("run", "--rm", "--ulimit", "nofile=10000:10000", "--ulimit", "nproc=4096:4096",
		"--network", "slirp4netns:port_handler=slirp4netns,allow_host_loopback=true,enable_ipv6=true",
		"-p", "127.0.0.1:18710:80", "-p", "192.0.2.7:18711:80", "-v", shared+":/x",
		"localhost/berth-busybox:test", "sh", "-c", script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	finish := func() {
		os.WriteFile(filepath.Join(shared, "finish"), nil, 0o644)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("podman run did not end")
		}
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(shared, "ready")); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("podman run ended: %v: %s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			finish()
			t.Fatalf("the container did not get ready: %s", out.String())
		}
	}
	curl := func(args ...string) string {
		full := append([]string{"netns", "exec", hostNS, "curl", "-sS", "-m", "10"}, args...)
		o, _ := exec.Command("ip", full...).CombinedOutput()
		got := strings.TrimSpace(string(o))
		// busybox httpd serves on an IPv6 socket: IPv4 clients come v4-mapped.
		if a, err := netip.ParseAddr(strings.Trim(strings.TrimPrefix(got, "peer="), "[]")); err == nil {
			return "peer=" + a.Unmap().String()
		}
		return got
	}
	if got := curl("http://127.0.0.1:18710/cgi-bin/peer"); got != "peer=10.0.2.2" {
		t.Errorf("-p 127.0.0.1:18710:80 from the host's loopback: %q", got)
	}
	if got := curl("--interface", "192.0.2.7", "http://192.0.2.7:18711/cgi-bin/peer"); got != "peer=192.0.2.7" {
		t.Errorf("-p 192.0.2.7:18711:80 from 192.0.2.7: %q", got)
	}
	finish()
	for _, want := range []string{"hello 127.0.0.1:", "192.0.2.7", "10.0.2.100/24", "fd00::"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in the container's output:\n%s", want, out.String())
		}
	}
	for deadline := time.Now().Add(10 * time.Second); len(berthProcs(bin)) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("berth processes left after the container: %v", berthProcs(bin))
		}
	}
}
