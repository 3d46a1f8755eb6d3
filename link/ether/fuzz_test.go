package ether_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/wire"
)

// FuzzEtherInput feeds arbitrary frames to an endpoint that is a router and a DHCP
// server, with a small cache: it must never panic, never send a frame it could not
// build, and keep the cache within its bounds. Frames carrying ND or DHCP get their
// checksums fixed so the fuzzer gets past them.
func FuzzEtherInput(f *testing.F) {
	f.Add(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, peer4, wire.MAC{}, our4))
	f.Add(arpFrame(wire.BroadcastMAC, otherMAC, wire.ARPRequest, otherMAC, gw4, wire.MAC{}, gw4))
	f.Add(ndFrame(snMAC(our6), peerMAC, peer6, wire.SolicitedNode(our6), 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: our6}, llaOpt(wire.NDPOptSourceLinkAddr, peerMAC)))
	f.Add(ndFrame(wire.MAC{0x33, 0x33, 0, 0, 0, 2}, peerMAC, peerLL, netip.MustParseAddr("ff02::2"), 255,
		wire.NDPFields{Type: wire.ICMPv6RouterSolicitation}, llaOpt(wire.NDPOptSourceLinkAddr, peerMAC)))
	f.Add(dhcpFrame(client1, zero4, bcast4, 1, zero4, wire.DHCPDiscover))
	f.Add(dhcpFrame(client1, zero4, bcast4, 3, zero4, wire.DHCPRequest, wire.DHCPOptServerID, our4, wire.DHCPOptRequestedIP, netip.MustParseAddr("10.0.2.15")))
	f.Add(frame(ourMAC, peerMAC, wire.EtherTypeIPv4, ipv4Packet(peer4, our4, 10)))
	f.Add(dhcpv6Frame(wire.DHCPv6InformationRequest, 1, wire.DHCPv6OptClientID, []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}))

	dev := &fakeDev{mtu: 1500}
	clk := clock.NewManual(time.Unix(1e9, 0))
	ep, err := ether.New(dev, ether.Config{MAC: ourMAC, Clock: clk, MaxNeighbors: 8, MaxIncomplete: 4,
		Addrs: []netip.Prefix{netip.PrefixFrom(our4, 24), netip.PrefixFrom(our6, 64)}, Extra: []netip.Addr{gw4},
		Router: &ether.Router{MTU: 1500, DNS: []netip.Addr{our6}},
		DHCP:   &ether.DHCPConfig{Start: netip.MustParseAddr("10.0.2.15"), End: netip.MustParseAddr("10.0.2.30")},
		DHCPv6: &ether.DHCPv6Config{DNS: []netip.Addr{our6}, Domains: []string{"berth.test"}}})
	if err != nil {
		f.Fatal(err)
	}
	defer ep.Close()
	up := &upRecorder{}
	ep.Attach(up)
	f.Fuzz(func(t *testing.T, b []byte) {
		fixChecksums(b)
		dev.deliver(b)
		for _, out := range dev.take() {
			if len(out) < 14 || len(out) > 1514 {
				t.Fatalf("sent a %d-byte frame", len(out))
			}
		}
		up.mu.Lock()
		up.pkts = up.pkts[:0]
		up.mu.Unlock()
		if n := len(ep.Neighbors()); n > 8 {
			t.Fatalf("%d cache entries, limit 8", n)
		}
		clk.Advance(time.Second)
		dev.take()
	})
}

// fixChecksums makes the IPv4 header, ICMPv6 and UDP checksums of a fuzzed frame right.
func fixChecksums(b []byte) {
	if len(b) < 14 {
		return
	}
	p := b[14:]
	switch wire.Ethernet(b).EtherType() {
	case wire.EtherTypeIPv6:
		if len(p) >= 44 && p[6] == wire.ProtoICMPv6 {
			ip := wire.IPv6(p)
			end := min(len(p), 40+ip.PayloadLen())
			if end-40 >= 4 {
				wire.SetICMPv6Checksum(p[40:end], ip.Src(), ip.Dst())
			}
		}
		if len(p) >= 48 && p[6] == wire.ProtoUDP {
			ip := wire.IPv6(p)
			if end := 40 + ip.PayloadLen(); end >= 48 && end <= len(p) {
				wire.SetUDPChecksum(p[40:end], ip.Src(), ip.Dst())
			}
		}
	case wire.EtherTypeIPv4:
		if len(p) >= 28 && p[0] == 0x45 && p[9] == wire.ProtoUDP {
			ip := wire.IPv4(p)
			ip.SetChecksum(0)
			ip.SetChecksum(^wire.Checksum(p[:20], 0))
			if end := ip.TotalLen(); end >= 28 && end <= len(p) {
				wire.SetUDPChecksum(p[20:end], ip.Src(), ip.Dst())
			}
		}
	}
}
