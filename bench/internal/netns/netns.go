//go:build linux

// Package netns creates throw-away Linux network namespaces for the kernel-peer benchmarks
// and runs code inside them. It needs root and the ip(8) command.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

var seq atomic.Int64

// NS is a named network namespace (ip netns add).
type NS struct {
	Name string
}

// New creates a fresh namespace with its loopback up.
func New(prefix string) (*NS, error) {
	n := &NS{Name: fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))}
	if err := run("ip", "netns", "add", n.Name); err != nil {
		return nil, err
	}
	if err := n.IP("link", "set", "lo", "up"); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// IP runs "ip -n NAME args...".
func (n *NS) IP(args ...string) error {
	return run("ip", append([]string{"-n", n.Name}, args...)...)
}

// Close deletes the namespace (and the devices in it).
func (n *NS) Close() error { return run("ip", "netns", "del", n.Name) }

// Do runs f on an OS thread switched into the namespace. Sockets and TUN devices that f
// creates belong to the namespace for the rest of their lives, whichever thread uses them
// afterwards.
func (n *NS) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(orig)
	target, err := unix.Open("/run/netns/"+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", n.Name, err)
	}
	ferr := f()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime ends it with this goroutine instead of
		// reusing a thread stuck in the wrong namespace.
		return fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// OpenTUN creates a TUN device (IFF_TUN|IFF_NO_PI: bare IP packets) named name inside the
// namespace and returns its file descriptor.
func (n *NS) OpenTUN(name string) (int, error) {
	fd := -1
	err := n.Do(func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		return nil
	})
	if err != nil {
		return -1, err
	}
	return fd, nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
