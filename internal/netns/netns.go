//go:build linux

// Package netns is the kernel-interop test harness: it creates network namespaces, veth
// pairs and TUN devices in them, runs programs (`ip netns exec`) and Go code (on an OS
// thread switched into the namespace) there, and adds nftables loss. Everything it creates
// is removed by the test's cleanup, which also runs when the test fails or panics;
// namespaces left behind by a test binary that was killed are removed by the next New.
//
// Traffic stays inside the namespaces: tests give their devices addresses only there.
//
// Package tunhost (below this one) adds the last piece: a berth stack running on a TUN
// device in a namespace, the kernel on the other side.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/testenv"
)

// namePrefix starts the name of every namespace this package makes; the creating
// process's PID follows, so that a later run can tell which ones are stale.
const namePrefix = "berthtest-"

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// NS is a named network namespace made for one test.
type NS struct {
	Name string
}

var counter atomic.Uint64

// New creates a network namespace with a unique name, brings its loopback up, and
// registers a cleanup that deletes it (also when the test fails or panics). It needs
// root and the ip program (testenv rules: a skip outside CI, a failure in CI).
func New(t testing.TB) *NS {
	t.Helper()
	testenv.NeedRoot(t)
	_, err := exec.LookPath("ip")
	testenv.NeedCommand(t, "ip", err)
	removeStale()
	var r [3]byte
	rand.Read(r[:])
	// IFNAMSIZ does not limit netns names, but keep them short for `ip netns list`.
	name := fmt.Sprintf("%s%d-%d-%s", namePrefix, os.Getpid(), counter.Add(1), hex.EncodeToString(r[:]))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("netns: ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Errorf("netns: %v", err)
		}
	})
	ns.IP(t, "link", "set", "lo", "up")
	return ns
}

// IP runs `ip -n NAME args...`: the ip program configuring the namespace (cheaper than
// Run's `ip netns exec`). A failure fails the test, with ip's output.
func (ns *NS) IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("netns: ip -n %s %s: %v\n%s", ns.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Delete deletes the namespace's name. The kernel frees the namespace, and the veth and
// TUN devices in it, once no process, thread or socket uses it any more. Deleting a
// namespace that is gone already is not an error.
func (ns *NS) Delete() error {
	out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput()
	if err != nil && !Exists(ns.Name) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", ns.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

// Exists reports whether a namespace of that name exists (`ip netns` knows it).
func Exists(name string) bool {
	_, err := os.Stat(netnsDir + "/" + name)
	return err == nil
}

// List returns the names of this package's namespaces that exist now (made by any
// process).
func List() []string {
	ents, _ := os.ReadDir(netnsDir)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), namePrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// removeStale deletes namespaces made by test processes that no longer run (killed by a
// timeout or a signal, so their cleanups never ran).
func removeStale() {
	for _, name := range List() {
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(name, namePrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// Command returns a command that runs name with args inside the namespace
// (`ip netns exec`). ctx kills it, as with exec.CommandContext.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs args[0] with args[1:] inside the namespace, waits at most a minute, and
// returns its combined output; a failure fails the test, with the output.
func (ns *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.Output(args...)
	if err != nil {
		t.Fatalf("netns %s: %s: %v\n%s", ns.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Output is Run that returns the error instead of failing the test.
func (ns *NS) Output(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := ns.Command(ctx, args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

// Do runs f on an OS thread switched into the namespace and returns f's error. Sockets
// and devices that f creates belong to the namespace and stay there; goroutines that f
// starts run on other threads, in the original namespace (what matters for a socket or a
// TUN device is where it was created). After f the thread switches back; if it cannot,
// the thread is not reused: it ends with its goroutine.
func (ns *NS) Do(f func() error) error {
	type result struct {
		err      error
		panicked any
	}
	done := make(chan result, 1)
	go func() {
		var res result
		defer func() { done <- res }()
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(netnsDir + "/" + ns.Name)
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("netns: %w", err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("netns: setns %s: %w", ns.Name, err)
			return
		}
		defer func() {
			if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
				// Stay locked: the goroutine ends and takes the thread with it, so no
				// other goroutine ever runs in the wrong namespace.
				if res.err == nil {
					res.err = fmt.Errorf("netns: restoring the original namespace: %w", err)
				}
				return
			}
			runtime.UnlockOSThread()
		}()
		defer func() {
			if p := recover(); p != nil {
				res.panicked = p
			}
		}()
		res.err = f()
	}()
	res := <-done
	if res.panicked != nil {
		panic(res.panicked)
	}
	return res.err
}

// Listen is net.Listen inside the namespace.
func (ns *NS) Listen(network, address string) (ln net.Listener, err error) {
	err = ns.Do(func() error {
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// ListenPacket is net.ListenPacket inside the namespace.
func (ns *NS) ListenPacket(network, address string) (pc net.PacketConn, err error) {
	err = ns.Do(func() error {
		pc, err = net.ListenPacket(network, address)
		return err
	})
	return pc, err
}

// Dial is net.Dialer.DialContext inside the namespace (the connection's socket is
// created there and stays there).
func (ns *NS) Dial(ctx context.Context, network, address string) (c net.Conn, err error) {
	err = ns.Do(func() error {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}
