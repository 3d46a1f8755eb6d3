package netstack

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/berthnet/berth/link"
)

func newBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

func pkt(i, n int) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	p[1] = byte(i)
	p[2] = byte(i >> 8)
	return p
}

// The stack's packets queue while wireguard-go's reader is busy, and one Read takes them
// in a batch of at most len(bufs), in order.
func TestDeviceReadBatches(t *testing.T) {
	d := newDevice(1420)
	defer d.shutdown()
	ep := endpoint{d}
	for i := 0; i < 200; i++ {
		if n, err := ep.WritePackets([][]byte{pkt(i, 100+i)}); n != 1 || err != nil {
			t.Fatalf("WritePackets = %d, %v", n, err)
		}
	}
	const offset = 16 // wireguard-go reads behind room for its message header
	bufs, sizes := newBufs(batchSize, 1500)
	next := 0
	for _, want := range []int{batchSize, 200 - batchSize} {
		n, err := d.Read(bufs, sizes, offset)
		if n != want || err != nil {
			t.Fatalf("Read = %d, %v; want %d", n, err, want)
		}
		for i := 0; i < n; i++ {
			if !bytes.Equal(bufs[i][offset:offset+sizes[i]], pkt(next, 100+next)) {
				t.Fatalf("packet %d: wrong contents (size %d)", next, sizes[i])
			}
			next++
		}
	}
}

// A Read that waits gets the next packet copied straight into its buffers.
func TestDeviceParkedRead(t *testing.T) {
	d := newDevice(1420)
	defer d.shutdown()
	bufs, sizes := newBufs(4, 1500)
	got := make(chan int)
	go func() {
		n, err := d.Read(bufs, sizes, 0)
		if err != nil {
			n = -1
		}
		got <- n
	}()
	// Let the reader park; if it has not yet, the packet is queued and Read finds it.
	time.Sleep(10 * time.Millisecond)
	endpoint{d}.WritePackets([][]byte{pkt(7, 60), pkt(8, 61)})
	if n := <-got; n != 2 || sizes[0] != 60 || sizes[1] != 61 || bufs[1][1] != 8 {
		t.Fatalf("Read = %d, sizes %v", n, sizes[:2])
	}
}

func TestDeviceQueueFullDrops(t *testing.T) {
	d := newDevice(1420)
	defer d.shutdown()
	p := [][]byte{pkt(0, 40)}
	taken := 0
	for i := 0; i < queueLimit+10; i++ {
		n, err := endpoint{d}.WritePackets(p)
		if err != nil {
			t.Fatal(err)
		}
		taken += n
	}
	if taken != queueLimit || d.drops.Load() != 10 {
		t.Fatalf("took %d, dropped %d; want %d, 10", taken, d.drops.Load(), queueLimit)
	}
	// Too big for the link is dropped, not queued.
	if n, _ := (endpoint{d}).WritePackets([][]byte{make([]byte, 1421)}); n != 0 {
		t.Fatalf("an oversized packet was taken")
	}
}

func TestDeviceClose(t *testing.T) {
	d := newDevice(1420)
	if ev := <-d.Events(); ev != 1 { // tun.EventUp
		t.Fatalf("first event %v, want EventUp", ev)
	}
	bufs, sizes := newBufs(4, 1500)
	errc := make(chan error)
	go func() {
		_, err := d.Read(bufs, sizes, 0)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("blocked Read after Close: %v", err)
	}
	if _, ok := <-d.Events(); ok {
		t.Fatal("events channel open after Close")
	}
	if _, err := d.Write([][]byte{pkt(0, 40)}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if _, err := (endpoint{d}).WritePackets([][]byte{pkt(0, 40)}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WritePackets after Close: %v", err)
	}
	if err := d.Close(); err != nil { // idempotent: the stack and wireguard-go both close it
		t.Fatal(err)
	}
}

// Write hands wireguard-go's buffers to the stack in one batch, offsets stripped.
func TestDeviceWriteDelivers(t *testing.T) {
	d := newDevice(1420)
	defer d.shutdown()
	var got [][]byte
	endpoint{d}.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		for _, p := range pkts {
			got = append(got, append([]byte(nil), p...))
		}
	}))
	const offset = 16
	in := [][]byte{append(make([]byte, offset), pkt(1, 40)...), append(make([]byte, offset), pkt(2, 50)...)}
	if n, err := d.Write(in, offset); n != 2 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(got) != 2 || !bytes.Equal(got[0], pkt(1, 40)) || !bytes.Equal(got[1], pkt(2, 50)) {
		t.Fatalf("delivered %d packets", len(got))
	}
	if d.BatchSize() != batchSize {
		t.Fatalf("BatchSize %d", d.BatchSize())
	}
	if mtu, _ := d.MTU(); mtu != 1420 {
		t.Fatalf("MTU %d", mtu)
	}
}

// BenchmarkDevice moves batches both ways through the adapter alone: the stack's packets
// out through Read, wireguard-go's in through Write. It allocates nothing per packet.
func BenchmarkDevice(b *testing.B) {
	d := newDevice(1420)
	defer d.shutdown()
	ep := endpoint{d}
	ep.Attach(link.DispatcherFunc(func([][]byte) {}))
	bufs, sizes := newBufs(batchSize, 1500)
	out := [][]byte{make([]byte, 1420)}
	b.SetBytes(int64(batchSize * 1420 * 2))
	b.ReportAllocs()
	for b.Loop() {
		for i := 0; i < batchSize; i++ {
			ep.WritePackets(out)
		}
		n, _ := d.Read(bufs, sizes, 0)
		if n != batchSize {
			b.Fatalf("Read %d", n)
		}
		d.Write(bufs, 0)
	}
}

func TestCreateNetTUNErrors(t *testing.T) {
	for _, mtu := range []int{0, 575, 65536} {
		if _, _, err := CreateNetTUN([]netip.Addr{addrA}, nil, mtu); err == nil {
			t.Errorf("MTU %d accepted", mtu)
		}
	}
	if _, _, err := CreateNetTUN([]netip.Addr{netip.MustParseAddr("fd00::1")}, nil, 1279); err == nil {
		t.Error("an IPv6 address on a 1279-byte link was accepted")
	}
	// The same address twice is refused by the stack, and nothing is left running.
	base := runtime.NumGoroutine()
	if _, _, err := CreateNetTUN([]netip.Addr{addrA, addrA}, nil, 1420); err == nil {
		t.Error("a duplicate address was accepted")
	}
	checkGoroutines(t, base)
	// IPv6 only: a default route for IPv6 and none for IPv4.
	dev, tnet, err := CreateNetTUN([]netip.Addr{netip.MustParseAddr("fd00::2")}, nil, 1420)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := tnet.DialTCPAddrPort(netip.MustParseAddrPort("10.1.1.1:80")); err == nil {
		t.Error("an IPv4 dial from an IPv6-only tunnel succeeded")
	}
	if got := tnet.Stack().Net().Routes(); len(got) == 0 {
		t.Error("no routes")
	}
}

// Closing the device (wireguard-go's Device.Close does) closes the stack behind it:
// sockets report net.ErrClosed, and new ones cannot be made.
func TestCloseClosesStack(t *testing.T) {
	base := runtime.NumGoroutine()
	dev, tnet, err := CreateNetTUN([]netip.Addr{addrA}, nil, 1420)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tnet.ListenTCPAddrPort(netip.AddrPortFrom(addrA, 80))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	dev.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if _, err := tnet.ListenUDPAddrPort(netip.AddrPortFrom(addrA, 53)); err == nil {
		t.Error("ListenUDP on a closed stack succeeded")
	}
	if !tnet.Stack().Net().Closed() {
		t.Error("the stack is not closed")
	}
	checkGoroutines(t, base)
}
