package berth

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// wrapSyscall shapes err as package net does for a failed system call: errnos become
// *os.SyscallError{Syscall: name} (bare when name is empty); net.ErrClosed, os.ErrDeadlineExceeded and other
// errors pass through unchanged. errors.Is(err, syscall.X) holds either way.
func wrapSyscall(name string, err error) error {
	var errno syscall.Errno
	// Without a system call name the errno stands alone: an *os.SyscallError with an
	// empty name would print as ": errno" (net's "read udp ...: : ..." texts).
	if name != "" && errors.As(err, &errno) {
		return os.NewSyscallError(name, errno)
	}
	return err
}

// opError builds the *net.OpError package net would return.
func opError(op, network string, source, addr net.Addr, syscallName string, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: network, Source: source, Addr: addr, Err: wrapSyscall(syscallName, err)}
}
