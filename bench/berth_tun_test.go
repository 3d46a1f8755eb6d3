//go:build linux

package bench

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/bench/internal/netns"
	"github.com/berthnet/berth/link/tun"
)

// berthTUN is a berth stack on a link/tun device with the virtio-net header on, so the
// kernel's checksum and TCP segmentation offloads are used where berth supports them.
type berthTUN struct{ s *berth.Stack }

func newBerthTUN(ns *netns.NS, dev string, mtu int, addr netip.Addr) (tunStack, error) {
	var ep *tun.Endpoint
	err := ns.Do(func() error {
		var err error
		ep, err = tun.Open(dev, tun.Options{MTU: mtu, VnetHdr: true})
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
