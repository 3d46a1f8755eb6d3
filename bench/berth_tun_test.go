//go:build linux

package bench

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/bench/internal/netns"
	"github.com/berthnet/berth/link/tun"
)

// berthTUN is a berth stack on a link/tun device with the virtio-net header on, so the
// kernel's checksum and TCP segmentation offloads are used where berth supports them.
type berthTUN struct{ s *berth.Stack }

func newBerthTUN(ns *netns.NS, dev string, mtu int, addr netip.Addr) (tunStack, error) {
	return openBerthTUN(ns, dev, mtu, addr, true)
}

// newBerthTUNPlain is berth on a TUN device without the virtio-net header: no checksum
// offload, no TSO/GSO, one MTU-sized packet per read and write.
func newBerthTUNPlain(ns *netns.NS, dev string, mtu int, addr netip.Addr) (tunStack, error) {
	return openBerthTUN(ns, dev, mtu, addr, false)
}

func openBerthTUN(ns *netns.NS, dev string, mtu int, addr netip.Addr, vnetHdr bool) (tunStack, error) {
	var ep *tun.Endpoint
	err := ns.Do(func() error {
		var err error
		ep, err = tun.Open(dev, tun.Options{MTU: mtu, VnetHdr: vnetHdr})
		return err
	})
	if err != nil {
		return nil, err
	}
	s := berth.New()
	if err := s.AddInterface("tun0", ep); err != nil {
		ep.Close()
		s.Close()
		return nil, err
	}
	if err := s.AddAddress("tun0", netip.PrefixFrom(addr, 24)); err != nil {
		s.Close()
		return nil, err
	}
	return berthTUN{s}, nil
}

func (t berthTUN) Listen(port uint16) (net.Listener, error) {
	return t.s.Listen(context.Background(), "tcp4", ":"+strconv.Itoa(int(port)))
}

func (t berthTUN) Dial(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
	return t.s.DialContext(ctx, "tcp4", to.String())
}

func (t berthTUN) Close() error {
	if err := t.s.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func init() {
	tunKinds = append([]tunKind{{name: "berth", newStack: newBerthTUN}}, tunKinds...)
}

// BenchmarkTUNPlain is BenchmarkTUN for berth with its offloads off (no virtio-net header),
// the "without offloads" half of the kernel-interop issue's TUN benchmark.
func BenchmarkTUNPlain(b *testing.B) {
	for _, dir := range []string{"kernel-to-stack", "stack-to-kernel"} {
		b.Run("dir="+dir, func(b *testing.B) {
			b.Run("stack=berth", func(b *testing.B) {
				benchTUN(b, tunKind{name: "berth", newStack: newBerthTUNPlain}, dir == "kernel-to-stack")
			})
		})
	}
}
