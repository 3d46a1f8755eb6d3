package ether_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/wire"
)

// TestAnnounce: New announces each IPv4 address it answers for with a gratuitous ARP
// request (RFC 5227 §2.3), broadcast, sender = target = the address, padded to 60 bytes.
func TestAnnounce(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	seen := map[netip.Addr]bool{}
	if len(h.announced) != 4 {
		t.Fatalf("%d announcements, want 2 at New and 2 ANNOUNCE_INTERVAL later (RFC 5227 §2.3)", len(h.announced))
	}
	for _, f := range h.announced {
		a, err := wire.ParseARP(f[14:])
		if err != nil {
			t.Fatalf("announcement % x: %v", f, err)
		}
		equalFrame(t, "announcement", f, arpFrame(wire.BroadcastMAC, ourMAC, wire.ARPRequest, ourMAC, a.SenderIP(), wire.MAC{}, a.SenderIP()))
		seen[a.SenderIP()] = true
	}
	if !seen[our4] || !seen[gw4] {
		t.Fatalf("announced %v, want %v and %v", seen, our4, gw4)
	}
	h.wantCounters(map[string]uint64{"ArpOutGratuitous": 4, "ArpOutRequests": 0})
	h.clk.Advance(time.Hour)
	h.none()
}

// TestARPReply: a request for our address (and for the gateway address berth plays) is
// answered with the one reply RFC 826 describes, and the sender is cached STALE.
func TestARPReply(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	for _, target := range []netip.Addr{our4, gw4} {
		h.dev.deliver(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, peer4, wire.MAC{}, target))
		equalFrame(t, "reply for "+target.String(), h.one(),
			arpFrame(peerMAC, ourMAC, wire.ARPReply, ourMAC, target, peerMAC, peer4))
	}
	if n, ok := h.neighbor(peer4); !ok || n.MAC != peerMAC || n.State != "STALE" {
		t.Fatalf("entry for the requester: %+v %v, want STALE %v", n, ok, peerMAC)
	}
	h.wantCounters(map[string]uint64{"ArpInRequests": 2, "ArpOutReplies": 2, "EtherInFrames": 2})
	if len(h.up.pkts) != 0 {
		t.Fatal("ARP went up to the stack")
	}
}

// TestARPBadInput: malformed ARP, ARP for other hosts, impossible sender addresses are
// dropped and counted; nothing is answered or cached.
func TestARPBadInput(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	good := arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, peer4, wire.MAC{}, our4)
	mut := func(off int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[off] = v
		return b
	}
	h.dev.deliver(
		mut(14+4, 8),  // hlen 8
		mut(14+5, 16), // plen 16
		mut(14+1, 6),  // hardware type IEEE 802
		mut(14+7, 9),  // op 9
		good[:14+27],  // truncated
		arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, wire.BroadcastMAC, peer4, wire.MAC{}, our4),                  // sender MAC broadcast
		arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, netip.MustParseAddr("224.0.0.1"), wire.MAC{}, our4), // multicast sender
		arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, netip.MustParseAddr("127.0.0.1"), wire.MAC{}, our4), // loopback sender
	)
	h.none()
	h.wantCounters(map[string]uint64{"ArpInErrors": 8, "ArpOutReplies": 0})
	// For another host: not answered, not cached (RFC 826 creates entries only when we
	// are the target).
	h.dev.deliver(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, peer4, wire.MAC{}, other4))
	h.none()
	if _, ok := h.neighbor(peer4); ok {
		t.Fatal("ARP for another host created an entry")
	}
	h.wantCounters(map[string]uint64{"ArpInNotForUs": 1})
	// An unsolicited reply creates nothing either (Linux's arp_accept=0).
	h.dev.deliver(arpFrame(ourMAC, peerMAC, wire.ARPReply, peerMAC, peer4, ourMAC, our4))
	if _, ok := h.neighbor(peer4); ok {
		t.Fatal("an unsolicited reply created an entry")
	}
}

// TestARPProbe: an RFC 5227 probe for our address is answered to the prober, who is not
// cached (it owns no address yet); a probe for another address is not answered.
func TestARPProbe(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	zero := netip.IPv4Unspecified()
	h.dev.deliver(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, zero, wire.MAC{}, our4))
	equalFrame(t, "probe answer", h.one(), arpFrame(peerMAC, ourMAC, wire.ARPReply, ourMAC, our4, peerMAC, zero))
	h.dev.deliver(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, zero, wire.MAC{}, other4))
	h.none()
	if len(h.ep.Neighbors()) != 0 {
		t.Fatalf("probes created entries: %+v", h.ep.Neighbors())
	}
	h.wantCounters(map[string]uint64{"ArpInProbes": 2})
}

// TestARPSpoofGateway: a gratuitous ARP (or reply, or request) claiming the gateway
// address berth answers for is a spoof: the cache is untouched, the address is defended
// with one announcement per DEFEND_INTERVAL, and it is counted.
func TestARPSpoofGateway(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	spoof := arpFrame(wire.BroadcastMAC, otherMAC, wire.ARPRequest, otherMAC, gw4, wire.MAC{}, gw4)
	h.dev.deliver(spoof)
	equalFrame(t, "defence", h.one(), arpFrame(wire.BroadcastMAC, ourMAC, wire.ARPRequest, ourMAC, gw4, wire.MAC{}, gw4))
	h.dev.deliver(spoof, arpFrame(ourMAC, otherMAC, wire.ARPReply, otherMAC, gw4, ourMAC, our4))
	h.none() // within DEFEND_INTERVAL
	h.clk.Advance(11 * time.Second)
	h.dev.deliver(spoof)
	if len(h.dev.take()) != 1 {
		t.Fatal("not defended again after DEFEND_INTERVAL")
	}
	if _, ok := h.neighbor(gw4); ok {
		t.Fatal("the spoof made a cache entry for our own address")
	}
	h.wantCounters(map[string]uint64{"ArpInSpoofed": 4, "ArpInGratuitous": 0, "ArpOutGratuitous": 4 + 2})
}

// TestGratuitousARP: a gratuitous ARP updates the entry of a known neighbour that moved to
// a new MAC (STALE), and creates none for an unknown one.
func TestGratuitousARP(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	h.dev.deliver(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, peer4, wire.MAC{}, our4))
	h.dev.take()
	h.dev.deliver(arpFrame(wire.BroadcastMAC, otherMAC, wire.ARPRequest, otherMAC, peer4, wire.MAC{}, peer4),
		arpFrame(wire.BroadcastMAC, otherMAC, wire.ARPRequest, otherMAC, other4, wire.MAC{}, other4))
	h.none()
	if n, _ := h.neighbor(peer4); n.MAC != otherMAC || n.State != "STALE" {
		t.Fatalf("after a gratuitous ARP: %+v", n)
	}
	if _, ok := h.neighbor(other4); ok {
		t.Fatal("a gratuitous ARP created an entry")
	}
	h.wantCounters(map[string]uint64{"ArpInGratuitous": 2})
}

// TestResolveAndNUD walks an entry through Linux's states on a manual clock: INCOMPLETE
// (broadcast request, packet queued), REACHABLE (reply; the queued packet goes out),
// STALE after ReachableTime, DELAY on use, PROBE (unicast requests) and gone after
// MAX_UNICAST_SOLICIT unanswered probes.
func TestResolveAndNUD(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	pkt := ipv4Packet(our4, peer4, 10)
	if n, err := h.ep.WritePackets([][]byte{pkt}); n != 1 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	equalFrame(t, "request", h.one(), arpFrame(wire.BroadcastMAC, ourMAC, wire.ARPRequest, ourMAC, our4, wire.MAC{}, peer4))
	if n, _ := h.neighbor(peer4); n.State != "INCOMPLETE" {
		t.Fatalf("state %s, want INCOMPLETE", n.State)
	}
	h.dev.deliver(arpFrame(ourMAC, peerMAC, wire.ARPReply, peerMAC, peer4, ourMAC, our4))
	equalFrame(t, "queued packet", h.one(), frame(peerMAC, ourMAC, wire.EtherTypeIPv4, pkt))
	if n, _ := h.neighbor(peer4); n.State != "REACHABLE" || n.MAC != peerMAC {
		t.Fatalf("after the reply: %+v", n)
	}
	h.ep.WritePackets([][]byte{pkt})
	equalFrame(t, "direct", h.one(), frame(peerMAC, ourMAC, wire.EtherTypeIPv4, pkt))

	h.clk.Advance(ether.DefaultReachableTime/2 - time.Millisecond)
	if n, _ := h.neighbor(peer4); n.State != "REACHABLE" {
		t.Fatalf("after half ReachableTime: %s, want REACHABLE (RFC 4861 §6.3.2's least factor)", n.State)
	}
	h.clk.Advance(ether.DefaultReachableTime)
	if n, _ := h.neighbor(peer4); n.State != "STALE" {
		t.Fatalf("after 1.5 ReachableTime: %s, want STALE", n.State)
	}
	h.ep.WritePackets([][]byte{pkt}) // a STALE entry still sends, and goes to DELAY
	equalFrame(t, "stale send", h.one(), frame(peerMAC, ourMAC, wire.EtherTypeIPv4, pkt))
	if n, _ := h.neighbor(peer4); n.State != "DELAY" {
		t.Fatalf("after use: %s, want DELAY", n.State)
	}
	h.clk.Advance(ether.DefaultDelayFirstProbe)
	probe := arpFrame(peerMAC, ourMAC, wire.ARPRequest, ourMAC, our4, wire.MAC{}, peer4)
	equalFrame(t, "probe", h.one(), probe)
	if n, _ := h.neighbor(peer4); n.State != "PROBE" {
		t.Fatalf("after DelayFirstProbe: %s, want PROBE", n.State)
	}
	h.clk.Advance(time.Second)
	h.clk.Advance(time.Second)
	if out := h.dev.take(); len(out) != 2 {
		t.Fatalf("%d more probes, want 2", len(out))
	}
	h.clk.Advance(time.Second)
	if _, ok := h.neighbor(peer4); ok {
		t.Fatal("entry survived MAX_UNICAST_SOLICIT unanswered probes")
	}
	h.wantCounters(map[string]uint64{"NeighResFailed": 1, "ArpOutRequests": 4})

	// A probe answered puts the entry back to REACHABLE.
	h.ep.WritePackets([][]byte{pkt})
	h.dev.deliver(arpFrame(ourMAC, peerMAC, wire.ARPReply, peerMAC, peer4, ourMAC, our4))
	h.dev.take()
	h.clk.Advance(3 * ether.DefaultReachableTime / 2)
	h.ep.WritePackets([][]byte{pkt})
	h.clk.Advance(ether.DefaultDelayFirstProbe)
	h.dev.take()
	h.dev.deliver(arpFrame(ourMAC, peerMAC, wire.ARPReply, peerMAC, peer4, ourMAC, our4))
	if n, _ := h.neighbor(peer4); n.State != "REACHABLE" {
		t.Fatalf("after an answered probe: %s", n.State)
	}
}

// TestUnresolvedFails: an address nobody answers for is asked MAX_MULTICAST_SOLICIT times
// a second apart; then its queued packets are dropped and counted.
func TestUnresolvedFails(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	h.ep.WritePackets([][]byte{ipv4Packet(our4, peer4, 10), ipv4Packet(our4, peer4, 20)})
	h.clk.Advance(time.Second)
	h.clk.Advance(time.Second)
	if out := h.dev.take(); len(out) != 3 {
		t.Fatalf("%d requests, want 3", len(out))
	}
	h.clk.Advance(time.Second)
	h.none()
	if _, ok := h.neighbor(peer4); ok {
		t.Fatal("failed entry kept")
	}
	h.wantCounters(map[string]uint64{"NeighResFailed": 1, "NeighUnresolvedDiscards": 2})
}

// TestAddRemoveAddress: an address added later is announced and answered for, its subnet
// on-link; a removed one is no longer answered for.
func TestAddRemoveAddress(t *testing.T) {
	h := newHarness(t, ether.Config{}, false)
	new4 := netip.MustParseAddr("192.168.7.1")
	h.ep.AddAddress(netip.PrefixFrom(new4, 24))
	equalFrame(t, "announcement", h.one(), arpFrame(wire.BroadcastMAC, ourMAC, wire.ARPRequest, ourMAC, new4, wire.MAC{}, new4))
	h.ep.AddAddress(netip.PrefixFrom(new4, 24))
	h.none()
	host := netip.MustParseAddr("192.168.7.9")
	h.ep.WritePackets([][]byte{ipv4Packet(new4, host, 1)})
	equalFrame(t, "request from the new address", h.one(), arpFrame(wire.BroadcastMAC, ourMAC, wire.ARPRequest, ourMAC, new4, wire.MAC{}, host))
	h.dev.deliver(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, host, wire.MAC{}, new4))
	// The request completes the entry (RFC 826 merge): the queued packet goes out, and
	// the reply.
	if out := h.dev.take(); len(out) != 2 {
		t.Fatalf("%d frames, want the queued packet and the reply", len(out))
	}
	h.ep.RemoveAddress(new4)
	h.dev.deliver(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, host, wire.MAC{}, new4))
	h.none()
	h.ep.AddExtra(netip.MustParseAddr("10.0.2.4"))
	h.one()
	if got := h.ep.Addresses(); len(got) != 5 { // our4, gw4, 10.0.2.4, our6, link-local
		t.Fatalf("addresses %v", got)
	}
}
