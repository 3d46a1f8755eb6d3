package ether_test

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/wire"
)

// TestBadFrames: runts, frames over MTU+14, VLAN-tagged frames, unknown EtherTypes, 802.3
// length frames and unicast for another station are dropped and counted; the good frame
// among them goes up, padding trimmed.
func TestBadFrames(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	pkt := ipv4Packet(peer4, our4, 4) // 32 bytes: padded to 46 on the wire
	padded := append(frame(ourMAC, peerMAC, wire.EtherTypeIPv4, pkt), make([]byte, 14)...)
	vlan := frame(ourMAC, peerMAC, wire.EtherTypeVLAN, append([]byte{0, 5, 0x08, 0}, pkt...))
	h.dev.deliver(
		nil, padded[:13], // runts
		frame(ourMAC, peerMAC, wire.EtherTypeIPv4, make([]byte, 1501)), // over the MTU
		vlan,
		frame(ourMAC, peerMAC, wire.EtherTypeQinQ, make([]byte, 50)),
		frame(ourMAC, peerMAC, 0x88cc, make([]byte, 50)),  // LLDP
		frame(ourMAC, peerMAC, 0x05dc, make([]byte, 50)),  // an 802.3 length
		frame(otherMAC, peerMAC, wire.EtherTypeIPv4, pkt), // another station's
		padded,
		frame(wire.BroadcastMAC, peerMAC, wire.EtherTypeIPv4, pkt),
		frame(wire.MAC{1, 0, 0x5e, 0, 0, 1}, peerMAC, wire.EtherTypeIPv4, pkt),
	)
	h.none()
	if len(h.up.pkts) != 3 || len(h.up.pkts[0]) != len(pkt) {
		t.Fatalf("delivered %d packets (first %d bytes), want 3 of %d", len(h.up.pkts), len(h.up.pkts[0]), len(pkt))
	}
	h.wantCounters(map[string]uint64{"EtherInFrames": 11, "EtherInRunts": 2, "EtherInTooBig": 1, "EtherInVLAN": 2,
		"EtherInUnknownTypes": 2, "EtherInNotForUs": 1})
}

// TestVerifiedPassThrough: a device's DeliverVerified batch reaches the stack's
// DeliverVerified; an ordinary batch its DeliverPackets.
func TestVerifiedPassThrough(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	f := frame(ourMAC, peerMAC, wire.EtherTypeIPv4, ipv4Packet(peer4, our4, 100))
	h.dev.d.(interface{ DeliverVerified([][]byte) }).DeliverVerified([][]byte{f, f})
	h.dev.deliver(f)
	if len(h.up.pkts) != 3 || h.up.verified != 2 {
		t.Fatalf("%d delivered, %d verified; want 3, 2", len(h.up.pkts), h.up.verified)
	}
}

// TestWriteErrors: a packet over the MTU ends the write with EMSGSIZE at its index; a
// packet off-link with no gateway is dropped and counted; after Close, net.ErrClosed.
func TestWriteErrors(t *testing.T) {
	h := newHarness(t, ether.Config{Gateway4: peer4}, false)
	h.dev.deliver(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, peer4, wire.MAC{}, our4))
	h.dev.take()
	far4 := netip.MustParseAddr("192.0.2.1")
	n, err := h.ep.WritePackets([][]byte{ipv4Packet(our4, far4, 10), ipv4Packet(our4, peer4, 1500), ipv4Packet(our4, peer4, 10)})
	if n != 1 || !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("WritePackets = %d, %v; want 1, EMSGSIZE", n, err)
	}
	// The off-link packet went to the gateway's MAC.
	if f := h.one(); wire.Ethernet(f).Dst() != peerMAC || wire.IPv4(f[14:]).Dst() != far4 {
		t.Fatalf("off-link packet framed to %v", wire.Ethernet(f).Dst())
	}
	far6 := netip.MustParseAddr("2001:db8::1")
	if n, err := h.ep.WritePackets([][]byte{ipv6Packet(our6, far6, 10)}); n != 1 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	h.none()
	h.wantCounters(map[string]uint64{"EtherOutNoRoutes": 1})
	// Broadcast, directed broadcast and multicast go out unresolved.
	h.ep.WritePackets([][]byte{ipv4Packet(our4, bcast4, 1), ipv4Packet(our4, netip.MustParseAddr("10.0.2.255"), 1),
		ipv4Packet(our4, netip.MustParseAddr("224.0.0.251"), 1)})
	out := h.dev.take()
	if len(out) != 3 || wire.Ethernet(out[0]).Dst() != wire.BroadcastMAC || wire.Ethernet(out[1]).Dst() != wire.BroadcastMAC ||
		wire.Ethernet(out[2]).Dst() != (wire.MAC{1, 0, 0x5e, 0, 0, 251}) {
		t.Fatalf("broadcast/multicast frames %d", len(out))
	}
	h.ep.Close()
	if _, err := h.ep.WritePackets([][]byte{ipv4Packet(our4, peer4, 1)}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := h.ep.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// TestGSO: over a segmenting device the endpoint is a GSOEndpoint; a super-segment is
// framed and handed on with its MSS, or waits for resolution and goes out by WriteGSO.
func TestGSO(t *testing.T) {
	for _, split := range []bool{false, true} {
		g := &gsoFrameDev{gsoDev{fakeDev{mtu: 1500}}}
		var dev link.Endpoint = &g.gsoDev
		if split {
			dev = g // takes header and packet apart
		}
		ep, err := ether.New(dev, ether.Config{MAC: ourMAC, Addrs: []netip.Prefix{netip.PrefixFrom(our4, 24)}, NoDAD: true})
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		if ep.GSOMaxSize() != 65535 {
			t.Fatalf("GSOMaxSize %d", ep.GSOMaxSize())
		}
		g.take()
		big := ipv4Packet(our4, peer4, 30000)
		if err := ep.WriteGSO(big, 1448); err != nil {
			t.Fatal(err)
		}
		g.deliver(arpFrame(ourMAC, peerMAC, wire.ARPReply, peerMAC, peer4, ourMAC, our4))
		if err := ep.WriteGSO(big, 1448); err != nil {
			t.Fatal(err)
		}
		want := frame(peerMAC, ourMAC, wire.EtherTypeIPv4, big)
		if len(g.gso) != 2 || g.gso[0].mss != 1448 || !bytes.Equal(g.gso[0].frame, want) || !bytes.Equal(g.gso[1].frame, want) {
			t.Fatalf("split %v: GSO writes %d", split, len(g.gso))
		}
		g.take() // the ARP request
		small := ipv4Packet(our4, peer4, 100)
		ep.WritePackets([][]byte{small, small})
		if out := g.take(); len(out) != 2 || !bytes.Equal(out[1], frame(peerMAC, ourMAC, wire.EtherTypeIPv4, small)) {
			t.Fatalf("split %v: %d frames", split, len(out))
		}
	}
	plain, _ := ether.New(&fakeDev{mtu: 1500}, ether.Config{NoDAD: true})
	defer plain.Close()
	if plain.GSOMaxSize() != 0 || !errors.Is(plain.WriteGSO(ipv4Packet(our4, peer4, 30000), 1448), syscall.EOPNOTSUPP) {
		t.Fatal("a plain device's endpoint segments")
	}
}

// TestCacheFloods: ARP requests from thousands of senders, and writes to thousands of
// on-link addresses (an address scan), keep the cache within MaxNeighbors, the entries
// being resolved within MaxIncomplete and the queued bytes within QueueBytes each; what
// does not fit is counted. Memory stays bounded.
func TestCacheFloods(t *testing.T) {
	const maxN, maxInc = 64, 16
	h := newHarness(t, ether.Config{MaxNeighbors: maxN, MaxIncomplete: maxInc, QueueBytes: 4096,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/16"), netip.MustParsePrefix("fd00::2/64")}}, false)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 20000 {
		sip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		mac := wire.MAC{2, 0xf1, 0, 0, byte(i >> 8), byte(i)}
		h.dev.deliver(arpFrame(wire.BroadcastMAC, mac, wire.ARPRequest, mac, sip, wire.MAC{}, netip.MustParseAddr("10.0.0.2")))
		if i%1000 == 0 {
			h.dev.take()
		}
	}
	h.dev.take()
	if n := len(h.ep.Neighbors()); n > maxN {
		t.Fatalf("%d entries after an ARP flood, limit %d", n, maxN)
	}
	// Now every entry is STALE and evictable; fill the incomplete quota by a scan.
	pkt := ipv6Packet(netip.MustParseAddr("fd00::2"), netip.MustParseAddr("fd00::1"), 1000)
	for i := range 5000 {
		p := append([]byte(nil), pkt...)
		p[38], p[39] = byte(i>>8), byte(i)
		p[37] = 0xaa
		h.ep.WritePackets([][]byte{p, p, p, p, p, p}) // 6 KB each: over QueueBytes
		if i%500 == 0 {
			h.dev.take()
		}
	}
	h.dev.take()
	inc := 0
	for _, n := range h.ep.Neighbors() {
		if n.State == "INCOMPLETE" {
			inc++
		}
	}
	if inc > maxInc || len(h.ep.Neighbors()) > maxN {
		t.Fatalf("%d INCOMPLETE (limit %d), %d entries (limit %d)", inc, maxInc, len(h.ep.Neighbors()), maxN)
	}
	c := h.ep.Counters()
	if c["NeighTableFulls"] == 0 || c["NeighUnresolvedDiscards"] == 0 {
		t.Fatalf("NeighTableFulls %d NeighUnresolvedDiscards %d", c["NeighTableFulls"], c["NeighUnresolvedDiscards"])
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// maxInc entries × QueueBytes is 64 KiB; allow generous slack for the runtime.
	if grow := int64(after.HeapInuse) - int64(before.HeapInuse); grow > 8<<20 {
		t.Fatalf("heap grew %d bytes", grow)
	}
	t.Logf("NeighTableFulls %d NeighUnresolvedDiscards %d", c["NeighTableFulls"], c["NeighUnresolvedDiscards"])
}

// TestMixedBatch: one write to several destinations frames each packet for its own next
// hop, however they alternate; an unresolved one in between waits without disturbing
// the others.
func TestMixedBatch(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	h.dev.deliver(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, peer4, wire.MAC{}, our4))
	h.dev.deliver(arpFrame(wire.BroadcastMAC, otherMAC, wire.ARPRequest, otherMAC, other4, wire.MAC{}, our4))
	h.dev.take()
	unknown := netip.MustParseAddr("10.0.2.55")
	pkts := [][]byte{ipv4Packet(our4, peer4, 1), ipv4Packet(our4, other4, 2), ipv4Packet(our4, unknown, 3),
		ipv4Packet(our4, peer4, 4), ipv4Packet(our4, bcast4, 5), ipv4Packet(our4, other4, 6), ipv6Packet(our6, allNodesIP, 7)}
	if n, err := h.ep.WritePackets(pkts); n != len(pkts) || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	// The ARP request for .55 goes out while the batch is being framed, before it.
	want := []wire.MAC{wire.BroadcastMAC, peerMAC, otherMAC, peerMAC, wire.BroadcastMAC, otherMAC, allNodesM}
	out := h.dev.take()
	if len(out) != len(want) {
		t.Fatalf("%d frames, want %d", len(out), len(want))
	}
	for i, f := range out {
		if wire.Ethernet(f).Dst() != want[i] {
			t.Errorf("frame %d to %v, want %v", i, wire.Ethernet(f).Dst(), want[i])
		}
	}
}

// TestLoopedFrames: frames with our own source MAC (our DAD probe or announcement echoed
// by a bridge, or a station sending as us) are dropped before they are read: the echoed
// DAD probe does not make our address a duplicate.
func TestLoopedFrames(t *testing.T) {
	h := newHarness(t, ether.Config{}, true)
	var probe []byte
	for _, f := range h.announced {
		if wire.Ethernet(f).EtherType() == wire.EtherTypeIPv6 {
			probe = f
		}
	}
	h.dev.deliver(append(h.announced, probe)...)
	h.clk.Advance(time.Second)
	if h.ep.Duplicate(our6) || h.ep.Duplicate(ourLL) || h.ep.Tentative(our6) {
		t.Fatal("our own echoed DAD probe made an address a duplicate")
	}
	h.wantCounters(map[string]uint64{"EtherInLooped": uint64(len(h.announced) + 1), "ArpInSpoofed": 0, "Ip6DADFailures": 0})
}
