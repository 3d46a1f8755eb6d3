//go:build linux

package tun

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FromFile returns an Endpoint for a TUN descriptor that is already open and attached to
// a device (TUNSETIFF), such as one received from another process over a unix socket
// (SCM_RIGHTS): rootless `berth run` opens the device inside a user and network namespace
// and serves it from the host's namespace.
//
// The descriptor is duplicated, as net.FileConn does: close f when done with it; the
// device lives until both are closed. The device must be IFF_TUN|IFF_NO_PI, with
// IFF_VNET_HDR exactly when opts.VnetHdr; FromFile then sets the header size and asks for
// offloads as Open does. The MTU is neither set nor read: the device may belong to
// another network namespace, where ioctls by name from this one do not reach it, so
// opts.MTU must be the MTU the device has.
func FromFile(f *os.File, opts Options) (*Endpoint, error) { return fromFile(f, opts, false) }

func fromFile(f *os.File, opts Options, tap bool) (*Endpoint, error) {
	if opts.MTU <= 0 {
		return nil, errors.New("tun: FromFile needs Options.MTU (the device's MTU)")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tun: %w", err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("tun: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("tun: dup: %w", derr)
	}
	e, err := adopt(fd, opts, tap)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := e.start(fd); err != nil {
		return nil, err
	}
	return e, nil
}

// adopt checks that fd is a TUN (or TAP) device as opts describe and applies the vnet
// settings.
func adopt(fd int, opts Options, tap bool) (*Endpoint, error) {
	// The reader needs a non-blocking descriptor (see start). O_NONBLOCK belongs to the
	// open file description, so this also changes it for other holders of the file.
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("tun: set non-blocking: %w", err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil, fmt.Errorf("tun: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return nil, fmt.Errorf("tun: TUNGETIFF: %w (not a TUN descriptor attached to a device)", err)
	}
	want := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if tap {
		want = unix.IFF_TAP | unix.IFF_NO_PI
	}
	if opts.VnetHdr {
		want |= unix.IFF_VNET_HDR
	}
	if got := ifr.Uint16() & (unix.IFF_TUN | unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR); got != want {
		return nil, fmt.Errorf("tun: device %s has flags %#x, want %#x (IFF_%s|IFF_NO_PI, IFF_VNET_HDR as Options.VnetHdr)", ifr.Name(), got, want, kindName(tap))
	}
	e := &Endpoint{name: ifr.Name(), mtu: opts.MTU, vnet: opts.VnetHdr}
	if tap {
		e.l2 = ethHdrLen
	}
	if err := e.setVnet(fd); err != nil {
		return nil, err
	}
	return e, nil
}
