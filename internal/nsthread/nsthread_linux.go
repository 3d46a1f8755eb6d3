// Package nsthread runs a function on an OS thread switched into another network
// namespace: what it opens (sockets, TUN devices) belongs to that namespace, and no other
// goroutine ever runs there.
package nsthread

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Run calls f on a thread of its own moved into the network namespace at path (a
// namespace file such as /run/netns/NAME or /proc/PID/ns/net; setns(2) wants
// CAP_SYS_ADMIN over it), then moves the thread back. Sockets and devices f opens stay
// in the namespace; a process f starts (os/exec forks from the calling thread) runs in
// it. A thread that cannot move back stays locked to its goroutine and ends with it
// (runtime.LockOSThread), so it is never handed to another goroutine. With path empty
// f runs at once, here. The error is f's, or the system call's as *os.PathError or
// *os.SyscallError.
func Run(path string, f func() error) error {
	if path == "" {
		return f()
	}
	target, err := os.Open(path)
	if err != nil {
		return err
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- os.NewSyscallError("setns "+path, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("back from %s: %w", path, os.NewSyscallError("setns", err)))
			return // the thread stays locked and ends with this goroutine
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}
