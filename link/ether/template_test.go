package ether_test

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"

	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/wire"
)

// matchTemplate compares a frame with a template written out by hand from the RFCs'
// layouts, independently of the wire builders: per line, hex bytes in groups separated by
// single spaces, "__" for a byte not compared (a checksum, checked separately), and after
// two spaces a comment. The frame must be exactly as long.
func matchTemplate(t *testing.T, what string, got []byte, tmpl string) {
	t.Helper()
	var hexes []string
	for _, line := range strings.Split(tmpl, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, "  "); i >= 0 {
			line = line[:i] // the rest is a comment
		}
		hexes = append(hexes, strings.Fields(line)...)
	}
	tmpl = strings.Join(hexes, "")
	if len(tmpl)%2 != 0 || len(tmpl)/2 != len(got) {
		t.Fatalf("%s: %d bytes, template has %d\n got % x", what, len(got), len(tmpl)/2, got)
	}
	for i := 0; i < len(tmpl); i += 2 {
		if tmpl[i:i+2] == "__" {
			continue
		}
		b, err := hex.DecodeString(tmpl[i : i+2])
		if err != nil {
			t.Fatalf("%s: bad template at %d", what, i)
		}
		if got[i/2] != b[0] {
			t.Fatalf("%s: byte %d is %02x, template %02x\n got % x", what, i/2, got[i/2], b[0], got)
		}
	}
}

// TestTemplates: the ARP reply, the neighbour advertisement and the DHCP offer, byte by
// byte against hand-written templates.
func TestTemplates(t *testing.T) {
	h := newHarness(t, ether.Config{DHCP: &ether.DHCPConfig{Start: netip.MustParseAddr("10.0.2.15"), End: netip.MustParseAddr("10.0.2.15"),
		DNS: []netip.Addr{dns4}, LeaseTime: 3600e9}}, false)

	h.dev.deliver(arpFrame(wire.BroadcastMAC, peerMAC, wire.ARPRequest, peerMAC, peer4, wire.MAC{}, our4))
	matchTemplate(t, "ARP reply", h.one(), `
		029e00000064 02be00000001 0806         ethernet: to the requester, from us, ARP
		0001 0800 06 04 0002                   Ethernet, IPv4, hlen 6, plen 4, reply (RFC 826)
		02be00000001 0a000202                  sender: our MAC, 10.0.2.2
		029e00000064 0a000264                  target: the requester's MAC, 10.0.2.100
		000000000000000000000000000000000000   padding to 60 bytes`)

	h.dev.deliver(ndFrame(snMAC(our6), peerMAC, peer6, wire.SolicitedNode(our6), 255,
		wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: our6}, llaOpt(wire.NDPOptSourceLinkAddr, peerMAC)))
	na := h.one()
	matchTemplate(t, "neighbour advertisement", na, `
		029e00000064 02be00000001 86dd                 ethernet: to the solicitor's SLLA, IPv6
		60000000 0020 3a ff                            IPv6: 32 bytes of ICMPv6, hop limit 255
		fd000000000000000000000000000002               from the target, fd00::2
		fd000000000000000000000000000100               to the solicitor, fd00::100
		88 00 ____ 60000000                            NA, code 0, checksum, S|O (RFC 4861 §4.4)
		fd000000000000000000000000000002               target
		02 01 02be00000001                             target link-layer address option`)
	ip := wire.IPv6(na[14:])
	if wire.Checksum(ip.Payload(), wire.PseudoHeaderChecksum(wire.ProtoICMPv6, ip.Src(), ip.Dst(), len(ip.Payload()))) != 0xffff {
		t.Fatal("NA checksum")
	}

	h.dev.deliver(dhcpFrame(client1, zero4, bcast4, 0x01020304, zero4, wire.DHCPDiscover))
	offer := h.one()
	// Ethernet, IPv4 and UDP headers, BOOTP's fixed part up to chaddr, then the options.
	head := `
		02c100000001 02be00000001 0800                 ethernet: to the client's MAC (no broadcast flag)
		45 00 0148 0000 0000 40 11 ____                IPv4: 328 bytes, TTL 64, UDP
		0a000202 0a00020f                              from the server to the offered address
		0043 0044 0134 ____                            UDP 67 -> 68, 308 bytes
		02 01 06 00 01020304 0000 0000                 BOOTREPLY, Ethernet, hlen 6, xid
		00000000 0a00020f 00000000 00000000            ciaddr, yiaddr 10.0.2.15, siaddr, giaddr
		02c100000001 00000000000000000000              chaddr`
	matchTemplate(t, "DHCP offer headers", offer[:14+20+8+44], head)
	matchTemplate(t, "DHCP offer options", offer[14+20+8+236:14+20+8+236+4+3+6+6+6+6+6+6+6+6+4+1], `
		63825363                                       magic cookie
		35 01 02                                       DHCPOFFER
		36 04 0a000202                                 server identifier
		33 04 00000e10                                 lease time 3600 s
		3a 04 00000708                                 T1 1800 s
		3b 04 00000c4e                                 T2 3150 s
		01 04 ffffff00                                 subnet mask
		1c 04 0a0002ff                                 broadcast address
		03 04 0a000202                                 router
		06 04 0a000203                                 DNS
		1a 02 05dc                                     interface MTU 1500
		ff                                             end`)
	dhcpReply(t, offer) // the IPv4 and UDP checksums verify
	if len(offer) != 14+20+8+300 {
		t.Fatalf("offer of %d bytes, want a 300-byte BOOTP message", len(offer))
	}
}
