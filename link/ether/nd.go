package ether

import (
	"net/netip"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/wire"
)

var allNodes = netip.MustParseAddr("ff02::1")

// isND reports whether p, an IPv6 packet, is a Neighbor Discovery message: ICMPv6 right
// after the fixed header (RFC 4861 messages carry no extension headers in practice, and
// Linux handles ND only there too) of type 133-137.
func isND(p []byte) bool {
	return len(p) > wire.IPv6HeaderLen && p[6] == wire.ProtoICMPv6 &&
		p[wire.IPv6HeaderLen] >= wire.ICMPv6RouterSolicitation && p[wire.IPv6HeaderLen] <= wire.ICMPv6Redirect
}

// dadState is one IPv6 address's duplicate address detection (RFC 4862 §5.4).
type dadState struct {
	duplicate bool
	timer     clock.Timer
}

// startDAD makes IPv6 addresses tentative and sends each its first DAD solicitation;
// with Config.NoDAD they are usable at once.
func (e *Endpoint) startDAD(addrs []netip.Addr) {
	if e.cfg.NoDAD {
		return
	}
	var tentative []netip.Addr
	e.mu.Lock()
	for _, a := range addrs {
		if old := e.addr6[a]; old != nil && old.timer != nil {
			old.timer.Stop()
		}
		d := &dadState{}
		e.addr6[a] = d
		d.timer = e.clk.AfterFunc(e.cfg.RetransTime, func() { e.dadDone(a, d) })
		tentative = append(tentative, a)
	}
	e.mu.Unlock()
	for _, a := range tentative {
		// RFC 4862 §5.4.2: from the unspecified address to the target's solicited-node
		// group, with no source link-layer address option.
		e.sendNDSolicit(netip.IPv6Unspecified(), a, wire.MAC{})
	}
}

// dadDone ends a DAD that saw no other user of a: the address becomes usable (RFC 4862
// §5.4: DupAddrDetectTransmits is 1, as in Linux).
func (e *Endpoint) dadDone(a netip.Addr, d *dadState) {
	e.mu.Lock()
	ok := e.addr6[a] == d && !d.duplicate && !e.closed.Load()
	if ok {
		delete(e.addr6, a)
	}
	e.mu.Unlock()
	if ok && a == e.ll6 {
		e.routerUp()
	}
}

// dadFailed records that another node uses a (RFC 4862 §5.4.5): it is no longer
// answered for.
func (e *Endpoint) dadFailed(a netip.Addr) {
	e.mu.Lock()
	d := e.addr6[a]
	if d == nil || d.duplicate {
		e.mu.Unlock()
		return
	}
	d.duplicate = true
	if d.timer != nil {
		d.timer.Stop()
	}
	e.mu.Unlock()
	e.ctr.Ip6DADFailures.Add(1)
	if f := e.cfg.OnDADFailure; f != nil {
		f(a)
	}
}

// addrState reports whether a (one of ours) is tentative or duplicate.
func (e *Endpoint) addrState(a netip.Addr) (tentative, duplicate bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if d := e.addr6[a]; d != nil {
		return !d.duplicate, d.duplicate
	}
	return false, false
}

// Tentative reports whether a is one of the interface's IPv6 addresses still under
// duplicate address detection, and Duplicate whether its detection failed.
func (e *Endpoint) Tentative(a netip.Addr) bool { t, _ := e.addrState(a); return t }

// Duplicate reports whether duplicate address detection found another node using a.
func (e *Endpoint) Duplicate(a netip.Addr) bool { _, d := e.addrState(a); return d }

// stopTimersLocked stops DAD and router advertisement timers (Close).
func (e *Endpoint) stopTimersLocked() {
	for _, t := range e.timers {
		t.Stop()
	}
	e.timers = nil
	for _, d := range e.addr6 {
		if d.timer != nil {
			d.timer.Stop()
		}
	}
	if r := e.ra; r != nil {
		r.mu.Lock()
		if r.timer != nil {
			r.timer.Stop()
		}
		r.mu.Unlock()
	}
}

// ndInput handles a Neighbor Discovery message (RFC 4861 §6-8).
func (e *Endpoint) ndInput(h wire.Ethernet, p []byte) {
	c := &e.ctr
	c.Icmp6InMsgs.Add(1)
	ip, err := wire.ParseIPv6(p)
	if err != nil {
		c.Icmp6InErrors.Add(1)
		return
	}
	src, dst := ip.Src(), ip.Dst()
	m, err := wire.ParseNDP(ip.Payload(), src, dst, ip.HopLimit())
	if err != nil {
		c.Icmp6InErrors.Add(1)
		return
	}
	switch m.Type() {
	case wire.ICMPv6NeighborSolicitation:
		c.Icmp6InNeighborSolicits.Add(1)
		e.nsInput(h, src, m)
	case wire.ICMPv6NeighborAdvertisement:
		c.Icmp6InNeighborAdvertisements.Add(1)
		e.naInput(h, m)
	case wire.ICMPv6RouterSolicitation:
		c.Icmp6InRouterSolicits.Add(1)
		e.rsInput(h, src, m)
	case wire.ICMPv6RouterAdvertisement:
		// berth configures its addresses itself; an RA only tells where a router is,
		// which refreshes an entry (RFC 4861 §6.3.4) but creates none.
		c.Icmp6InRouterAdvertisements.Add(1)
		if mac, ok := m.LinkAddr(wire.NDPOptSourceLinkAddr); ok && !e.owns(src) {
			e.learn(src, mac, learnUpdate)
		}
	case wire.ICMPv6Redirect:
		// A host may ignore redirects (RFC 4861 §8.3 leaves it to the host; Linux's
		// accept_redirects=0 for routers): berth's routes are configured, not learnt.
		c.Icmp6InRedirects.Add(1)
	}
}

func (e *Endpoint) learn(a netip.Addr, mac wire.MAC, how learnKind) {
	e.mu.Lock()
	q := e.learnLocked(a, mac, how)
	e.mu.Unlock()
	e.sendQueued(q)
}

// nsInput answers a neighbour solicitation for one of our addresses (RFC 4861 §7.2.3).
func (e *Endpoint) nsInput(h wire.Ethernet, src netip.Addr, m wire.NDP) {
	target := m.Target()
	if !e.owns(target) {
		e.ctr.NdInNotForUs.Add(1)
		return
	}
	slla, hasSLLA := m.LinkAddr(wire.NDPOptSourceLinkAddr)
	tentative, duplicate := e.addrState(target)
	dad := src.IsUnspecified()
	switch {
	case duplicate:
		return
	case tentative:
		// RFC 4862 §5.4.3: another node's DAD for the address we are checking means it is
		// a duplicate; any other solicitation for a tentative address is ignored.
		if dad {
			e.dadFailed(target)
		}
		return
	case e.owns(src):
		// Claims one of our addresses as its source: a spoof, or a duplicate.
		e.ctr.NdInSpoofed.Add(1)
		return
	}
	if dad {
		// RFC 4861 §7.2.4: a DAD probe is answered to all-nodes, not solicited, so the
		// prober learns the address is taken.
		e.sendNA(allNodes, wire.IPv6MulticastMAC(allNodes.As16()), target, wire.NDPFlagOverride)
		return
	}
	to := h.Src()
	if hasSLLA {
		to = slla
		e.learn(src, slla, learnSolicit)
	}
	e.sendNA(src, to, target, wire.NDPFlagSolicited|wire.NDPFlagOverride)
}

// naInput takes a neighbour advertisement (RFC 4861 §7.2.5).
func (e *Endpoint) naInput(h wire.Ethernet, m wire.NDP) {
	target := m.Target()
	if e.owns(target) {
		if tentative, _ := e.addrState(target); tentative {
			e.dadFailed(target) // RFC 4862 §5.4.4
			return
		}
		e.ctr.NdInSpoofed.Add(1)
		e.defend(target)
		return
	}
	tlla, hasTLLA := m.LinkAddr(wire.NDPOptTargetLinkAddr)
	flags := m.Flags()
	e.mu.Lock()
	n := e.neigh[target]
	if n == nil || (!hasTLLA && n.state == nudIncomplete) {
		// Unsolicited advertisements create no entries; one without an address cannot
		// complete a resolution.
		e.mu.Unlock()
		return
	}
	if !hasTLLA {
		tlla = n.mac
	}
	how := learnUpdate
	switch {
	case flags&wire.NDPFlagSolicited != 0 && (flags&wire.NDPFlagOverride != 0 || tlla == n.mac || n.state == nudIncomplete):
		how = learnConfirmed
	case flags&wire.NDPFlagOverride == 0:
		how = learnNoOverride
	}
	q := e.learnLocked(target, tlla, how)
	e.mu.Unlock()
	e.sendQueued(q)
}

// sendNS solicits target's link address (RFC 4861 §7.2.2): to its solicited-node group
// when dst is zero, else unicast to dst, from the link-local address.
func (e *Endpoint) sendNS(target netip.Addr, dst wire.MAC) {
	e.sendNDSolicit(e.ll6, target, dst)
}

func (e *Endpoint) sendNDSolicit(src, target netip.Addr, dst wire.MAC) {
	dstIP := target
	if dst.IsZero() {
		dstIP = wire.SolicitedNode(target)
		dst = wire.IPv6MulticastMAC(dstIP.As16())
	}
	c := e.ctl.get()
	b := c.b[wire.EthernetHeaderLen+wire.IPv6HeaderLen:]
	n := (&wire.NDPFields{Type: wire.ICMPv6NeighborSolicitation, Target: target}).Encode(b)
	if !src.IsUnspecified() {
		n += wire.PutNDPLinkAddr(b[n:], wire.NDPOptSourceLinkAddr, e.mac)
	}
	e.ctr.Icmp6OutNeighborSolicits.Add(1)
	e.sendND(c, dst, src, dstIP, n)
}

// sendNA advertises target (one of ours) to dstIP at dst with flags (S, O; R is added
// when the interface is a router).
func (e *Endpoint) sendNA(dstIP netip.Addr, dst wire.MAC, target netip.Addr, flags uint8) {
	if e.cfg.Router != nil {
		flags |= wire.NDPFlagRouter
	}
	c := e.ctl.get()
	b := c.b[wire.EthernetHeaderLen+wire.IPv6HeaderLen:]
	n := (&wire.NDPFields{Type: wire.ICMPv6NeighborAdvertisement, Flags: flags, Target: target}).Encode(b)
	n += wire.PutNDPLinkAddr(b[n:], wire.NDPOptTargetLinkAddr, e.mac)
	e.ctr.Icmp6OutNeighborAdvertisements.Add(1)
	// RFC 4861 §7.2.4: the source is the target when it is ours to send from (every
	// target we answer for is).
	e.sendND(c, dst, target, dstIP, n)
}

// sendUnsolicitedNA announces a to all nodes, overriding their caches (RFC 4861 §7.2.6);
// it defends an address another node claimed.
func (e *Endpoint) sendUnsolicitedNA(a netip.Addr) {
	e.sendNA(allNodes, wire.IPv6MulticastMAC(allNodes.As16()), a, wire.NDPFlagOverride)
}

// sendND finishes an ND message of n bytes in c after the IPv6 header: IPv6 header with
// hop limit 255, checksum, Ethernet header; and sends it.
func (e *Endpoint) sendND(c *ctlFrame, dst wire.MAC, src, dstIP netip.Addr, n int) {
	ipb := c.b[wire.EthernetHeaderLen:]
	(&wire.IPv6Fields{PayloadLen: n, NextHeader: wire.ProtoICMPv6, HopLimit: wire.NDPHopLimit, Src: src, Dst: dstIP}).Encode(ipb)
	wire.SetICMPv6Checksum(ipb[wire.IPv6HeaderLen:wire.IPv6HeaderLen+n], src, dstIP)
	(&wire.EthernetFields{Dst: dst, Src: e.mac, EtherType: wire.EtherTypeIPv6}).Encode(c.b[:])
	e.ctr.Icmp6OutMsgs.Add(1)
	e.sendCtl(c, wire.EthernetHeaderLen+wire.IPv6HeaderLen+n)
}

// durationSeconds clamps d to whole seconds in a uint32 field.
func durationSeconds(d time.Duration) uint32 {
	s := d / time.Second
	if s > 0xffffffff {
		return 0xffffffff
	}
	return uint32(s)
}
