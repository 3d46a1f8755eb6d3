//go:build linux

package tun

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// ethHdrLen is the Ethernet II header a TAP device's frames begin with (destination and
// source MAC, EtherType; IEEE 802.3 §3.1.1), without preamble or FCS, which the TAP
// device neither sends nor expects.
const ethHdrLen = 14

// vlanTagLen is one IEEE 802.1Q tag: a tagged frame may be this much longer than
// MTU+ethHdrLen, and is delivered so that the Ethernet layer counts and drops it.
const vlanTagLen = 4

// OpenTAP creates the TAP device name (the kernel picks one when name is empty or holds a
// pattern like "tap%d"), or attaches to an existing TAP device of that name, and starts
// the reader: IFF_TAP|IFF_NO_PI, with IFF_VNET_HDR and the offloads of Options.VnetHdr as
// for a TUN device.
//
// The endpoint is a frame device: every packet it delivers and takes is an Ethernet II
// frame (14-byte header, no FCS). MTU is still the largest IP packet (the device's MTU),
// so frames are up to MTU()+14 bytes; WriteGSO takes an Ethernet frame that carries one
// TCP super-segment, MaxInboundSize counts the header. Frames shorter than an Ethernet
// header, and frames longer than MTU()+14 (+4 for one VLAN tag) that are not
// super-segments, are dropped and counted (Stats.RxRunt, RxTooLong). Answering ARP and
// NDP is the Ethernet layer's job (link/ether), not the device's.
//
// With Options.NetNS the device is opened inside that network namespace (see Options).
func OpenTAP(name string, opts Options) (*Endpoint, error) { return open(name, opts, true) }

// TAPFromFile is FromFile for a TAP descriptor (IFF_TAP|IFF_NO_PI, IFF_VNET_HDR exactly
// when opts.VnetHdr): the endpoint is a frame device as OpenTAP describes.
func TAPFromFile(f *os.File, opts Options) (*Endpoint, error) { return fromFile(f, opts, true) }

// IsTAP reports whether the endpoint's device is a TAP device (Ethernet frames) rather
// than a TUN device (IP packets).
func (e *Endpoint) IsTAP() bool { return e.l2 != 0 }

func kindName(tap bool) string {
	if tap {
		return "TAP"
	}
	return "TUN"
}

// ipOf returns the IP packet in p (the bytes after the virtio-net header): p itself on a
// TUN device; on a TAP device the frame's payload when its EtherType is IPv4 or IPv6, nil
// otherwise (ARP, VLAN-tagged or unknown frames carry no checksum the device handles).
func (e *Endpoint) ipOf(p []byte) []byte {
	if e.l2 == 0 {
		return p
	}
	if len(p) < ethHdrLen {
		return nil
	}
	switch binary.BigEndian.Uint16(p[12:]) {
	case 0x0800, 0x86dd: // IEEE EtherTypes of IPv4 (RFC 894) and IPv6 (RFC 2464)
		return p[ethHdrLen:]
	}
	return nil
}

// frameFits reports whether p (after the virtio-net header) may be delivered; a TAP
// device's runts and over-long frames are dropped and counted. gso: the kernel marked p
// as a super-segment, which may exceed the MTU.
func (e *Endpoint) frameFits(p []byte, gso bool) bool {
	if e.l2 == 0 {
		return true
	}
	switch {
	case len(p) < ethHdrLen:
		e.rxRunt.Add(1)
	case !gso && len(p) > e.mtu+ethHdrLen+vlanTagLen:
		e.rxTooLong.Add(1)
	default:
		return true
	}
	e.rxDropped.Add(1)
	return false
}

// inNetNS runs f with the calling goroutine's thread in the network namespace at path
// (f runs at once when path is empty). Descriptors and sockets f opens stay bound to
// that namespace after the thread has gone back: a TUN descriptor belongs to the
// namespace it was opened in (the device is created there), a socket to the one it was
// made in.
func inNetNS(path string, f func() error) error {
	if path == "" {
		return f()
	}
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tun: network namespace: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(target)
	done := make(chan error, 1)
	// A goroutine of its own, so that a thread that cannot go back is never handed to
	// other goroutines: it stays locked and ends with this goroutine.
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("tun: this thread's network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("tun: enter network namespace %s: %w", path, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("tun: return from network namespace %s: %w", path, err)
			return // the thread stays locked and exits with the goroutine
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}
