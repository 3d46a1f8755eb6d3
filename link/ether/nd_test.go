package ether_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/wire"
)

func snMAC(a netip.Addr) wire.MAC { return wire.IPv6MulticastMAC(wire.SolicitedNode(a).As16()) }

// TestNSAnswered: a solicitation for our address is answered with a solicited NA carrying
// our MAC, from the target to the solicitor at its SLLA; the solicitor is cached STALE.
func TestNSAnswered(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	if h.ep.LinkLocal() != ourLL {
		t.Fatalf("link-local %v, want %v", h.ep.LinkLocal(), ourLL)
	}
	for _, target := range []netip.Addr{our6, ourLL} {
		h.dev.deliver(ndFrame(snMAC(target), peerMAC, peer6, wire.SolicitedNode(target), 255,
			wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: target}, llaOpt(wire.NDPOptSourceLinkAddr, peerMAC)))
		equalFrame(t, "NA for "+target.String(), h.one(), ndFrame(peerMAC, ourMAC, target, peer6, 255,
			wire.NDPFields{Type: wire.ICMPv6NeighborAdvertisement, Flags: wire.NDPFlagSolicited | wire.NDPFlagOverride, Target: target},
			llaOpt(wire.NDPOptTargetLinkAddr, ourMAC)))
	}
	if n, ok := h.neighbor(peer6); !ok || n.MAC != peerMAC || n.State != "STALE" {
		t.Fatalf("solicitor's entry %+v %v", n, ok)
	}
	h.wantCounters(map[string]uint64{"Icmp6InNeighborSolicits": 2, "Icmp6OutNeighborAdvertisements": 2, "Icmp6InMsgs": 2, "Icmp6OutMsgs": 2})
	if len(h.up.pkts) != 0 {
		t.Fatal("ND went up to the stack")
	}
}

// TestNDBadInput: RFC 4861 §7.1's checks each drop a message silently (counted in
// Icmp6InErrors): hop limit not 255, code not 0, a zero-length option, an option past the
// end, a bad checksum, a multicast target, a DAD probe with an SLLA, too short.
func TestNDBadInput(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	ns := wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: our6}
	slla := llaOpt(wire.NDPOptSourceLinkAddr, peerMAC)
	sn := wire.SolicitedNode(our6)
	good := ndFrame(snMAC(our6), peerMAC, peer6, sn, 255, ns, slla)
	bad := [][]byte{
		ndFrame(snMAC(our6), peerMAC, peer6, sn, 254, ns, slla),                                                                // forwarded
		ndFrame(snMAC(our6), peerMAC, peer6, sn, 64, ns, slla),                                                                 // forwarded
		ndFrame(snMAC(our6), peerMAC, peer6, sn, 255, ns, []byte{1, 0, 0, 0, 0, 0, 0, 0}),                                      // zero-length option
		ndFrame(snMAC(our6), peerMAC, peer6, sn, 255, ns, []byte{1, 2, 0, 0, 0, 0, 0, 0}),                                      // option past the end
		ndFrame(snMAC(our6), peerMAC, peer6, sn, 255, wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: sn}, slla), // multicast target
		ndFrame(snMAC(our6), peerMAC, netip.IPv6Unspecified(), sn, 255, ns, slla),                                              // DAD with SLLA
		ndFrame(snMAC(our6), peerMAC, netip.IPv6Unspecified(), our6, 255, ns, nil),                                             // DAD not to solicited-node
	}
	code := append([]byte(nil), good...)
	code[14+41] = 1 // code 1 (checksum fixed below)
	fixCsum(code)
	bad = append(bad, code)
	csum := append([]byte(nil), good...)
	csum[14+42] ^= 0xff
	bad = append(bad, csum)
	short := append([]byte(nil), good[:14+40+20]...)
	short[14+5] = 20 // payload length 20: shorter than an NS
	fixCsum(short)
	bad = append(bad, short)
	h.dev.deliver(bad...)
	h.none()
	h.wantCounters(map[string]uint64{"Icmp6InErrors": uint64(len(bad)), "Icmp6InNeighborSolicits": 0})
	if _, ok := h.neighbor(peer6); ok {
		t.Fatal("a bad NS created an entry")
	}
	h.dev.deliver(good)
	if len(h.dev.take()) != 1 {
		t.Fatal("the good NS was not answered")
	}
}

// fixCsum recomputes the ICMPv6 checksum of an ND frame.
func fixCsum(f []byte) {
	ip := wire.IPv6(f[14:])
	wire.SetICMPv6Checksum(ip[40:], ip.Src(), ip.Dst())
}

// TestNDOtherHostsAndRedirect: solicitations for other hosts are not answered (counted),
// unsolicited advertisements create no entries, redirects are ignored (counted).
func TestNDOtherHostsAndRedirect(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	other6 := netip.MustParseAddr("fd00::77")
	h.dev.deliver(ndFrame(snMAC(other6), peerMAC, peer6, wire.SolicitedNode(other6), 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: other6}, llaOpt(wire.NDPOptSourceLinkAddr, peerMAC)))
	h.dev.deliver(ndFrame(allNodesM, peerMAC, peer6, allNodesIP, 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborAdvertisement, Flags: wire.NDPFlagOverride, Target: peer6}, llaOpt(wire.NDPOptTargetLinkAddr, peerMAC)))
	redirect := make([]byte, 32) // target and destination
	copy(redirect[0:16], peerLL.AsSlice())
	copy(redirect[16:32], other6.AsSlice())
	h.dev.deliver(ndFrame(ourMAC, peerMAC, peerLL, our6, 255, wire.NDPFields{Type: wire.ICMPv6Redirect}, nil)[:0])
	f := ndFrame(ourMAC, peerMAC, peerLL, our6, 255, wire.NDPFields{Type: wire.ICMPv6Redirect}, nil)
	// Put target/destination in the redirect body and fix the checksum.
	copy(f[14+40+8:], redirect)
	fixCsum(f)
	h.dev.deliver(f)
	h.none()
	if len(h.ep.Neighbors()) != 0 {
		t.Fatalf("entries %+v", h.ep.Neighbors())
	}
	h.wantCounters(map[string]uint64{"NdInNotForUs": 1, "Icmp6InNeighborAdvertisements": 1, "Icmp6InRedirects": 1, "Icmp6InErrors": 0, "EtherInRunts": 1})
}

// TestNDResolve: sending to an on-link IPv6 address solicits it at its solicited-node
// group; the solicited NA completes the entry and releases the queued packet.
func TestNDResolve(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	pkt := ipv6Packet(our6, peer6, 8)
	h.ep.WritePackets([][]byte{pkt})
	equalFrame(t, "NS", h.one(), ndFrame(snMAC(peer6), ourMAC, ourLL, wire.SolicitedNode(peer6), 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: peer6}, llaOpt(wire.NDPOptSourceLinkAddr, ourMAC)))
	h.dev.deliver(ndFrame(ourMAC, peerMAC, peer6, ourLL, 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborAdvertisement, Flags: wire.NDPFlagSolicited | wire.NDPFlagOverride, Target: peer6},
		llaOpt(wire.NDPOptTargetLinkAddr, peerMAC)))
	equalFrame(t, "queued packet", h.one(), frame(peerMAC, ourMAC, wire.EtherTypeIPv6, pkt))
	if n, _ := h.neighbor(peer6); n.State != "REACHABLE" {
		t.Fatalf("state %s", n.State)
	}
	// An NA without override and with another MAC does not replace the entry: REACHABLE
	// goes STALE (RFC 4861 §7.2.5).
	h.dev.deliver(ndFrame(ourMAC, otherMAC, peer6, ourLL, 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborAdvertisement, Flags: wire.NDPFlagSolicited, Target: peer6},
		llaOpt(wire.NDPOptTargetLinkAddr, otherMAC)))
	if n, _ := h.neighbor(peer6); n.State != "STALE" || n.MAC != peerMAC {
		t.Fatalf("after a non-override NA: %+v", n)
	}
	// Unsolicited, without override, the same MAC: no confirmation, still STALE.
	na := func(flags uint8, mac wire.MAC) []byte {
		return ndFrame(ourMAC, peerMAC, peer6, ourLL, 255,
			wire.NDPFields{Type: wire.ICMPv6NeighborAdvertisement, Flags: flags, Target: peer6}, llaOpt(wire.NDPOptTargetLinkAddr, mac))
	}
	h.dev.deliver(na(0, peerMAC))
	if n, _ := h.neighbor(peer6); n.State != "STALE" {
		t.Fatalf("after an unsolicited NA: %s", n.State)
	}
	// Unsolicited with override and a new MAC: updated, STALE; solicited with the same
	// MAC and no override: REACHABLE.
	h.dev.deliver(na(wire.NDPFlagOverride, otherMAC))
	if n, _ := h.neighbor(peer6); n.State != "STALE" || n.MAC != otherMAC {
		t.Fatalf("after an overriding NA: %+v", n)
	}
	h.dev.deliver(na(wire.NDPFlagSolicited, otherMAC))
	if n, _ := h.neighbor(peer6); n.State != "REACHABLE" {
		t.Fatalf("after a solicited NA: %s", n.State)
	}
	// Multicast destinations need no resolution (RFC 2464 §7).
	h.ep.WritePackets([][]byte{ipv6Packet(our6, allNodesIP, 8)})
	if f := h.one(); wire.Ethernet(f).Dst() != allNodesM {
		t.Fatalf("multicast to %v", wire.Ethernet(f).Dst())
	}
}

// TestDAD: the IPv6 addresses are tentative for RetransTime after a DAD solicitation from
// :: each; solicitations for them are ignored meanwhile, and another node's DAD probe or
// advertisement for one makes it a duplicate, never answered again (RFC 4862 §5.4).
func TestDAD(t *testing.T) {
	var failed []netip.Addr
	h := newHarness(t, ether.Config{OnDADFailure: func(a netip.Addr) { failed = append(failed, a) }}, true)
	dad := 0
	for _, f := range h.announced {
		if wire.Ethernet(f).EtherType() != wire.EtherTypeIPv6 {
			continue
		}
		dad++
		ip := wire.IPv6(f[14:])
		if !ip.Src().IsUnspecified() || !wire.IsSolicitedNode(ip.Dst()) || len(ip.Payload()) != 24 {
			t.Errorf("DAD probe %v -> %v, %d bytes (no SLLA option)", ip.Src(), ip.Dst(), len(ip.Payload()))
		}
	}
	if dad != 2 || !h.ep.Tentative(our6) || !h.ep.Tentative(ourLL) {
		t.Fatalf("%d DAD probes; tentative %v %v", dad, h.ep.Tentative(our6), h.ep.Tentative(ourLL))
	}
	ns := ndFrame(snMAC(our6), peerMAC, peer6, wire.SolicitedNode(our6), 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: our6}, llaOpt(wire.NDPOptSourceLinkAddr, peerMAC))
	h.dev.deliver(ns)
	h.none()
	// Another node probes for our link-local address: it is a duplicate.
	h.dev.deliver(ndFrame(snMAC(ourLL), peerMAC, netip.IPv6Unspecified(), wire.SolicitedNode(ourLL), 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: ourLL}, nil))
	h.clk.Advance(time.Second)
	if !h.ep.Duplicate(ourLL) || h.ep.Tentative(our6) || h.ep.Duplicate(our6) {
		t.Fatalf("duplicate %v, %v tentative %v", h.ep.Duplicate(ourLL), our6, h.ep.Tentative(our6))
	}
	if len(failed) != 1 || failed[0] != ourLL {
		t.Fatalf("OnDADFailure saw %v", failed)
	}
	h.dev.deliver(ns)
	if len(h.dev.take()) != 1 {
		t.Fatal("the address was not answered for after DAD")
	}
	h.dev.deliver(ndFrame(snMAC(ourLL), peerMAC, peer6, wire.SolicitedNode(ourLL), 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: ourLL}, llaOpt(wire.NDPOptSourceLinkAddr, peerMAC)))
	h.none()
	// A DAD probe for an address in use is answered to all-nodes (RFC 4861 §7.2.4).
	h.dev.deliver(ndFrame(snMAC(our6), peerMAC, netip.IPv6Unspecified(), wire.SolicitedNode(our6), 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: our6}, nil))
	equalFrame(t, "defending NA", h.one(), ndFrame(allNodesM, ourMAC, our6, allNodesIP, 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborAdvertisement, Flags: wire.NDPFlagOverride, Target: our6},
		llaOpt(wire.NDPOptTargetLinkAddr, ourMAC)))
	h.wantCounters(map[string]uint64{"Ip6DADFailures": 1})
}

// TestRouterAdvertisement: with Config.Router the interface advertises itself once its
// link-local address is usable, and answers a solicitation with an RA from its link-local
// address carrying SLLA, MTU, the /64 prefix (on-link, autonomous) and RDNSS options.
func TestRouterAdvertisement(t *testing.T) {
	dns := netip.MustParseAddr("fd00::3")
	h := newHarness(t, ether.Config{Router: &ether.Router{MTU: 1500, DNS: []netip.Addr{dns}}}, false)
	var first []byte
	for _, f := range h.announced {
		if wire.Ethernet(f).EtherType() == wire.EtherTypeIPv6 {
			first = f
		}
	}
	if first == nil {
		t.Fatal("no unsolicited RA at start")
	}
	h.dev.deliver(ndFrame(wire.MAC{0x33, 0x33, 0, 0, 0, 2}, peerMAC, peerLL, netip.MustParseAddr("ff02::2"), 255,
		wire.NDPFields{Type: wire.ICMPv6RouterSolicitation}, llaOpt(wire.NDPOptSourceLinkAddr, peerMAC)))
	ra := h.one()
	want := ndFrame(peerMAC, ourMAC, ourLL, peerLL, 255, wire.NDPFields{Type: wire.ICMPv6RouterAdvertisement,
		CurHopLimit: 64, RouterLifetime: 1800}, raOpts(dns))
	equalFrame(t, "RA", ra, want)
	ip := wire.IPv6(ra[14:])
	m, err := wire.ParseNDP(ip.Payload(), ip.Src(), ip.Dst(), ip.HopLimit())
	if err != nil {
		t.Fatal(err)
	}
	p, ok := wire.ParseNDPPrefix(m.Option(wire.NDPOptPrefixInfo))
	if !ok || p.Prefix != netip.MustParsePrefix("fd00::/64") || p.Flags != wire.NDPPrefixOnLink|wire.NDPPrefixAutonomy {
		t.Fatalf("prefix option %+v %v", p, ok)
	}
	// The solicitor was cached; the unsolicited RAs keep coming, the first few at most 16 s
	// apart (RFC 4861 §6.2.4).
	if _, ok := h.neighbor(peerLL); !ok {
		t.Fatal("the solicitor's SLLA was not cached")
	}
	h.clk.Advance(16 * time.Second)
	if out := h.dev.take(); len(out) != 1 || wire.IPv6(out[0][14:]).Dst() != allNodesIP {
		t.Fatalf("%d unsolicited RAs in 16 s", len(out))
	}
	// NAs from a router carry the R flag.
	h.dev.deliver(ndFrame(snMAC(our6), peerMAC, peer6, wire.SolicitedNode(our6), 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: our6}, llaOpt(wire.NDPOptSourceLinkAddr, peerMAC)))
	if f := h.one(); f[14+40+4]&wire.NDPFlagRouter == 0 {
		t.Fatal("NA without the router flag")
	}
	// A flood of solicitations is answered at a paced rate.
	for range 100 {
		h.dev.deliver(ndFrame(wire.MAC{0x33, 0x33, 0, 0, 0, 2}, peerMAC, netip.IPv6Unspecified(), netip.MustParseAddr("ff02::2"), 255,
			wire.NDPFields{Type: wire.ICMPv6RouterSolicitation}, nil))
	}
	if out := h.dev.take(); len(out) != 1 {
		t.Fatalf("100 solicitations from :: answered by %d RAs, want 1", len(out))
	}
}

// raOpts are the options TestRouterAdvertisement expects, in the order berth writes them.
func raOpts(dns netip.Addr) []byte {
	b := make([]byte, 8+8+32+24)
	n := wire.PutNDPLinkAddr(b, wire.NDPOptSourceLinkAddr, ourMAC)
	n += wire.PutNDPMTU(b[n:], 1500)
	n += wire.PutNDPPrefix(b[n:], wire.NDPPrefix{Prefix: netip.MustParsePrefix("fd00::/64"),
		Flags: wire.NDPPrefixOnLink | wire.NDPPrefixAutonomy, Valid: 30 * 86400, Preferred: 7 * 86400})
	n += wire.PutNDPRDNSS(b[n:], 1800, []netip.Addr{dns})
	return b[:n]
}

// TestRouterWaitsForDAD: a router advertises only from a usable link-local address:
// nothing while it is tentative, the first RA when DAD ends.
func TestRouterWaitsForDAD(t *testing.T) {
	h := newHarness(t, ether.Config{Router: &ether.Router{}}, true)
	for _, f := range h.announced {
		if ip := wire.IPv6(f[14:]); wire.Ethernet(f).EtherType() == wire.EtherTypeIPv6 && ip.Payload()[0] == wire.ICMPv6RouterAdvertisement {
			t.Fatal("an RA before DAD ended")
		}
	}
	rs := ndFrame(wire.MAC{0x33, 0x33, 0, 0, 0, 2}, peerMAC, peerLL, netip.MustParseAddr("ff02::2"), 255,
		wire.NDPFields{Type: wire.ICMPv6RouterSolicitation}, llaOpt(wire.NDPOptSourceLinkAddr, peerMAC))
	h.dev.deliver(rs)
	h.none()
	h.clk.Advance(time.Second) // DAD ends
	out := h.dev.take()
	if len(out) != 1 || wire.IPv6(out[0][14:]).Payload()[0] != wire.ICMPv6RouterAdvertisement || wire.IPv6(out[0][14:]).Src() != ourLL {
		t.Fatalf("%d frames when DAD ended, want the first RA", len(out))
	}
	h.dev.deliver(rs)
	if len(h.dev.take()) != 1 {
		t.Fatal("a solicitation after DAD not answered")
	}
}
