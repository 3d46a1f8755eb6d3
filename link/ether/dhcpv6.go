package ether

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/berthnet/berth/wire"
)

// DHCPv6Config configures a stateless DHCPv6 server (RFC 8415 §6.1): it answers
// Information-request messages with the DNS servers (RFC 3646) and search domains, for
// hosts that take their addresses by SLAAC from the router advertisements and the rest
// from DHCPv6 (the RA's O flag, which Router.Other sets; New sets it when both Router and
// DHCPv6 are configured). It hands out no addresses: Solicit and the other stateful
// messages are not answered (counted).
type DHCPv6Config struct {
	DNS     []netip.Addr // IPv6 name servers
	Domains []string     // the domain search list
	// InfoRefresh is how long a client may use the answer before asking again
	// (Information Refresh Time, RFC 8415 §21.23); zero: the client's default, 24 h.
	InfoRefresh time.Duration
}

// allDHCPServers is All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
var allDHCPServers = netip.MustParseAddr("ff02::1:2")

type dhcpv6Server struct {
	duid    []byte // DUID-LL of the MAC (RFC 8415 §11.4): our server identifier
	options []byte // the options every Reply carries after the identifiers
}

func (e *Endpoint) initDHCPv6() error {
	c := e.cfg.DHCPv6
	if c == nil {
		return nil
	}
	s := &dhcpv6Server{duid: append([]byte{0, 3, 0, 1}, e.mac[:]...)}
	b := make([]byte, 0, 512)
	var buf [4 + 16*16]byte
	if len(c.DNS) > 0 {
		k := 0
		for _, a := range c.DNS {
			if a.Is6() && !a.Is4In6() && k+16 <= len(buf)-4 {
				k += copy(buf[4+k:], a.AsSlice())
			}
		}
		n := wire.PutDHCPv6Option(buf[:], wire.DHCPv6OptDNSServers, buf[4:4+k])
		b = append(b, buf[:n]...)
	}
	if len(c.Domains) > 0 {
		var names []byte
		for _, d := range c.Domains {
			enc, err := encodeDomain(d)
			if err != nil {
				return err
			}
			names = append(names, enc...)
		}
		if len(names) > 1024 {
			return errors.New("ether: DHCPv6 domain list too long")
		}
		opt := make([]byte, 4+len(names))
		wire.PutDHCPv6Option(opt, wire.DHCPv6OptDomainList, names)
		b = append(b, opt...)
	}
	if c.InfoRefresh > 0 {
		var t [8]byte
		binary.BigEndian.PutUint32(t[4:], max(durationSeconds(c.InfoRefresh), 600)) // §21.23: IRT_MINIMUM
		wire.PutDHCPv6Option(t[:], wire.DHCPv6OptInfoRefresh, t[4:])
		b = append(b, t[:]...)
	}
	s.options = b
	e.dhcp6 = s
	if r := e.cfg.Router; r != nil && !r.Other {
		cp := *r
		cp.Other = true
		e.cfg.Router = &cp
	}
	return nil
}

// encodeDomain writes a domain name in DNS wire format (RFC 1035 §3.1), as RFC 8415 §10
// requires for the domain list.
func encodeDomain(d string) ([]byte, error) {
	d = strings.TrimSuffix(d, ".")
	var out []byte
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 {
			return nil, errors.New("ether: bad DHCPv6 domain " + d)
		}
		out = append(out, byte(len(l)))
		out = append(out, l...)
	}
	return append(out, 0), nil
}

// isDHCPv6ToServer reports whether p, an IPv6 packet, is UDP to port 547 directly after
// the fixed header.
func isDHCPv6ToServer(p []byte) bool {
	return len(p) >= wire.IPv6HeaderLen+wire.UDPHeaderLen && p[6] == wire.ProtoUDP &&
		binary.BigEndian.Uint16(p[wire.IPv6HeaderLen+2:]) == wire.DHCPv6ServerPort
}

// dhcpv6Input answers an Information-request (RFC 8415 §18.3.6); any other message is
// counted and dropped.
func (e *Endpoint) dhcpv6Input(h wire.Ethernet, p []byte) {
	c := &e.ctr
	ip, err := wire.ParseIPv6(p)
	if err != nil {
		c.Dhcp6InErrors.Add(1)
		return
	}
	src, dst := ip.Src(), ip.Dst()
	if (dst != allDHCPServers && !e.owns(dst)) || !src.IsLinkLocalUnicast() {
		// Clients send from their link-local address (§13.1); relays are not served.
		c.Dhcp6InErrors.Add(1)
		return
	}
	u, err := wire.ParseUDP(ip.Payload())
	if err != nil || !u.VerifyChecksum(src, dst) || u.Checksum() == 0 {
		c.Dhcp6InErrors.Add(1)
		return
	}
	m, err := wire.ParseDHCPv6(u.Payload())
	if err != nil {
		c.Dhcp6InErrors.Add(1)
		return
	}
	if m.MsgType() != wire.DHCPv6InformationRequest {
		c.Dhcp6InUnanswered.Add(1) // stateful: no addresses here
		return
	}
	c.Dhcp6InInformationRequests.Add(1)
	if sid, ok := m.Option(wire.DHCPv6OptServerID); ok && string(sid) != string(e.dhcp6.duid) {
		return // §16.12: for another server
	}
	for _, ia := range []uint16{wire.DHCPv6OptIANA, wire.DHCPv6OptIATA, wire.DHCPv6OptIAPD} {
		if _, ok := m.Option(ia); ok {
			c.Dhcp6InErrors.Add(1) // §16.12: an Information-request asks for no leases
			return
		}
	}
	cid, hasCID := m.Option(wire.DHCPv6OptClientID)
	f := e.ctl.get()
	const off = wire.EthernetHeaderLen + wire.IPv6HeaderLen + wire.UDPHeaderLen
	b := f.b[off:]
	if 4+4+len(e.dhcp6.duid)+4+len(cid)+len(e.dhcp6.options) > len(b) {
		e.ctl.put(f)
		c.Dhcp6InErrors.Add(1)
		return
	}
	n := wire.PutDHCPv6Header(b, wire.DHCPv6Reply, m.XID())
	n += wire.PutDHCPv6Option(b[n:], wire.DHCPv6OptServerID, e.dhcp6.duid)
	if hasCID {
		n += wire.PutDHCPv6Option(b[n:], wire.DHCPv6OptClientID, cid)
	}
	n += copy(b[n:], e.dhcp6.options)
	udp := f.b[off-wire.UDPHeaderLen:]
	(&wire.UDPFields{SrcPort: wire.DHCPv6ServerPort, DstPort: wire.DHCPv6ClientPort, Length: wire.UDPHeaderLen + n}).Encode(udp)
	wire.SetUDPChecksum(udp[:wire.UDPHeaderLen+n], e.ll6, src)
	(&wire.IPv6Fields{PayloadLen: wire.UDPHeaderLen + n, NextHeader: wire.ProtoUDP, HopLimit: 64, Src: e.ll6, Dst: src}).Encode(f.b[wire.EthernetHeaderLen:])
	(&wire.EthernetFields{Dst: h.Src(), Src: e.mac, EtherType: wire.EtherTypeIPv6}).Encode(f.b[:])
	c.Dhcp6OutReplies.Add(1)
	e.sendCtl(f, off+n)
}
