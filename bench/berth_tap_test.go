//go:build linux

package bench

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/bench/internal/netns"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/link/tun"
)

// newBerthTAP is berth on a TAP device (link/tun's TAP mode, virtio-net header and
// offloads on) under link/ether, which answers the kernel's ARP for addr.
func newBerthTAP(ns *netns.NS, dev string, mtu int, addr netip.Addr) (tunStack, error) {
	var ep *tun.Endpoint
	err := ns.Do(func() error {
		var err error
		ep, err = tun.OpenTAP(dev, tun.Options{MTU: mtu, VnetHdr: true})
		return err
	})
	if err != nil {
		return nil, err
	}
	s := berth.New()
	pfx := netip.PrefixFrom(addr, 24)
	e, err := ether.New(ep, ether.Config{Addrs: []netip.Prefix{pfx}, NoDAD: true, Counter: s.Net().Counters().Counter})
	if err != nil {
		ep.Close()
		s.Close()
		return nil, err
	}
	if err := s.AddInterface("tap0", e); err != nil {
		e.Close()
		s.Close()
		return nil, err
	}
	if err := s.AddAddress("tap0", pfx); err != nil {
		s.Close()
		return nil, err
	}
	return berthTUN{s}, nil
}

// BenchmarkTAP: the issue-15 table, one TCP stream between the kernel and berth with
// offloads on, each direction, at MTU 1500 and 65520, over a TAP device (Ethernet,
// link/ether) next to a TUN device in the same run; TAP should be within 0.9× of TUN.
//
//	go test -run '^$' -bench BenchmarkTAP -count 5 ./
func BenchmarkTAP(b *testing.B) {
	for _, mtu := range []int{1500, 65520} {
		b.Run("mtu="+strconv.Itoa(mtu), func(b *testing.B) {
			for _, dir := range []string{"kernel-to-stack", "stack-to-kernel"} {
				b.Run("dir="+dir, func(b *testing.B) {
					for _, k := range []tunKind{{name: "berth-tun", newStack: newBerthTUN}, {name: "berth-tap", newStack: newBerthTAP}} {
						b.Run("dev="+k.name, func(b *testing.B) { benchTUNMTU(b, k, dir == "kernel-to-stack", mtu) })
					}
				})
			}
		})
	}
}
