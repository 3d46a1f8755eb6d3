//go:build linux

package bench

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/berthnet/berth/bench/internal/gv"
	"github.com/berthnet/berth/bench/internal/netns"
	"github.com/berthnet/berth/internal/testenv"
	"golang.org/x/sys/unix"
)

// The kernel-peer workloads: a stack on a TUN device in a network namespace made for the
// run, the Linux kernel's TCP on the other side, MTU 1500. The namespace's addresses are
// in the benchmarking range 198.18.0.0/15 (RFC 2544); no packet leaves the namespace.
var (
	tunKernelAddr = netip.MustParseAddr("198.18.0.1")
	tunStackAddr  = netip.MustParseAddr("198.18.0.2")
)

const tunMTU = 1500

// tunStack is a userspace stack attached to a TUN file descriptor.
type tunStack interface {
	Listen(port uint16) (net.Listener, error)
	Dial(ctx context.Context, to netip.AddrPort) (net.Conn, error)
	Close() error
}

type tunKind struct {
	name string
	// newStack creates the TUN device dev inside ns (the harness then gives the kernel's
	// side its address and brings it up) and runs the stack on it with address addr/24.
	// Close closes the stack and the device.
	newStack func(ns *netns.NS, dev string, mtu int, addr netip.Addr) (tunStack, error)
}

// tunKinds lists the stacks that run on a TUN device; berth_tun_test.go adds berth.
var tunKinds = []tunKind{{
	name: "gvisor",
	newStack: func(ns *netns.NS, dev string, mtu int, addr netip.Addr) (tunStack, error) {
		fd, err := ns.OpenTUN(dev)
		if err != nil {
			return nil, err
		}
		st, err := gv.NewTUNStack(fd, mtu, addr)
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
		return gvTUN{st, fd}, nil
	},
}}

// gvTUN closes the descriptor after the stack: fdbased does not own it.
type gvTUN struct {
	*gv.TUNStack
	fd int
}

func (g gvTUN) Close() error {
	err := g.TUNStack.Close()
	unix.Close(g.fd)
	return err
}

// BenchmarkTUN: one TCP stream between the kernel and a userspace stack over a TUN device,
// each direction, with each stack's offloads on.
func BenchmarkTUN(b *testing.B) {
	for _, dir := range []string{"kernel-to-stack", "stack-to-kernel"} {
		b.Run("dir="+dir, func(b *testing.B) {
			for _, k := range tunKinds {
				b.Run("stack="+k.name, func(b *testing.B) { benchTUN(b, k, dir == "kernel-to-stack") })
			}
		})
	}
}

func benchTUN(b *testing.B, k tunKind, kernelSends bool) { benchTUNMTU(b, k, kernelSends, tunMTU) }

// benchTUNMTU is benchTUN with the device's MTU (both sides) mtu.
func benchTUNMTU(b *testing.B, k tunKind, kernelSends bool, mtu int) {
	testenv.NeedRoot(b)
	ns, err := netns.New("berthbench")
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	const dev = "bbtun0"
	st, err := k.newStack(ns, dev, mtu, tunStackAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for _, args := range [][]string{
		{"addr", "add", tunKernelAddr.String() + "/24", "dev", dev},
		{"link", "set", dev, "mtu", strconv.Itoa(mtu), "up"},
	} {
		if err := ns.IP(args...); err != nil {
			b.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var kernelConn, stackConn net.Conn
	if kernelSends {
		ln, err := st.Listen(5001)
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		acc := acceptOne(ln)
		err = ns.Do(func() error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(tunStackAddr, 5001).String())
			kernelConn = c
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		var ok bool
		if stackConn, ok = <-acc; !ok {
			b.Fatal("accept failed")
		}
	} else {
		var ln net.Listener
		err := ns.Do(func() error {
			var err error
			ln, err = net.Listen("tcp", netip.AddrPortFrom(tunKernelAddr, 5001).String())
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		acc := acceptOne(ln)
		if stackConn, err = st.Dial(ctx, netip.AddrPortFrom(tunKernelAddr, 5001)); err != nil {
			b.Fatal(err)
		}
		var ok bool
		if kernelConn, ok = <-acc; !ok {
			b.Fatal("accept failed")
		}
	}
	defer kernelConn.Close()
	defer stackConn.Close()
	if kernelSends {
		measureStream(b, kernelConn, stackConn)
	} else {
		measureStream(b, stackConn, kernelConn)
	}
}

// BenchmarkVethCeiling: the same TCP stream between two kernel sockets in two namespaces
// joined by a veth pair (MTU 1500, veth's default offloads: TSO, GSO, GRO), the ceiling for
// the TUN figures.
func BenchmarkVethCeiling(b *testing.B) {
	b.Run("stack=kernel", func(b *testing.B) {
		testenv.NeedRoot(b)
		na, err := netns.New("berthbench")
		if err != nil {
			b.Fatal(err)
		}
		defer na.Close()
		nb, err := netns.New("berthbench")
		if err != nil {
			b.Fatal(err)
		}
		defer nb.Close()
		a, z := netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.1.2")
		for _, step := range []struct {
			ns   *netns.NS
			args []string
		}{
			{na, []string{"link", "add", "bbva", "mtu", "1500", "type", "veth", "peer", "name", "bbvb", "netns", nb.Name}},
			{na, []string{"addr", "add", a.String() + "/24", "dev", "bbva"}},
			{nb, []string{"addr", "add", z.String() + "/24", "dev", "bbvb"}},
			{na, []string{"link", "set", "bbva", "up"}},
			{nb, []string{"link", "set", "bbvb", "mtu", "1500", "up"}},
		} {
			if err := step.ns.IP(step.args...); err != nil {
				b.Fatal(err)
			}
		}
		var ln net.Listener
		if err := nb.Do(func() error {
			var err error
			ln, err = net.Listen("tcp", netip.AddrPortFrom(z, 5001).String())
			return err
		}); err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		acc := acceptOne(ln)
		var c net.Conn
		if err := na.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(z, 5001).String(), 10*time.Second)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		s, ok := <-acc
		if !ok {
			b.Fatal("accept failed")
		}
		defer s.Close()
		measureStream(b, c, s)
	})
}
