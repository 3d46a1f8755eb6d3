//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/link/tun"
)

// nobody is the unprivileged user the rootless tests run berth as.
const nobody = 65534

// rootlessEnv builds berth where an unprivileged user can run it and returns the binary
// and the environment for it.
type rootlessEnv struct {
	bin    string
	tmp    string // berth's TMPDIR, writable by nobody
	env    []string
	tunDir string // a tmpfs mount point for a private TUN node (see command)
}

func newRootlessEnv(t *testing.T) *rootlessEnv {
	t.Helper()
	testenv.NeedRoot(t)
	for _, prog := range []string{"ip", "curl", "socat", "getent", "unshare", "setpriv", "mount", "mknod"} {
		_, err := exec.LookPath(prog)
		testenv.NeedCommand(t, prog, err)
	}
	dir := t.TempDir()
	// t.TempDir makes 0700 directories; nobody must reach the binary.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for d := filepath.Dir(filepath.Dir(dir)); ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm()&0o001 == 0 {
			t.Fatalf("user %d cannot reach the test's binary: %s is not searchable by others (set TMPDIR)", nobody, d)
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	e := &rootlessEnv{bin: filepath.Join(dir, "berth"), tmp: filepath.Join(dir, "tmp"), tunDir: filepath.Join(dir, "tun")}
	if out, err := exec.Command("go", "build", "-o", e.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, d := range []string{e.tmp, e.tunDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(e.tmp, 0o1777)
	for _, kv := range os.Environ() {
		// root's runtime directory is not nobody's.
		if !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") && !strings.HasPrefix(kv, "TMPDIR=") {
			e.env = append(e.env, kv)
		}
	}
	e.env = append(e.env, "TMPDIR="+e.tmp)
	return e
}

// tunOpenToAll reports whether the host's /dev/net/tun is mode 0666, as udev makes it.
func tunOpenToAll() bool {
	st, err := os.Stat("/dev/net/tun")
	return err == nil && st.Mode().Perm()&0o666 == 0o666
}

// command returns berth ARGS run as nobody. The rootless mode needs /dev/net/tun open to
// every user; where the host's node is not (a devtmpfs without udev makes it 0600), or
// when tunMode is not 0, berth runs in a private mount namespace whose /dev/net/tun is a
// node of that mode (default 0666) on a tmpfs: nothing changes for the rest of the host.
func (e *rootlessEnv) command(tunMode os.FileMode, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if tunMode == 0 && tunOpenToAll() {
		cmd = exec.Command(e.bin, args...)
		// Groups empty, not NoSetGroups: root's supplementary groups are dropped too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	} else {
		if tunMode == 0 {
			tunMode = 0o666
		}
		script := fmt.Sprintf(`mount -t tmpfs -o mode=755 berth-test %s && mknod -m %o %s/tun c 10 200 && mount --bind %s/tun /dev/net/tun && exec setpriv --reuid %d --regid %d --clear-groups "$@"`,
			e.tunDir, tunMode, e.tunDir, e.tunDir, nobody, nobody)
		cmd = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", e.bin}, args...)...)
	}
	cmd.Env = e.env
	return cmd
}

// berthProcs lists the processes running the binary bin.
func berthProcs(bin string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == bin {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// childOf waits for the child of pid whose command name is comm.
func childOf(t *testing.T, pid int, comm string) int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		// Children are listed per thread: berth forks from a thread of its own.
		var kids []string
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, task := range tasks {
			b, _ := os.ReadFile(task)
			kids = append(kids, strings.Fields(string(b))...)
		}
		for _, f := range kids {
			c, _ := strconv.Atoi(f)
			if name, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c)); strings.TrimSpace(string(name)) == comm {
				return c
			}
		}
	}
	t.Fatalf("no child %q of berth (pid %d) after 10 s", comm, pid)
	return 0
}

// TestRunRootless runs `berth run` as an unprivileged user: curl in the namespace reaches
// servers on the host's loopback over IPv4 and IPv6, DNS goes to 10.0.2.3, -p forwards,
// exit statuses and signals come through, and nothing is left behind.
func TestRunRootless(t *testing.T) {
	e := newRootlessEnv(t)
	if !tunOpenToAll() {
		t.Logf("/dev/net/tun is not open to every user here: berth runs with a private 0666 node")
	}
	p4 := hostHTTP(t, "127.0.0.1:0")
	p6 := hostHTTP(t, "[::1]:0")
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	berth := func(args ...string) (int, string, string) {
		t.Helper()
		return runBin(t, e.command(0, args...))
	}
	hostUserNS, _ := os.Readlink("/proc/self/ns/user")

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

	t.Run("namespaces", func(t *testing.T) {
		// COMMAND is root in a user namespace of its own, and sees berth0 configured.
		code, out, errs := berth("run", "--", "sh", "-c", "id -u; readlink /proc/self/ns/user; ip -br addr show dev berth0; ip route; ip -6 route; cat /etc/resolv.conf; ip -o link show dev berth0")
		if code != 0 {
			t.Fatalf("exit %d, %s", code, errs)
		}
		for _, want := range []string{"0\nuser:[", "10.0.2.100/24", "fd00::100/64", "default via 10.0.2.2 dev berth0", "default via fd00::2 dev berth0",
			"nameserver 10.0.2.3\nnameserver fd00::3\n", fmt.Sprintf("qlen %d", tun.DefaultTxQueueLen)} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in:\n%s", want, out)
			}
		}
		if strings.Contains(out, hostUserNS) {
			t.Errorf("COMMAND runs in the host's user namespace %s:\n%s", hostUserNS, out)
		}
	})

	t.Run("dns", func(t *testing.T) {
		up := hostDNS(t)
		code, out, errs := berth("run", "--dns-upstream", up, "--", "getent", "ahostsv4", "service.example")
		if code != 0 || !strings.Contains(out, "192.0.2.7") {
			t.Errorf("getent through 10.0.2.3: exit %d, %q, %s", code, out, errs)
		}
	})

	t.Run("exit-status", func(t *testing.T) {
		if code, _, errs := berth("run", "--", "sh", "-c", "exit 7"); code != 7 {
			t.Errorf("exit 7: berth run exited %d, %s", code, errs)
		}
		if code, _, _ := berth("run", "--", "sh", "-c", "kill -TERM $$"); code != 128+int(syscall.SIGTERM) {
			t.Errorf("killed by SIGTERM: berth run exited %d", code)
		}
		if code, _, errs := berth("run", "--", "no-such-command-berth"); code != 127 || !strings.Contains(errs, "no-such-command-berth") {
			t.Errorf("COMMAND not found: exit %d, %s", code, errs)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		cmd := e.command(0, "run", "--control", "none", "-p", fmt.Sprintf("127.0.0.1:%d:8080", p), "--",
			"socat", "TCP-LISTEN:8080,reuseaddr", "SYSTEM:echo peer=$SOCAT_PEERADDR")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var got string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && got == ""; time.Sleep(100 * time.Millisecond) {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second)
			if err != nil {
				continue
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(c)
			c.Close()
			got = string(b)
		}
		if got != "peer=10.0.2.2\n" {
			t.Errorf("-p: %q; berth: %s", got, errb.String())
		}
		// socat (without fork) ends after one connection, and berth with it.
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("berth run: %v, %s", err, errb.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("berth run did not end with COMMAND")
		}
	})

	t.Run("signal", func(t *testing.T) {
		ready := filepath.Join(e.tmp, "ready")
		cmd := e.command(0, "run", "--control", "none", "--", "sh", "-c",
			fmt.Sprintf(`trap 'exit 3' TERM; touch %s; while :; do sleep 0.1; done`, ready))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(ready)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(ready); err == nil {
				break
			}
		}
		cmd.Process.Signal(syscall.SIGTERM) // berth passes it on to COMMAND
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
			if code := cmd.ProcessState.ExitCode(); code != 3 {
				t.Errorf("SIGTERM to berth: exit %d, want COMMAND's trap's 3", code)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("berth run did not end on SIGTERM")
		}
	})

	t.Run("berth-killed", func(t *testing.T) {
		// Without berth the namespace has no network: COMMAND dies with it
		// (PR_SET_PDEATHSIG) instead of lingering.
		cmd := e.command(0, "run", "--control", "none", "--", "sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		sleeper := childOf(t, cmd.Process.Pid, "sleep")
		cmd.Process.Kill()
		cmd.Wait()
		if !alive(sleeper) {
			return
		}
		for deadline := time.Now().Add(5 * time.Second); alive(sleeper); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				syscall.Kill(sleeper, syscall.SIGKILL)
				t.Fatalf("COMMAND (pid %d) outlived berth", sleeper)
			}
		}
	})

	// Nothing left behind: no berth process, no berth0 on the host, no temporary file, and
	// the host's resolv.conf untouched.
	if pids := berthProcs(e.bin); len(pids) > 0 {
		t.Errorf("berth processes left: %v", pids)
	}
	if out, err := exec.Command("ip", "link", "show", "berth0").CombinedOutput(); err == nil {
		t.Errorf("berth0 exists on the host:\n%s", out)
	}
	if m, _ := filepath.Glob(filepath.Join(e.tmp, "berth-resolv-*")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
	if b, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(b, hostResolv) {
		t.Errorf("the host's /etc/resolv.conf changed:\n%s", b)
	}
}

// TestRunRootlessErrors: clear errors when the rootless mode cannot work.
func TestRunRootlessErrors(t *testing.T) {
	e := newRootlessEnv(t)
	t.Run("tun-not-open-to-all", func(t *testing.T) {
		code, _, errs := runBin(t, e.command(0o600, "run", "--", "true"))
		if code != 1 || !strings.Contains(errs, "/dev/net/tun") || !strings.Contains(errs, "0666") {
			t.Errorf("exit %d, %s", code, errs)
		}
	})
	t.Run("no-user-namespaces", func(t *testing.T) {
		// A user namespace whose limit of nested user namespaces is 0 (the limit is per
		// user namespace): berth in it cannot make one, and must say why.
		cmd := exec.Command("unshare", "--user", "--map-root-user", "sh", "-c",
			`echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"`, "sh", e.bin, "run", "--userns", "--", "true")
		cmd.Env = e.env
		code, _, errs := runBin(t, cmd)
		if code != 1 || !strings.Contains(errs, "cannot create a user namespace") || !strings.Contains(errs, "user.max_user_namespaces is 0") {
			t.Errorf("exit %d, %s", code, errs)
		}
	})
	t.Run("mtu", func(t *testing.T) {
		code, _, errs := runBin(t, e.command(0, "run", "--mtu", "1000", "--", "true"))
		if code != 1 || !strings.Contains(errs, "below IPv6's minimum") {
			t.Errorf("exit %d, %s", code, errs)
		}
	})
}

// TestRunUserns: root asks for the rootless mode with --userns.
func TestRunUserns(t *testing.T) {
	e := newRootlessEnv(t)
	p4 := hostHTTP(t, "127.0.0.1:0")
	hostUserNS, _ := os.Readlink("/proc/self/ns/user")
	cmd := exec.Command(e.bin, "run", "--userns", "--no-ipv6", "--", "sh", "-c",
		fmt.Sprintf("readlink /proc/self/ns/user; ip -6 addr show dev berth0 scope global; curl -sS http://10.0.2.2:%d/hello; exit 9", p4))
	cmd.Env = e.env
	code, out, errs := runBin(t, cmd)
	if code != 9 || !strings.Contains(out, "hello 127.0.0.1:") || strings.Contains(out, hostUserNS) || strings.Contains(out, "fd00::100") {
		t.Errorf("berth run --userns --no-ipv6: exit %d (want 9), in the host's %s, stdout:\n%s\nstderr: %s", code, hostUserNS, out, errs)
	}
	// Root mode too: a COMMAND not found is 127 before any namespace is made.
	cmd = exec.Command(e.bin, "run", "--", "no-such-command-berth")
	cmd.Env = e.env
	if code, _, errs := runBin(t, cmd); code != 127 || !strings.Contains(errs, `"no-such-command-berth": executable file not found`) {
		t.Errorf("root mode, COMMAND not found: exit %d, %s", code, errs)
	}
	if pids := berthProcs(e.bin); len(pids) > 0 {
		t.Errorf("berth processes left: %v", pids)
	}
}
