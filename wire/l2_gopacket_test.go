package wire_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/berthnet/berth/wire"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Cross-checks of the link-layer views and builders (Ethernet, ARP, NDP, DHCP) against
// gopacket, as gopacket_test.go does for IP and the transports.

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestGopacketEthernetARP(t *testing.T) {
	src, dst := wire.MAC{2, 1, 2, 3, 4, 5}, wire.MAC{2, 9, 8, 7, 6, 5}
	// wire builds, gopacket decodes.
	b := make([]byte, 14+28)
	(&wire.EthernetFields{Dst: dst, Src: src, EtherType: wire.EtherTypeARP}).Encode(b)
	(&wire.ARPFields{Op: wire.ARPReply, SenderMAC: src, SenderIP: netip.MustParseAddr("10.0.2.2"),
		TargetMAC: dst, TargetIP: netip.MustParseAddr("10.0.2.100")}).Encode(b[14:])
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	arp, _ := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if eth == nil || arp == nil {
		t.Fatalf("gopacket: %v", p.ErrorLayer())
	}
	if !bytes.Equal(eth.SrcMAC, src[:]) || !bytes.Equal(eth.DstMAC, dst[:]) || eth.EthernetType != layers.EthernetTypeARP {
		t.Errorf("ethernet %v %v %v", eth.SrcMAC, eth.DstMAC, eth.EthernetType)
	}
	if arp.Operation != layers.ARPReply || arp.AddrType != layers.LinkTypeEthernet || arp.Protocol != layers.EthernetTypeIPv4 ||
		arp.HwAddressSize != 6 || arp.ProtAddressSize != 4 || !bytes.Equal(arp.SourceHwAddress, src[:]) ||
		!net.IP(arp.SourceProtAddress).Equal(net.IPv4(10, 0, 2, 2)) || !bytes.Equal(arp.DstHwAddress, dst[:]) ||
		!net.IP(arp.DstProtAddress).Equal(net.IPv4(10, 0, 2, 100)) {
		t.Errorf("arp %+v", arp)
	}
	// gopacket builds, wire parses.
	g := serialize(t, &layers.Ethernet{SrcMAC: dst[:], DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: dst[:], SourceProtAddress: []byte{10, 0, 2, 100},
			DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 0, 2, 2}})
	h, err := wire.ParseEthernet(g)
	if err != nil || !h.Dst().IsBroadcast() || h.Src() != dst || h.EtherType() != wire.EtherTypeARP {
		t.Fatalf("wire ethernet %v", err)
	}
	a, err := wire.ParseARP(h.Payload())
	if err != nil || a.Op() != wire.ARPRequest || a.SenderMAC() != dst || a.SenderIP() != netip.MustParseAddr("10.0.2.100") ||
		!a.TargetMAC().IsZero() || a.TargetIP() != netip.MustParseAddr("10.0.2.2") {
		t.Fatalf("wire arp %v %v", err, a)
	}
}

func TestGopacketNDP(t *testing.T) {
	mac := wire.MAC{2, 1, 2, 3, 4, 5}
	src, dst := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::1")
	// wire builds an RA with every option berth sends; gopacket decodes it.
	b := make([]byte, 256)
	n := (&wire.NDPFields{Type: wire.ICMPv6RouterAdvertisement, Flags: wire.NDPFlagOther, CurHopLimit: 64,
		RouterLifetime: 1800, ReachableTime: 30000, RetransTimer: 1000}).Encode(b)
	n += wire.PutNDPLinkAddr(b[n:], wire.NDPOptSourceLinkAddr, mac)
	n += wire.PutNDPMTU(b[n:], 1500)
	n += wire.PutNDPPrefix(b[n:], wire.NDPPrefix{Prefix: netip.MustParsePrefix("fd00:1::/64"),
		Flags: wire.NDPPrefixOnLink | wire.NDPPrefixAutonomy, Valid: 2592000, Preferred: 604800})
	n += wire.PutNDPRDNSS(b[n:], 1800, []netip.Addr{netip.MustParseAddr("fd00:1::3")})
	msg := b[:n]
	wire.SetICMPv6Checksum(msg, src, dst)
	ip := make([]byte, 40+len(msg))
	(&wire.IPv6Fields{PayloadLen: len(msg), NextHeader: wire.ProtoICMPv6, HopLimit: 255, Src: src, Dst: dst}).Encode(ip)
	copy(ip[40:], msg)
	p := gopacket.NewPacket(ip, layers.LayerTypeIPv6, gopacket.Default)
	icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	ra, _ := p.Layer(layers.LayerTypeICMPv6RouterAdvertisement).(*layers.ICMPv6RouterAdvertisement)
	if icmp == nil || ra == nil {
		t.Fatalf("gopacket: %v", p.ErrorLayer())
	}
	icmp.SetNetworkLayerForChecksum(p.NetworkLayer())
	if err, v := icmp.VerifyChecksum(); err != nil || !v.Valid { // gopacket returns the error first
		t.Errorf("gopacket checksum: %+v %v", v, err)
	}
	if ra.HopLimit != 64 || ra.Flags != 0x40 || ra.RouterLifetime != 1800 || ra.ReachableTime != 30000 || ra.RetransTimer != 1000 || len(ra.Options) != 4 {
		t.Fatalf("ra %+v", ra)
	}
	want := []struct {
		typ  layers.ICMPv6Opt
		data []byte
	}{
		{layers.ICMPv6OptSourceAddress, mac[:]},
		{layers.ICMPv6OptMTU, []byte{0, 0, 0, 0, 0x05, 0xdc}},
		{layers.ICMPv6OptPrefixInfo, append([]byte{64, 0xc0, 0, 0x27, 0x8d, 0, 0, 0x09, 0x3a, 0x80, 0, 0, 0, 0}, netip.MustParseAddr("fd00:1::").AsSlice()...)},
		{25, append([]byte{0, 0, 0, 0, 0x07, 0x08}, netip.MustParseAddr("fd00:1::3").AsSlice()...)},
	}
	for i, w := range want {
		if o := ra.Options[i]; o.Type != w.typ || !bytes.Equal(o.Data, w.data) {
			t.Errorf("option %d: %v % x, want %v % x", i, o.Type, o.Data, w.typ, w.data)
		}
	}
	// gopacket builds an NS and an NA; wire parses them.
	target := net.ParseIP("fd00::2")
	for _, l := range []gopacket.SerializableLayer{
		&layers.ICMPv6NeighborSolicitation{TargetAddress: target,
			Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: mac[:]}}},
		&layers.ICMPv6NeighborAdvertisement{Flags: 0x60, TargetAddress: target,
			Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: mac[:]}}},
	} {
		typ := uint8(wire.ICMPv6NeighborSolicitation)
		if _, ok := l.(*layers.ICMPv6NeighborAdvertisement); ok {
			typ = wire.ICMPv6NeighborAdvertisement
		}
		ip6 := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 255, SrcIP: net.ParseIP("fd00::100"), DstIP: net.ParseIP("fd00::2")}
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
		icmp.SetNetworkLayerForChecksum(ip6)
		g := serialize(t, ip6, icmp, l)
		h, err := wire.ParseIPv6(g)
		if err != nil {
			t.Fatal(err)
		}
		m, err := wire.ParseNDP(h.Payload(), h.Src(), h.Dst(), h.HopLimit())
		if err != nil || m.Type() != typ || m.Target() != netip.MustParseAddr("fd00::2") {
			t.Fatalf("wire ndp type %d: %v", typ, err)
		}
		opt := wire.NDPOptSourceLinkAddr
		if typ == wire.ICMPv6NeighborAdvertisement {
			opt = wire.NDPOptTargetLinkAddr
			if m.Flags() != wire.NDPFlagSolicited|wire.NDPFlagOverride {
				t.Errorf("NA flags %#x", m.Flags())
			}
		}
		if got, ok := m.LinkAddr(opt); !ok || got != mac {
			t.Errorf("type %d link address %v %v", typ, got, ok)
		}
	}
}

func TestGopacketDHCP(t *testing.T) {
	mac := wire.MAC{2, 0xc1, 0, 0, 0, 1}
	// wire builds an offer; gopacket decodes it.
	b := make([]byte, 300)
	n := (&wire.DHCPFields{Op: wire.BOOTPReply, XID: 0xdeadbeef, Flags: wire.DHCPFlagBroadcast,
		YIAddr: netip.MustParseAddr("10.0.2.15"), CHAddr: mac}).Encode(b)
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptMessageType, []byte{wire.DHCPOffer})
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptServerID, []byte{10, 0, 2, 2})
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptInterfaceMTU, []byte{0x05, 0xdc})
	wire.PutDHCPOption(b[n:], wire.DHCPOptEnd, nil)
	p := gopacket.NewPacket(b, layers.LayerTypeDHCPv4, gopacket.Default)
	d, _ := p.Layer(layers.LayerTypeDHCPv4).(*layers.DHCPv4)
	if d == nil {
		t.Fatalf("gopacket: %v", p.ErrorLayer())
	}
	if d.Operation != layers.DHCPOpReply || d.HardwareType != layers.LinkTypeEthernet || d.HardwareLen != 6 || d.Xid != 0xdeadbeef ||
		d.Flags != 0x8000 || !d.YourClientIP.Equal(net.IPv4(10, 0, 2, 15)) || !bytes.Equal(d.ClientHWAddr, mac[:]) {
		t.Fatalf("dhcp %+v", d)
	}
	got := map[layers.DHCPOpt][]byte{}
	for _, o := range d.Options {
		got[o.Type] = o.Data
	}
	if !bytes.Equal(got[layers.DHCPOptMessageType], []byte{2}) || !bytes.Equal(got[layers.DHCPOptServerID], []byte{10, 0, 2, 2}) ||
		!bytes.Equal(got[layers.DHCPOptInterfaceMTU], []byte{5, 0xdc}) {
		t.Fatalf("options %v", got)
	}
	// gopacket builds a request; wire parses it.
	req := &layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6, Xid: 7,
		ClientHWAddr: mac[:], Options: layers.DHCPOptions{
			layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(layers.DHCPMsgTypeRequest)}),
			layers.NewDHCPOption(layers.DHCPOptRequestIP, []byte{10, 0, 2, 15}),
			layers.NewDHCPOption(layers.DHCPOptServerID, []byte{10, 0, 2, 2}),
			layers.NewDHCPOption(layers.DHCPOptEnd, nil),
		}}
	g := serialize(t, req)
	m, err := wire.ParseDHCP(g)
	if err != nil || m.Op() != wire.BOOTPRequest || m.XID() != 7 || m.ClientMAC() != mac || m.MessageType() != wire.DHCPRequest ||
		m.OptionAddr(wire.DHCPOptRequestedIP) != netip.MustParseAddr("10.0.2.15") || m.OptionAddr(wire.DHCPOptServerID) != netip.MustParseAddr("10.0.2.2") {
		t.Fatalf("wire dhcp %v", err)
	}
}

func TestGopacketDHCPv6(t *testing.T) {
	b := make([]byte, 64)
	n := wire.PutDHCPv6Header(b, wire.DHCPv6Reply, 0xabcdef)
	n += wire.PutDHCPv6Option(b[n:], wire.DHCPv6OptServerID, []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1})
	n += wire.PutDHCPv6Option(b[n:], wire.DHCPv6OptDNSServers, netip.MustParseAddr("fd00::3").AsSlice())
	p := gopacket.NewPacket(b[:n], layers.LayerTypeDHCPv6, gopacket.Default)
	d, _ := p.Layer(layers.LayerTypeDHCPv6).(*layers.DHCPv6)
	if d == nil {
		t.Fatalf("gopacket: %v", p.ErrorLayer())
	}
	if d.MsgType != layers.DHCPv6MsgTypeReply || !bytes.Equal(d.TransactionID, []byte{0xab, 0xcd, 0xef}) || len(d.Options) != 2 ||
		d.Options[0].Code != layers.DHCPv6OptServerID || d.Options[1].Code != layers.DHCPv6OptDNSServers ||
		!bytes.Equal(d.Options[1].Data, netip.MustParseAddr("fd00::3").AsSlice()) {
		t.Fatalf("dhcpv6 %+v", d)
	}
	g := serialize(t, &layers.DHCPv6{MsgType: layers.DHCPv6MsgTypeInformationRequest, TransactionID: []byte{1, 2, 3},
		Options: layers.DHCPv6Options{layers.NewDHCPv6Option(layers.DHCPv6OptClientID, []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1})}})
	m, err := wire.ParseDHCPv6(g)
	if err != nil || m.MsgType() != wire.DHCPv6InformationRequest || m.XID() != 0x010203 {
		t.Fatalf("wire dhcpv6 %v", err)
	}
	if v, ok := m.Option(wire.DHCPv6OptClientID); !ok || len(v) != 10 {
		t.Fatalf("client id %x %v", v, ok)
	}
}
