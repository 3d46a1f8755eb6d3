package ether_test

import (
	"net/netip"
	"testing"

	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/wire"
)

var allDHCP = netip.MustParseAddr("ff02::1:2")

// dhcpv6Frame builds a client's DHCPv6 message from peerLL to ff02::1:2 with options
// (code, data) pairs.
func dhcpv6Frame(typ uint8, xid uint32, opts ...any) []byte {
	msg := make([]byte, 256)
	n := wire.PutDHCPv6Header(msg, typ, xid)
	for i := 0; i < len(opts); i += 2 {
		n += wire.PutDHCPv6Option(msg[n:], opts[i].(uint16), opts[i+1].([]byte))
	}
	msg = msg[:n]
	p := make([]byte, 48+len(msg))
	(&wire.IPv6Fields{PayloadLen: 8 + len(msg), NextHeader: wire.ProtoUDP, HopLimit: 1, Src: peerLL, Dst: allDHCP}).Encode(p)
	(&wire.UDPFields{SrcPort: 546, DstPort: 547, Length: 8 + len(msg)}).Encode(p[40:])
	copy(p[48:], msg)
	wire.SetUDPChecksum(p[40:], peerLL, allDHCP)
	return frame(wire.MAC{0x33, 0x33, 0, 1, 0, 2}, peerMAC, wire.EtherTypeIPv6, p)
}

// TestDHCPv6Stateless: an Information-request is answered with our DUID-LL, the client's
// identifier, the DNS servers and the search list (RFC 8415 §18.3.6, RFC 3646); the
// router advertisements then carry the O flag. Stateful messages and malformed or
// misaddressed ones are not answered.
func TestDHCPv6Stateless(t *testing.T) {
	dns := netip.MustParseAddr("fd00::3")
	h := newHarness(t, ether.Config{Router: &ether.Router{}, DHCPv6: &ether.DHCPv6Config{DNS: []netip.Addr{dns}, Domains: []string{"berth.test"}}}, false)
	cid := []byte{0, 3, 0, 1, 2, 0x9e, 0, 0, 0, 0x64}
	h.dev.deliver(dhcpv6Frame(wire.DHCPv6InformationRequest, 0xabcdef, wire.DHCPv6OptClientID, cid, wire.DHCPv6OptORO, []byte{0, 23, 0, 24}))
	reply := h.one()
	matchTemplate(t, "DHCPv6 reply", reply, `
		029e00000064 02be00000001 86dd              ethernet: to the client, IPv6
		60000000 004c 11 40                         IPv6: 76 bytes of UDP, hop limit 64
		fe8000000000000000be00fffe000001            from our link-local address
		fe8000000000000000 9e 00fffe000064          to the client's
		0223 0222 004c ____                         UDP 547 -> 546
		07 abcdef                                   Reply, the transaction ID
		0002 000a 00030001 02be00000001             server identifier: DUID-LL of our MAC
		0001 000a 00030001029e00000064              client identifier, echoed
		0017 0010 fd000000000000000000000000000003  DNS servers (RFC 3646 §3)
		0018 000c 056265727468 0474657374 00        domain list: berth.test`)
	ip := wire.IPv6(reply[14:])
	if u, err := wire.ParseUDP(ip.Payload()); err != nil || !u.VerifyChecksum(ip.Src(), ip.Dst()) {
		t.Fatalf("UDP checksum: %v", err)
	}
	for _, f := range h.announced {
		if x := wire.IPv6(f[14:]); wire.Ethernet(f).EtherType() == wire.EtherTypeIPv6 && x.Payload()[0] == wire.ICMPv6RouterAdvertisement {
			if x.Payload()[5]&wire.NDPFlagOther == 0 {
				t.Fatal("RA without the O flag")
			}
		}
	}
	bad := dhcpv6Frame(wire.DHCPv6InformationRequest, 1)
	bad[14+40+6] ^= 0xff // the UDP checksum
	h.dev.deliver(
		dhcpv6Frame(wire.DHCPv6Solicit, 2, wire.DHCPv6OptClientID, cid, wire.DHCPv6OptIANA, make([]byte, 12)),
		dhcpv6Frame(wire.DHCPv6InformationRequest, 3, wire.DHCPv6OptIANA, make([]byte, 12)),
		dhcpv6Frame(wire.DHCPv6InformationRequest, 4, wire.DHCPv6OptServerID, []byte{0, 3, 0, 1, 9, 9, 9, 9, 9, 9}),
		dhcpv6Frame(wire.DHCPv6InformationRequest, 5, wire.DHCPv6OptClientID, cid)[:14+48+6], // option past the end
		bad,
	)
	h.none()
	h.wantCounters(map[string]uint64{"Dhcp6InInformationRequests": 3, "Dhcp6OutReplies": 1, "Dhcp6InUnanswered": 1, "Dhcp6InErrors": 3})
	if len(h.up.pkts) != 0 {
		t.Fatal("DHCPv6 went up to the stack")
	}
}
