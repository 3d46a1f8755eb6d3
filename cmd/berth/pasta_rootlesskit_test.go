//go:build linux

package main

import (
	"bytes"
	"fmt"
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
	hostNS := fmt.Sprintf("drop-rkh-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", hostNS).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", hostNS).Run() })
	for _, c := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", "192.0.2.7/32", "dev", "lo"},
	} {
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
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
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
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				if _, err := os.Stat(ready); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the child did not get ready; rootlesskit: %s", out.String())
				}
				select {
				case err := <-done:
					done <- err
					t.Fatalf("rootlesskit exited: %v: %s", err, out.String())
				default:
				}
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
