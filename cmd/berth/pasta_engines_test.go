//go:build linux

package main

import (
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

// rootlesskitUser is the ordinary user the rootlesskit tests run as; the test makes it
// (useradd) with subordinate id ranges, as a rootless Docker host has.
const rootlesskitUser = "berth-drop"

func rootlesskitSetup(t *testing.T) (rk string) {
	t.Helper()
	testenv.NeedRoot(t)
	rk, err := exec.LookPath("rootlesskit")
	if err != nil {
		if gp, e := exec.Command("go", "env", "GOPATH").Output(); e == nil {
			p := filepath.Join(strings.TrimSpace(string(gp)), "bin", "rootlesskit")
			if _, e := os.Stat(p); e == nil {
				rk, err = p, nil
			}
		}
	}
	testenv.NeedCommand(t, "rootlesskit", err)
	needCommands(t, "newuidmap", "newgidmap", "useradd", "setpriv", "unshare", "socat", "curl", "getent", "nsenter", "ip", "mknod")
	if _, err := exec.Command("id", rootlesskitUser).Output(); err != nil {
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/bin/sh", rootlesskitUser).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v: %s", err, out)
		}
	}
	// 65536 subordinate ids from 1,000,000 on, unless the user has a range already.
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, _ := os.ReadFile(f)
		if !strings.Contains("\n"+string(b), "\n"+rootlesskitUser+":") {
			fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(fh, "%s:1000000:65536\n", rootlesskitUser)
			fh.Close()
		}
	}
	// rootlesskit must be where the user can run it.
	return rk
}

// TestRootlesskit runs rootlesskit v3 as an ordinary user with berth as its network
// helper, each of --net=slirp4netns (--port-driver=slirp4netns) and --net=pasta
// (--port-driver=pesto), with and without --disable-host-loopback, with --ipv6. The
// host side is a namespace of the test's whose loopback holds 192.0.2.7: the child
// reaches the host's loopback (when allowed) and DNS, and ports published with -p are
// reached from the host, the child seeing the client's address (192.0.2.7 for a client
// of that address, the gateway for a loopback one), TCP and UDP. When the child exits,
// rootlesskit and berth are gone, leaving no process.
func TestRootlesskit(t *testing.T) {
	rkSrc := rootlesskitSetup(t)
	e := newRootlessEnv(t)
	dir := filepath.Dir(e.bin)
	rk := filepath.Join(dir, "rootlesskit")
	if b, err := os.ReadFile(rkSrc); err != nil || os.WriteFile(rk, b, 0o755) != nil {
		t.Fatalf("copying rootlesskit: %v", err)
	}
	for _, name := range []string{"slirp4netns", "pasta", "pesto"} {
		if err := os.Symlink(e.bin, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	th := newTestHost(t, fmt.Sprintf("drop-rkh-%d", os.Getpid()))
	hostNS, p4, dns := th.ns, th.p4, th.dns
	host := []string{"ip", "netns", "exec", hostNS}

	cases := []struct {
		net, portDriver string
		noLoopback      bool
	}{
		// rootlesskit makes tap0 a TAP device before it starts slirp4netns; pasta
		// makes its own.
		{"slirp4netns", "slirp4netns", false},
		{"slirp4netns", "slirp4netns", true},
		{"pasta", "pesto", false},
		{"pasta", "pesto", true},
		// implicit: pasta -t auto -u auto forwards what the child listens on, to the
		// same port on the host.
		{"pasta", "implicit", false},
	}
	for i, c := range cases {
		name := c.net
		if c.noLoopback {
			name += "-disable-host-loopback"
		}
		implicit := c.portDriver == "implicit"
		if implicit {
			name += "-implicit"
		}
		t.Run(name, func(t *testing.T) {
			pAll, pLo, pUDP := 18400+10*i, 18401+10*i, 18402+10*i
			tcpPort, udpPort := 80, 53
			if implicit {
				tcpPort, udpPort = pAll, pUDP // the host's ports are the child's
			}
			state := filepath.Join(e.tmp, "state-"+name)
			ready, finish := filepath.Join(e.tmp, "ready-"+name), filepath.Join(e.tmp, "finish-"+name)
			loopCheck := fmt.Sprintf(`curl -sS -m 5 http://10.0.2.2:%d/hello > %s/loop-%s 2>&1`, p4, e.tmp, name)
			script := strings.Join([]string{
				loopCheck + "; echo $? >> " + e.tmp + "/loop-" + name,
				"getent ahostsv4 service.example > " + e.tmp + "/dns-" + name + " 2>&1",
				"ip -br addr > " + e.tmp + "/addr-" + name,
				// Their output is not rootlesskit's: cmd.Wait would wait for them.
				fmt.Sprintf(`socat UDP4-RECVFROM:%d,fork SYSTEM:'echo peer=$SOCAT_PEERADDR' </dev/null >/dev/null 2>&1 & s1=$!`, udpPort),
				fmt.Sprintf(`socat TCP4-LISTEN:%d,fork,reuseaddr SYSTEM:'echo peer=$SOCAT_PEERADDR' </dev/null >/dev/null 2>&1 & s2=$!`, tcpPort),
				"sleep 0.5; touch " + ready,
				"i=0; while [ ! -e " + finish + " ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
				"kill $s1 $s2",
			}, "\n")
			args := []string{"--net=" + c.net, "--port-driver=" + c.portDriver, "--ipv6", "--copy-up=/etc", "--state-dir=" + state}
			if !implicit {
				args = append(args, fmt.Sprintf("-p=0.0.0.0:%d:80/tcp", pAll), fmt.Sprintf("-p=127.0.0.1:%d:80/tcp", pLo), fmt.Sprintf("-p=127.0.0.1:%d:53/udp", pUDP))
			}
			if c.net == "slirp4netns" {
				args = append(args, "--slirp4netns-binary="+filepath.Join(dir, "slirp4netns"))
			} else {
				args = append(args, "--pasta-binary="+filepath.Join(dir, "pasta"), "--pesto-binary="+filepath.Join(dir, "pesto"))
			}
			if c.noLoopback {
				args = append(args, "--disable-host-loopback")
			}
			args = append(args, "sh", "-c", script)
			// A private /dev/net/tun open to every user, as udev makes it (see
			// rootlessEnv.command), then the user: rootlesskit's parent stays in the
			// test's host namespace.
			wrap := fmt.Sprintf(`mount -t tmpfs -o mode=755 berth-test %s && mknod -m 666 %s/tun c 10 200 && mount --bind %s/tun /dev/net/tun && exec setpriv --reuid %s --regid %s --init-groups env BERTH_DNS_UPSTREAM=%s PATH=%s:/usr/sbin:/usr/bin:/sbin:/bin "$@"`,
				e.tunDir, e.tunDir, e.tunDir, rootlesskitUser, rootlesskitUser, dns, dir)
			full := append(append([]string{}, host...), append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", wrap, "sh", rk}, args...)...)
			cmd := exec.Command(full[0], full[1:]...)
			cmd.Env = e.env
			out, done := startCmd(t, cmd)
			defer func() {
				os.WriteFile(finish, nil, 0o644)
				select {
				case <-done:
				case <-time.After(20 * time.Second):
					cmd.Process.Kill()
					<-done
					t.Errorf("rootlesskit did not exit after its child")
				}
			}()
			if err := waitFile(ready, 30*time.Second, done); err != nil {
				t.Fatalf("the child did not get ready: %v; rootlesskit: %s", err, out.String())
			}
			read := func(what string) string {
				b, _ := os.ReadFile(filepath.Join(e.tmp, what+"-"+name))
				return string(b)
			}
			if loop := read("loop"); c.noLoopback == strings.HasPrefix(loop, "hello 127.0.0.1:") {
				t.Errorf("curl to the host's loopback (disabled: %v): %q", c.noLoopback, loop)
			}
			if got := read("dns"); !strings.Contains(got, "192.0.2.7") {
				t.Errorf("DNS through rootlesskit's resolv.conf: %q", got)
			}
			if got := read("addr"); !strings.Contains(got, "10.0.2.100/24") {
				t.Errorf("the child's addresses: %q", got)
			}
			checks := []struct{ proto, addr, bind, want string }{
				{"TCP4", fmt.Sprintf("192.0.2.7:%d", pAll), "192.0.2.7", "peer=192.0.2.7"},
				{"TCP4", fmt.Sprintf("127.0.0.1:%d", pLo), "", "peer=10.0.2.2"},
				{"UDP4", fmt.Sprintf("127.0.0.1:%d", pUDP), "", "peer=10.0.2.2"},
			}
			if implicit {
				checks = append(checks[:1], checks[2:]...)
			}
			for _, p := range checks {
				if got := dialPeer(t, host, p.proto, p.addr, p.bind); got != p.want {
					t.Errorf("published %s %s: %q, want %q; rootlesskit: %s", p.proto, p.addr, got, p.want, out.String())
				}
			}
			os.WriteFile(finish, nil, 0o644)
			select {
			case err := <-done:
				done <- err
				if err != nil {
					t.Errorf("rootlesskit: %v: %s", err, out.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("rootlesskit did not exit with its child")
			}
			for deadline := time.Now().Add(5 * time.Second); len(berthProcs(e.bin)) > 0; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("berth processes left after rootlesskit: %v", berthProcs(e.bin))
				}
			}
			if _, err := os.Stat(state); err == nil {
				ents, _ := os.ReadDir(state)
				if len(ents) > 0 {
					t.Errorf("rootlesskit's state directory keeps %v", ents)
				}
			}
		})
	}
}

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
	dir, bin := buildDropIn(t, "slirp4netns")
	link := filepath.Join(dir, "slirp4netns")
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
	th := newTestHost(t, fmt.Sprintf("drop-pmh-%d", os.Getpid()))
	hostNS, p4, dns := th.ns, th.p4, th.dns
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
	out, done := startCmd(t, cmd)
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
	if err := waitFile(filepath.Join(shared, "ready"), 60*time.Second, done); err != nil {
		finish()
		t.Fatalf("the container did not get ready: %v: %s", err, out.String())
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
