package ether_test

import (
	"net/netip"
	"testing"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/wire"
)

// discardDev is a frame device that drops what it is given, for benchmarks.
type discardDev struct {
	mtu int
	d   link.Dispatcher
}

func (d *discardDev) MTU() int                                { return d.mtu }
func (d *discardDev) Attach(x link.Dispatcher)                { d.d = x }
func (d *discardDev) WritePackets(pkts [][]byte) (int, error) { return len(pkts), nil }
func (d *discardDev) Close() error                            { return nil }

// discardFrameDev is a discardDev that takes header and packet apart (link.FrameWriter).
type discardFrameDev struct{ discardDev }

func (d *discardFrameDev) WriteFrames(hdrs, pkts [][]byte) (int, error) { return len(pkts), nil }

type discardUp struct{ n int }

func (u *discardUp) DeliverPackets(pkts [][]byte) { u.n += len(pkts) }

const benchBatch = 64

// resolvedEndpoint is an endpoint on a discarding device (a FrameWriter if split) that
// has resolved peer4, and a batch of benchBatch copies of pkt.
func resolvedEndpoint(tb testing.TB, pkt []byte, split ...bool) (*discardDev, *ether.Endpoint, [][]byte) {
	fd := &discardFrameDev{discardDev{mtu: 1500}}
	dev := &fd.discardDev
	var ld link.Endpoint = dev
	if len(split) > 0 && split[0] {
		ld = fd
	}
	ep, err := ether.New(ld, ether.Config{MAC: ourMAC, NoDAD: true, Addrs: []netip.Prefix{netip.PrefixFrom(our4, 24)}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ep.Close() })
	ep.WritePackets([][]byte{ipv4Packet(our4, peer4, 1)}) // INCOMPLETE
	dev.d.DeliverPackets([][]byte{arpFrame(ourMAC, peerMAC, wire.ARPReply, peerMAC, peer4, ourMAC, our4)})
	batch := make([][]byte, benchBatch)
	for i := range batch {
		batch[i] = pkt
	}
	return dev, ep, batch
}

// BenchmarkOutput frames batches of 64 IP packets to a resolved neighbour (ns/op is per
// packet): a neighbour lookup per batch, a header and a copy per packet — or, to a
// link.FrameWriter, only the header.
func BenchmarkOutput(b *testing.B) {
	for _, size := range []int{64, 1500} {
		for _, split := range []bool{false, true} {
			name := itoa(size)
			if split {
				name += "/framewriter"
			}
			b.Run(name, func(b *testing.B) {
				_, ep, batch := resolvedEndpoint(b, ipv4Packet(our4, peer4, size-28), split)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i += benchBatch {
					n := min(benchBatch, b.N-i)
					if _, err := ep.WritePackets(batch[:n]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkInput delivers batches of 64 frames to the endpoint, which hands the IP
// packets up in one batch (ns/op is per packet).
func BenchmarkInput(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(itoa(size), func(b *testing.B) {
			dev, ep, batch := resolvedEndpoint(b, frame(ourMAC, peerMAC, wire.EtherTypeIPv4, ipv4Packet(peer4, our4, size-28)))
			up := &discardUp{}
			ep.Attach(up)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += benchBatch {
				dev.d.DeliverPackets(batch[:min(benchBatch, b.N-i)])
			}
			if up.n != b.N {
				b.Fatalf("%d delivered of %d", up.n, b.N)
			}
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for ; n > 0; n /= 10 {
		i--
		b[i] = byte('0' + n%10)
	}
	return string(b[i:])
}

// TestHotPathsNoAllocs: the write and input paths allocate nothing per packet once warm.
func TestHotPathsNoAllocs(t *testing.T) {
	_, sep, _ := resolvedEndpoint(t, nil, true)
	dev, ep, _ := resolvedEndpoint(t, nil)
	ep.Attach(&discardUp{})
	out := [][]byte{ipv4Packet(our4, peer4, 1000), ipv4Packet(our4, peer4, 100)}
	if a := testing.AllocsPerRun(1000, func() { sep.WritePackets(out) }); a != 0 {
		t.Errorf("WritePackets to a FrameWriter: %v allocs", a)
	}
	in := [][]byte{frame(ourMAC, peerMAC, wire.EtherTypeIPv4, ipv4Packet(peer4, our4, 1000))}
	arp := [][]byte{arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, peer4, wire.MAC{}, our4)}
	if a := testing.AllocsPerRun(1000, func() { ep.WritePackets(out) }); a != 0 {
		t.Errorf("WritePackets: %v allocs", a)
	}
	if a := testing.AllocsPerRun(1000, func() { dev.d.DeliverPackets(in) }); a != 0 {
		t.Errorf("input: %v allocs", a)
	}
	if a := testing.AllocsPerRun(1000, func() { dev.d.DeliverPackets(arp) }); a != 0 {
		t.Errorf("ARP request and reply: %v allocs", a)
	}
}

// BenchmarkTCPStream streams TCP from one berth stack to another over an in-memory pipe,
// once carrying bare IP packets and once Ethernet frames through ether on both ends, in
// the same run so the two can be compared (MB/s).
func BenchmarkTCPStream(b *testing.B) {
	for _, mtu := range []int{1500, 65520} {
		for _, mode := range []string{"ip", "ether"} {
			b.Run(mode+"/"+itoa(mtu), func(b *testing.B) {
				a, s := streamPair(b, mode == "ether", mtu)
				benchStream(b, a, s)
			})
		}
	}
}
