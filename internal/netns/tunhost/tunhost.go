//go:build linux

// Package tunhost runs a berth stack on a TUN device inside a network namespace made by
// package netns: berth on one side of the device, the Linux kernel on the other. Tests
// reach berth from the kernel with programs (Host.NS.Command: ping, curl, socat) and
// with Go's net package (Host.NS.Dial, Host.NS.Listen), and the kernel from berth with
// Host.Stack.
//
// It is a package of its own so that package netns does not import the root package:
// the root package's tests may use netns.
package tunhost

import (
	"net/netip"
	"testing"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/internal/netns"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/link/tun"
)

// Default addresses: berth's side and the kernel's side of the device. They exist only
// inside the test's namespace.
var (
	DefaultAddrs     = []string{"10.7.0.2/24", "fd07::2/64"}
	DefaultHostAddrs = []string{"10.7.0.1/24", "fd07::1/64"}
)

// Config describes a host; the zero value is usable.
type Config struct {
	// Addrs are berth's addresses (prefix strings); nil means DefaultAddrs.
	Addrs []string
	// HostAddrs are the kernel's addresses on the device; nil means DefaultHostAddrs.
	HostAddrs []string
	// TUN configures the device (MTU, virtio-net header offloads).
	TUN tun.Options
	// Options configure the stack.
	Options []berth.Option
	// WrapLink, if set, is given the TUN device and returns the endpoint the stack is
	// attached to instead: link/impair, link/pcap or a test's own filter around it, so
	// that tests can impair or record berth's side of the link. Closing the stack closes
	// what it returns; the cleanup closes the device in any case. Host.TUN stays the
	// bare device.
	WrapLink func(link.Endpoint) link.Endpoint
	// TAP makes the device a TAP device ("bt0", Ethernet frames): the stack is on an
	// ether.Endpoint over it (Host.Ether) configured by Ether, whose Addrs default to
	// berth's addresses and whose counters are the stack's. WrapLink then wraps the
	// TAP device, under the Ethernet layer.
	TAP   bool
	Ether ether.Config
}

// Host is a berth stack on a TUN device in its own namespace.
type Host struct {
	NS    *netns.NS
	Stack *berth.Stack
	TUN   *tun.Endpoint
	// Ether is the Ethernet layer between the stack and a TAP device (Config.TAP), or nil.
	Ether *ether.Endpoint
	// Addrs and HostAddrs are berth's and the kernel's addresses (without prefix length).
	Addrs, HostAddrs []netip.Addr
}

// New creates a namespace with a TUN device (named "bt0"), configures the kernel's side,
// and runs a berth stack on it with cfg's addresses. The cleanup closes the stack (which
// closes the device) and then deletes the namespace, also when the test fails.
func New(t testing.TB, cfg Config) *Host {
	t.Helper()
	if cfg.Addrs == nil {
		cfg.Addrs = DefaultAddrs
	}
	if cfg.HostAddrs == nil {
		cfg.HostAddrs = DefaultHostAddrs
	}
	h := &Host{NS: netns.New(t)}
	for _, a := range cfg.Addrs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			t.Fatalf("tunhost: address %q: %v", a, err)
		}
		h.Addrs = append(h.Addrs, p.Addr())
	}
	for _, a := range cfg.HostAddrs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			t.Fatalf("tunhost: host address %q: %v", a, err)
		}
		h.HostAddrs = append(h.HostAddrs, p.Addr())
	}
	// AddTUN sets the link up before the stack is attached: the kernel's first packets
	// (IPv6 router solicitations, MLD reports) are dropped and counted, which is harmless.
	// The kernel's addresses come last, when berth can already answer.
	if cfg.TAP {
		h.TUN = h.NS.AddTAP(t, "bt0", cfg.TUN)
	} else {
		h.TUN = h.NS.AddTUN(t, "bt0", cfg.TUN)
	}
	var ep link.Endpoint = h.TUN
	if cfg.WrapLink != nil {
		ep = cfg.WrapLink(ep)
	}
	h.Stack = berth.New(cfg.Options...)
	t.Cleanup(func() { h.Stack.Close() }) // runs before AddTUN's and New's cleanups
	if cfg.TAP {
		ec := cfg.Ether
		if ec.Addrs == nil {
			for _, a := range cfg.Addrs {
				ec.Addrs = append(ec.Addrs, netip.MustParsePrefix(a))
			}
		}
		if ec.Counter == nil {
			ec.Counter = h.Stack.Net().Counters().Counter
		}
		var err error
		if h.Ether, err = ether.New(ep, ec); err != nil {
			t.Fatalf("tunhost: %v", err)
		}
		ep = h.Ether
	}
	if err := h.Stack.AddInterface(h.TUN.Name(), ep); err != nil {
		t.Fatalf("tunhost: %v", err)
	}
	for _, a := range cfg.Addrs {
		if err := h.Stack.AddAddress(h.TUN.Name(), netip.MustParsePrefix(a)); err != nil {
			t.Fatalf("tunhost: %v", err)
		}
	}
	h.NS.AddAddr(t, h.TUN.Name(), cfg.HostAddrs...)
	return h
}
