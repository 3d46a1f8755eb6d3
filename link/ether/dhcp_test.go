package ether_test

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/wire"
)

// dhcpFrame builds a client's DHCP message from src (0.0.0.0 before it has an address)
// to dst, broadcast on Ethernet, with options (code, value) pairs.
func dhcpFrame(mac wire.MAC, src, dst netip.Addr, xid uint32, ciaddr netip.Addr, typ uint8, opts ...any) []byte {
	b := make([]byte, 600)
	n := (&wire.DHCPFields{Op: wire.BOOTPRequest, XID: xid, CIAddr: ciaddr, CHAddr: mac}).Encode(b)
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptMessageType, []byte{typ})
	for i := 0; i < len(opts); i += 2 {
		var v []byte
		switch x := opts[i+1].(type) {
		case netip.Addr:
			v = x.AsSlice()
		case []byte:
			v = x
		}
		n += wire.PutDHCPOption(b[n:], opts[i].(uint8), v)
	}
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptEnd, nil)
	msg := b[:max(n, 300)]
	p := make([]byte, 28+len(msg))
	(&wire.IPv4Fields{TotalLen: len(p), TTL: 64, Protocol: wire.ProtoUDP, Src: src, Dst: dst}).Encode(p)
	(&wire.UDPFields{SrcPort: 68, DstPort: 67, Length: 8 + len(msg)}).Encode(p[20:])
	copy(p[28:], msg)
	wire.SetUDPChecksum(p[20:], src, dst)
	dm := wire.BroadcastMAC
	if !dst.IsUnspecified() && dst != bcast4 {
		dm = ourMAC
	}
	return frame(dm, mac, wire.EtherTypeIPv4, p)
}

// dhcpReply parses a frame the server sent: Ethernet and IP destination, the message.
func dhcpReply(t *testing.T, f []byte) (wire.MAC, netip.Addr, wire.DHCP) {
	t.Helper()
	eth, err := wire.ParseEthernet(f)
	if err != nil {
		t.Fatal(err)
	}
	ip, err := wire.ParseIPv4(eth.Payload())
	if err != nil {
		t.Fatal(err)
	}
	u, err := wire.ParseUDP(ip.Payload())
	if err != nil || !u.VerifyChecksum(ip.Src(), ip.Dst()) || u.SrcPort() != 67 || u.DstPort() != 68 || ip.Src() != our4 {
		t.Fatalf("UDP %v from %v:%d to port %d", err, ip.Src(), u.SrcPort(), u.DstPort())
	}
	m, err := wire.ParseDHCP(u.Payload())
	if err != nil || m.Op() != wire.BOOTPReply || len(m) < 300 {
		t.Fatalf("DHCP %v op %d len %d", err, m.Op(), len(m))
	}
	return eth.Dst(), ip.Dst(), m
}

func opt32(m wire.DHCP, code uint8) uint32 {
	v, ok := m.Option(code)
	if !ok || len(v) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

// TestDHCPExchange: DISCOVER, OFFER, REQUEST, ACK for two clients from a slirp4netns-like
// pool (.15 onwards), the options RFC 2132 defines for mask, router, DNS, MTU and the
// lease times, RELEASE making an address free again, and INFORM.
func TestDHCPExchange(t *testing.T) {
	h := newHarness(t, ether.Config{DHCP: &ether.DHCPConfig{
		Start: netip.MustParseAddr("10.0.2.15"), End: netip.MustParseAddr("10.0.2.30"),
		DNS: []netip.Addr{dns4}, DomainName: "berth.test", LeaseTime: time.Hour}}, false)
	h.dev.deliver(dhcpFrame(client1, zero4, bcast4, 1, zero4, wire.DHCPDiscover))
	dm, dip, m := dhcpReply(t, h.one())
	want15 := netip.MustParseAddr("10.0.2.15")
	if m.MessageType() != wire.DHCPOffer || m.XID() != 1 || m.YIAddr() != want15 || m.ClientMAC() != client1 {
		t.Fatalf("offer: type %d xid %d yiaddr %v chaddr %v", m.MessageType(), m.XID(), m.YIAddr(), m.ClientMAC())
	}
	// Unicast to the offered address at the client's MAC (RFC 2131 §4.1: no broadcast bit).
	if dm != client1 || dip != want15 {
		t.Fatalf("offer sent to %v %v", dm, dip)
	}
	checks := []struct {
		code uint8
		want []byte
	}{
		{wire.DHCPOptServerID, our4.AsSlice()},
		{wire.DHCPOptSubnetMask, []byte{255, 255, 255, 0}},
		{wire.DHCPOptRouter, our4.AsSlice()},
		{wire.DHCPOptDNS, dns4.AsSlice()},
		{wire.DHCPOptBroadcast, []byte{10, 0, 2, 255}},
		{wire.DHCPOptInterfaceMTU, []byte{0x05, 0xdc}},
		{wire.DHCPOptDomainName, []byte("berth.test")},
	}
	for _, c := range checks {
		if v, ok := m.Option(c.code); !ok || string(v) != string(c.want) {
			t.Errorf("option %d = % x %v, want % x", c.code, v, ok, c.want)
		}
	}
	if opt32(m, wire.DHCPOptLeaseTime) != 3600 || opt32(m, wire.DHCPOptRenewalTime) != 1800 || opt32(m, wire.DHCPOptRebindingTime) != 3150 {
		t.Errorf("lease times %d %d %d", opt32(m, wire.DHCPOptLeaseTime), opt32(m, wire.DHCPOptRenewalTime), opt32(m, wire.DHCPOptRebindingTime))
	}

	// Another client meanwhile gets the next address.
	h.dev.deliver(dhcpFrame(client2, zero4, bcast4, 2, zero4, wire.DHCPDiscover))
	if _, _, m := dhcpReply(t, h.one()); m.YIAddr() != netip.MustParseAddr("10.0.2.16") {
		t.Fatalf("second client offered %v", m.YIAddr())
	}
	// REQUEST (SELECTING) -> ACK.
	h.dev.deliver(dhcpFrame(client1, zero4, bcast4, 3, zero4, wire.DHCPRequest,
		wire.DHCPOptServerID, our4, wire.DHCPOptRequestedIP, want15))
	if _, _, m := dhcpReply(t, h.one()); m.MessageType() != wire.DHCPAck || m.YIAddr() != want15 {
		t.Fatalf("ack: type %d yiaddr %v", m.MessageType(), m.YIAddr())
	}
	// Requesting an address that is another client's is NAKed, broadcast.
	h.dev.deliver(dhcpFrame(client2, zero4, bcast4, 4, zero4, wire.DHCPRequest,
		wire.DHCPOptServerID, our4, wire.DHCPOptRequestedIP, want15))
	dm, dip, m = dhcpReply(t, h.one())
	if m.MessageType() != wire.DHCPNak || dm != wire.BroadcastMAC || dip != bcast4 || !m.YIAddr().IsUnspecified() {
		t.Fatalf("nak: type %d to %v %v yiaddr %v", m.MessageType(), dm, dip, m.YIAddr())
	}
	// A request for another server's offer frees ours silently.
	h.dev.deliver(dhcpFrame(client2, zero4, bcast4, 5, zero4, wire.DHCPRequest,
		wire.DHCPOptServerID, netip.MustParseAddr("10.0.2.9"), wire.DHCPOptRequestedIP, netip.MustParseAddr("10.0.2.50")))
	h.none()
	// RENEWING: unicast from the bound address, ACKed to it.
	h.dev.deliver(dhcpFrame(client1, want15, our4, 6, want15, wire.DHCPRequest))
	dm, dip, m = dhcpReply(t, h.one())
	if m.MessageType() != wire.DHCPAck || dip != want15 || dm != client1 || m.CIAddr() != want15 {
		t.Fatalf("renew ack: type %d to %v %v", m.MessageType(), dm, dip)
	}
	// INFORM: options, no lease.
	h.dev.deliver(dhcpFrame(client2, netip.MustParseAddr("10.0.2.40"), our4, 7, netip.MustParseAddr("10.0.2.40"), wire.DHCPInform))
	if _, _, m := dhcpReply(t, h.one()); m.MessageType() != wire.DHCPAck || !m.YIAddr().IsUnspecified() || opt32(m, wire.DHCPOptLeaseTime) != 0 {
		t.Fatalf("inform ack: type %d yiaddr %v", m.MessageType(), m.YIAddr())
	}
	// RELEASE: the address is free for the next client.
	h.dev.deliver(dhcpFrame(client1, want15, our4, 8, want15, wire.DHCPRelease, wire.DHCPOptServerID, our4))
	h.none()
	h.dev.deliver(dhcpFrame(client2, zero4, bcast4, 9, zero4, wire.DHCPDiscover))
	if _, _, m := dhcpReply(t, h.one()); m.YIAddr() != want15 {
		t.Fatalf("after release offered %v", m.YIAddr())
	}
	h.wantCounters(map[string]uint64{"DhcpInDiscovers": 3, "DhcpOutOffers": 3, "DhcpInRequests": 4,
		"DhcpOutAcks": 3, "DhcpOutNaks": 1, "DhcpInReleases": 1, "DhcpInInforms": 1})
	if len(h.up.pkts) != 0 {
		t.Fatal("DHCP went up to the stack")
	}
}

// TestDHCPOneLease: a pasta-like single-address pool serves one client; a second one's
// DISCOVER finds the pool exhausted (counted, not answered) until the lease ends.
func TestDHCPOneLease(t *testing.T) {
	only := netip.MustParseAddr("10.0.2.100")
	h := newHarness(t, ether.Config{DHCP: &ether.DHCPConfig{Start: only, End: only, LeaseTime: time.Minute}}, false)
	h.dev.deliver(dhcpFrame(client1, zero4, bcast4, 1, zero4, wire.DHCPDiscover))
	h.one()
	h.dev.deliver(dhcpFrame(client1, zero4, bcast4, 2, zero4, wire.DHCPRequest, wire.DHCPOptServerID, our4, wire.DHCPOptRequestedIP, only))
	if _, _, m := dhcpReply(t, h.one()); m.MessageType() != wire.DHCPAck || m.YIAddr() != only {
		t.Fatal("no ack")
	}
	h.dev.deliver(dhcpFrame(client2, zero4, bcast4, 3, zero4, wire.DHCPDiscover))
	h.none()
	h.wantCounters(map[string]uint64{"DhcpPoolExhausted": 1})
	h.clk.Advance(2 * time.Minute)
	h.dev.deliver(dhcpFrame(client2, zero4, bcast4, 4, zero4, wire.DHCPDiscover))
	if _, _, m := dhcpReply(t, h.one()); m.YIAddr() != only {
		t.Fatalf("after expiry offered %v", m.YIAddr())
	}
	if l := h.ep.Leases(); len(l) != 1 || l[0].Addr != only || l[0].MAC != client2 || l[0].ClientID != nil || l[0].Bound {
		t.Fatalf("leases %+v", l)
	}
}

// TestDHCPBadInput: malformed messages, replies, relayed requests and bad checksums are
// dropped and counted.
func TestDHCPBadInput(t *testing.T) {
	h := newHarness(t, ether.Config{DHCP: &ether.DHCPConfig{Start: netip.MustParseAddr("10.0.2.15"), End: netip.MustParseAddr("10.0.2.30")}}, false)
	good := dhcpFrame(client1, zero4, bcast4, 1, zero4, wire.DHCPDiscover)
	fix := func(f []byte) []byte {
		ip := wire.IPv4(f[14:])
		wire.SetUDPChecksum(ip[20:], ip.Src(), ip.Dst())
		return f
	}
	mut := func(off int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[14+28+off] = v
		return fix(b)
	}
	csum := append([]byte(nil), good...)
	csum[14+26] ^= 1
	bad := [][]byte{
		mut(0, wire.BOOTPReply), // a reply
		mut(236, 0),             // magic cookie
		mut(24, 10),             // giaddr: relayed
		mut(2, 17),              // hlen > 16
		mut(241, 200),           // option 53's length past the end
		csum,
	}
	h.dev.deliver(bad...)
	h.none()
	h.wantCounters(map[string]uint64{"DhcpInErrors": uint64(len(bad)), "DhcpOutOffers": 0})
	h.dev.deliver(good)
	h.one()
}

// TestDHCPSkipsOwnAddresses: the pool never hands out the server's, the router's or any
// address the interface answers for (an Extra address such as the DNS one).
func TestDHCPSkipsOwnAddresses(t *testing.T) {
	h := newHarness(t, ether.Config{DHCP: &ether.DHCPConfig{Start: our4, End: netip.MustParseAddr("10.0.2.4")}}, false)
	h.dev.deliver(dhcpFrame(client1, zero4, bcast4, 1, zero4, wire.DHCPDiscover, wire.DHCPOptRequestedIP, gw4))
	if _, _, m := dhcpReply(t, h.one()); m.YIAddr() != netip.MustParseAddr("10.0.2.4") {
		t.Fatalf("offered %v, want 10.0.2.4 (.2 is the server, .3 an Extra address)", m.YIAddr())
	}
	h.dev.deliver(dhcpFrame(client2, zero4, bcast4, 2, zero4, wire.DHCPDiscover))
	h.none()
}
