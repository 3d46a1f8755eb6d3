package ether

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/berthnet/berth/wire"
)

// DHCPConfig configures the DHCPv4 server (RFC 2131) an interface runs for the hosts on
// its link, as slirp4netns does for its namespace (a pool, 10.0.2.15-10.0.2.30) or pasta
// (one lease: Start == End). Zero fields take the defaults named.
type DHCPConfig struct {
	// Start and End bound the address pool, inclusive; both must lie in the subnet.
	Start, End netip.Addr
	// Subnet is the clients' subnet (the mask and broadcast address they get); default:
	// the IPv4 prefix of Config.Addrs that holds Start.
	Subnet netip.Prefix
	// ServerID is the server identifier and the replies' source: default the
	// interface's address in Subnet.
	ServerID netip.Addr
	// Router is the default gateway offered (option 3); default ServerID. Set it to
	// netip.IPv4Unspecified() to offer none.
	Router netip.Addr
	// DNS are the name servers offered (option 6).
	DNS []netip.Addr
	// DomainName, if set, is offered in option 15.
	DomainName string
	// MTU is offered in option 26 (RFC 2132 §5.1); default the device's MTU.
	MTU int
	// LeaseTime is how long a lease lasts (option 51), default 24 hours; T1 and T2 are
	// its half and seven eighths (RFC 2131 §4.4.5).
	LeaseTime time.Duration
}

// offerHold is how long an offered address stays reserved for the client it was offered
// to (RFC 2131 §4.3.1 leaves it to the server).
const offerHold = 30 * time.Second

// declineHold is how long an address a client declined (found in use, RFC 2131 §4.3.3)
// stays out of the pool.
const declineHold = 10 * time.Minute

type lease struct {
	client  string   // client identifier (option 61) or chaddr: the key
	mac     wire.MAC // chaddr
	addr    netip.Addr
	expires time.Time
	bound   bool // ACKed; false: only offered
}

type dhcpServer struct {
	cfg   DHCPConfig
	mask  [4]byte
	bcast netip.Addr

	mu       sync.Mutex
	byClient map[string]*lease
	byAddr   map[netip.Addr]*lease // a lease with empty client: declined
	owns     func(netip.Addr) bool // the interface's own addresses, never leased
}

// Lease is a DHCP lease as Leases reports it.
type Lease struct {
	MAC wire.MAC // the client's hardware address
	// ClientID is the client identifier (option 61) it sent, if any: leases are kept by
	// it, else by MAC (RFC 2131 §4.2).
	ClientID []byte
	Addr     netip.Addr
	Expires  time.Time
	Bound    bool // acknowledged (false: offered)
}

// Leases returns the DHCP server's leases and offers (nil without a server).
func (e *Endpoint) Leases() []Lease {
	s := e.dhcp
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Lease
	for _, l := range s.byClient {
		x := Lease{MAC: l.mac, Addr: l.addr, Expires: l.expires, Bound: l.bound}
		if l.client != string(l.mac[:]) {
			x.ClientID = []byte(l.client)
		}
		out = append(out, x)
	}
	return out
}

func (e *Endpoint) initDHCP() error {
	if e.cfg.DHCP == nil {
		return nil
	}
	c := *e.cfg.DHCP
	c.Start, c.End = c.Start.Unmap(), c.End.Unmap()
	if !c.Start.Is4() || !c.End.Is4() || c.End.Less(c.Start) {
		return errors.New("ether: DHCP pool " + c.Start.String() + "-" + c.End.String() + " is not an IPv4 range")
	}
	if !c.Subnet.IsValid() {
		for _, p := range e.cfg.Addrs {
			if p.Addr().Is4() && p.Contains(c.Start) {
				c.Subnet = p.Masked()
				if !c.ServerID.IsValid() {
					c.ServerID = p.Addr()
				}
			}
		}
	}
	if !c.Subnet.IsValid() || !c.Subnet.Contains(c.Start) || !c.Subnet.Contains(c.End) {
		return errors.New("ether: DHCP pool outside its subnet")
	}
	if !c.ServerID.IsValid() {
		for _, p := range e.cfg.Addrs {
			if p.Addr().Is4() && c.Subnet.Contains(p.Addr()) {
				c.ServerID = p.Addr()
			}
		}
	}
	if !c.ServerID.IsValid() {
		return errors.New("ether: DHCP server has no address in " + c.Subnet.String())
	}
	if !c.Router.IsValid() {
		c.Router = c.ServerID
	}
	if c.MTU <= 0 {
		c.MTU = e.mtu
	}
	if c.LeaseTime <= 0 {
		c.LeaseTime = 24 * time.Hour
	}
	s := &dhcpServer{cfg: c, byClient: map[string]*lease{}, byAddr: map[netip.Addr]*lease{}, owns: e.owns}
	m := ^uint32(0) << (32 - c.Subnet.Bits())
	binary.BigEndian.PutUint32(s.mask[:], m)
	n := c.Subnet.Addr().As4()
	binary.BigEndian.PutUint32(n[:], binary.BigEndian.Uint32(n[:])|^m)
	s.bcast = netip.AddrFrom4(n)
	e.dhcp = s
	return nil
}

// isDHCPToServer reports whether p is an unfragmented IPv4 UDP datagram to port 67.
func isDHCPToServer(p []byte) bool {
	if len(p) < wire.IPv4MinHeaderLen || p[9] != wire.ProtoUDP {
		return false
	}
	hl := int(p[0]&0x0f) * 4
	if binary.BigEndian.Uint16(p[6:])&0x3fff != 0 || len(p) < hl+wire.UDPHeaderLen {
		return false
	}
	return binary.BigEndian.Uint16(p[hl+2:]) == wire.DHCPServerPort
}

// dhcpInput serves one client message (RFC 2131 §4.3).
func (e *Endpoint) dhcpInput(h wire.Ethernet, p []byte) {
	s, c := e.dhcp, &e.ctr
	ip, err := wire.ParseIPv4(p)
	if err != nil || ip.HeaderLen() > len(ip) {
		c.DhcpInErrors.Add(1)
		return
	}
	dst := ip.Dst()
	if dst != netip.AddrFrom4([4]byte{255, 255, 255, 255}) && dst != s.bcast && !e.owns(dst) {
		c.DhcpInErrors.Add(1) // to another server
		return
	}
	u, err := wire.ParseUDP(ip.Payload())
	if err != nil || !u.VerifyChecksum(ip.Src(), dst) {
		c.DhcpInErrors.Add(1)
		return
	}
	m, err := wire.ParseDHCP(u.Payload())
	if err != nil || m.Op() != wire.BOOTPRequest || m.HType() != 1 || m.HLen() != 6 || !m.GIAddr().IsUnspecified() {
		// Only Ethernet clients on this link: relayed requests (giaddr) are not served.
		c.DhcpInErrors.Add(1)
		return
	}
	client := string(m.CHAddr())
	if id, ok := m.Option(wire.DHCPOptClientID); ok && len(id) > 0 {
		client = string(id)
	}
	now := e.clk.Now()
	mac := m.ClientMAC()
	switch m.MessageType() {
	case wire.DHCPDiscover:
		c.DhcpInDiscovers.Add(1)
		if a, ok := s.offer(client, mac, m.OptionAddr(wire.DHCPOptRequestedIP), now); ok {
			e.dhcpReply(m, wire.DHCPOffer, a)
			c.DhcpOutOffers.Add(1)
		} else {
			c.DhcpPoolExhausted.Add(1)
		}
	case wire.DHCPRequest:
		c.DhcpInRequests.Add(1)
		sid, req := m.OptionAddr(wire.DHCPOptServerID), m.OptionAddr(wire.DHCPOptRequestedIP)
		if sid.IsValid() && sid != s.cfg.ServerID {
			// SELECTING, and the client chose another server's offer: ours is free again.
			s.release(client, netip.Addr{})
			return
		}
		want := req
		if !want.IsValid() {
			want = m.CIAddr() // RENEWING or REBINDING
		}
		// SELECTING (our server identifier, the offered address), INIT-REBOOT (a
		// remembered address) or RENEWING/REBINDING (ciaddr): RFC 2131 §4.3.2 ACKs an
		// address that is the client's or free, and NAKs a wrong one, or one of another
		// network, so the client starts over.
		if a, ok := s.bind(client, mac, want, now); ok {
			e.dhcpReply(m, wire.DHCPAck, a)
			c.DhcpOutAcks.Add(1)
		} else {
			e.dhcpReply(m, wire.DHCPNak, netip.Addr{})
			c.DhcpOutNaks.Add(1)
		}
	case wire.DHCPDecline:
		c.DhcpInDeclines.Add(1)
		s.decline(client, m.OptionAddr(wire.DHCPOptRequestedIP), now)
	case wire.DHCPRelease:
		c.DhcpInReleases.Add(1)
		s.release(client, m.CIAddr())
	case wire.DHCPInform:
		c.DhcpInInforms.Add(1)
		e.dhcpReply(m, wire.DHCPAck, netip.Addr{})
		c.DhcpOutAcks.Add(1)
	default:
		c.DhcpInErrors.Add(1)
	}
}

// free reports whether a may be given to client now.
func (s *dhcpServer) free(a netip.Addr, client string, now time.Time) bool {
	if !a.IsValid() || a.Less(s.cfg.Start) || s.cfg.End.Less(a) || a == s.cfg.ServerID || a == s.cfg.Router || s.owns(a) {
		return false
	}
	l := s.byAddr[a]
	return l == nil || l.client == client || now.After(l.expires)
}

// offer picks an address for client (RFC 2131 §4.3.1): its current lease, the address it
// asks for if free, else the first free one; and reserves it for offerHold.
func (s *dhcpServer) offer(client string, mac wire.MAC, req netip.Addr, now time.Time) (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.byClient[client]; l != nil {
		if !l.bound {
			l.expires = now.Add(offerHold)
		}
		return l.addr, true
	}
	a := req
	if !s.free(a, client, now) {
		a = netip.Addr{}
		for x := s.cfg.Start; x.IsValid() && !s.cfg.End.Less(x); x = x.Next() {
			if s.free(x, client, now) {
				a = x
				break
			}
		}
	}
	if !a.IsValid() {
		return a, false
	}
	s.set(&lease{client: client, mac: mac, addr: a, expires: now.Add(offerHold)})
	return a, true
}

// set records l, replacing whatever held its address or its client before.
func (s *dhcpServer) set(l *lease) {
	if old := s.byAddr[l.addr]; old != nil && old.client != "" {
		delete(s.byClient, old.client)
	}
	if old := s.byClient[l.client]; old != nil {
		delete(s.byAddr, old.addr)
	}
	s.byAddr[l.addr] = l
	if l.client != "" {
		s.byClient[l.client] = l
	}
}

// bind acknowledges client's request for a (RFC 2131 §4.3.2): it must be the client's
// offer or lease, or a free address of the pool.
func (s *dhcpServer) bind(client string, mac wire.MAC, a netip.Addr, now time.Time) (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.free(a, client, now) {
		return a, false
	}
	s.set(&lease{client: client, mac: mac, addr: a, expires: now.Add(s.cfg.LeaseTime), bound: true})
	return a, true
}

// release ends client's lease or offer (of a, when a is valid).
func (s *dhcpServer) release(client string, a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.byClient[client]; l != nil && (!a.IsValid() || l.addr == a) {
		delete(s.byClient, client)
		delete(s.byAddr, l.addr)
	}
}

// decline takes a out of the pool for declineHold: the client found it in use.
func (s *dhcpServer) decline(client string, a netip.Addr, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.byClient[client]; l != nil && l.addr == a {
		delete(s.byClient, client)
		s.byAddr[a] = &lease{addr: a, expires: now.Add(declineHold)}
	}
}

// dhcpReply sends an OFFER, ACK or NAK for request m, giving yiaddr (zero for an INFORM's
// ACK and a NAK), addressed as RFC 2131 §4.1 says: to ciaddr if the client has one (not
// for a NAK), broadcast if it asks for that or for a NAK, else unicast to yiaddr at its
// hardware address.
func (e *Endpoint) dhcpReply(m wire.DHCP, typ uint8, yiaddr netip.Addr) {
	s := &e.dhcp.cfg
	c := e.ctl.get()
	const off = wire.EthernetHeaderLen + wire.IPv4MinHeaderLen + wire.UDPHeaderLen
	b := c.b[off:]
	ci := netip.IPv4Unspecified()
	if typ != wire.DHCPNak {
		ci = m.CIAddr()
	}
	n := (&wire.DHCPFields{Op: wire.BOOTPReply, XID: m.XID(), Flags: m.Flags(), CIAddr: ci,
		YIAddr: yiaddr, CHAddr: m.ClientMAC()}).Encode(b)
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptMessageType, []byte{typ})
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptServerID, s.ServerID.AsSlice())
	if typ != wire.DHCPNak {
		if typ != wire.DHCPAck || yiaddr.IsValid() {
			var t [4]byte
			lt := durationSeconds(s.LeaseTime)
			binary.BigEndian.PutUint32(t[:], lt)
			n += wire.PutDHCPOption(b[n:], wire.DHCPOptLeaseTime, t[:])
			binary.BigEndian.PutUint32(t[:], lt/2)
			n += wire.PutDHCPOption(b[n:], wire.DHCPOptRenewalTime, t[:])
			binary.BigEndian.PutUint32(t[:], uint32(uint64(lt)*7/8))
			n += wire.PutDHCPOption(b[n:], wire.DHCPOptRebindingTime, t[:])
		}
		n += wire.PutDHCPOption(b[n:], wire.DHCPOptSubnetMask, e.dhcp.mask[:])
		n += wire.PutDHCPOption(b[n:], wire.DHCPOptBroadcast, e.dhcp.bcast.AsSlice())
		if !s.Router.IsUnspecified() {
			n += wire.PutDHCPOption(b[n:], wire.DHCPOptRouter, s.Router.AsSlice())
		}
		if len(s.DNS) > 0 {
			var d [4 * 16]byte
			k := 0
			for _, a := range s.DNS {
				if a.Is4() && k < len(d) {
					k += copy(d[k:], a.AsSlice())
				}
			}
			if k > 0 {
				n += wire.PutDHCPOption(b[n:], wire.DHCPOptDNS, d[:k])
			}
		}
		if s.DomainName != "" && len(s.DomainName) <= 255 {
			var d [255]byte
			k := copy(d[:], s.DomainName)
			n += wire.PutDHCPOption(b[n:], wire.DHCPOptDomainName, d[:k])
		}
		var t [2]byte
		binary.BigEndian.PutUint16(t[:], uint16(s.MTU))
		n += wire.PutDHCPOption(b[n:], wire.DHCPOptInterfaceMTU, t[:])
	}
	n += wire.PutDHCPOption(b[n:], wire.DHCPOptEnd, nil)
	if n < wire.DHCPMinBOOTPLen {
		clear(b[n:wire.DHCPMinBOOTPLen])
		n = wire.DHCPMinBOOTPLen
	}
	var dstIP netip.Addr
	var dst wire.MAC
	switch {
	case typ != wire.DHCPNak && !m.CIAddr().IsUnspecified():
		dstIP, dst = m.CIAddr(), m.ClientMAC()
	case typ == wire.DHCPNak || m.Flags()&wire.DHCPFlagBroadcast != 0 || !yiaddr.IsValid():
		dstIP, dst = netip.AddrFrom4([4]byte{255, 255, 255, 255}), wire.BroadcastMAC
	default:
		dstIP, dst = yiaddr, m.ClientMAC()
	}
	udp := c.b[off-wire.UDPHeaderLen:]
	(&wire.UDPFields{SrcPort: wire.DHCPServerPort, DstPort: wire.DHCPClientPort, Length: wire.UDPHeaderLen + n}).Encode(udp)
	wire.SetUDPChecksum(udp[:wire.UDPHeaderLen+n], s.ServerID, dstIP)
	(&wire.IPv4Fields{TotalLen: wire.IPv4MinHeaderLen + wire.UDPHeaderLen + n, TTL: 64, Protocol: wire.ProtoUDP,
		Src: s.ServerID, Dst: dstIP}).Encode(c.b[wire.EthernetHeaderLen:])
	(&wire.EthernetFields{Dst: dst, Src: e.mac, EtherType: wire.EtherTypeIPv4}).Encode(c.b[:])
	e.sendCtl(c, off+n)
}
