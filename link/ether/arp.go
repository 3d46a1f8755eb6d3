package ether

import (
	"net/netip"
	"time"

	"github.com/berthnet/berth/wire"
)

// defendInterval is RFC 5227 §2.4(c)'s DEFEND_INTERVAL: an address conflict is answered
// with at most one announcement per interval, so two hosts do not defend forever.
const defendInterval = 10 * time.Second

// arpInput handles an ARP packet (RFC 826 "Packet Reception", RFC 5227).
func (e *Endpoint) arpInput(h wire.Ethernet) {
	c := &e.ctr
	a, err := wire.ParseARP(h.Payload())
	if err != nil {
		c.ArpInErrors.Add(1)
		return
	}
	op, sha, sip, tip := a.Op(), a.SenderMAC(), a.SenderIP(), a.TargetIP()
	if op == wire.ARPRequest {
		c.ArpInRequests.Add(1)
	} else {
		c.ArpInReplies.Add(1)
	}
	if sha.IsMulticast() || sha.IsZero() || sip.IsMulticast() || sip.IsLoopback() ||
		sip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || tip.IsMulticast() {
		// No station has such an address: a link address that is a group (or none), a
		// protocol address no unicast host uses (RFC 1122 §3.2.1.3).
		c.ArpInErrors.Add(1)
		return
	}
	if sha == e.mac {
		return // ours, relayed by a proxy: nothing to learn
	}
	if e.owns(sip) {
		// Someone else claims one of our addresses — the interface's, or the gateway's
		// berth plays: a conflict or a spoof. The cache is not touched (that is the
		// point of a spoof), and the address is defended with one announcement per
		// DEFEND_INTERVAL (RFC 5227 §2.4(b)), which puts our MAC back in the other
		// hosts' caches.
		c.ArpInSpoofed.Add(1)
		e.defend(sip)
		return
	}
	if !sip.IsValid() || sip.IsUnspecified() {
		// RFC 5227 §2.1.1 probe: the sender checks whether tip is in use. Never learnt
		// from (the sender does not own an address yet); the owner answers, as Linux does,
		// with a reply to the prober's MAC.
		c.ArpInProbes.Add(1)
		if op == wire.ARPRequest && e.owns(tip) {
			e.sendARP(wire.ARPReply, sha, tip, sha, sip)
		}
		return
	}
	var q []queued
	switch {
	case sip == tip:
		// Gratuitous ARP (an RFC 5227 announcement, or a host telling of a new MAC): it
		// refreshes an entry we have, never creates one (Linux's arp_accept=0), so
		// announcements cannot fill the cache.
		c.ArpInGratuitous.Add(1)
		e.mu.Lock()
		q = e.learnLocked(sip, sha, learnUpdate)
		e.mu.Unlock()
	case e.owns(tip):
		how := learnConfirmed
		if op == wire.ARPRequest {
			how = learnSolicit
		}
		e.mu.Lock()
		q = e.learnLocked(sip, sha, how)
		e.mu.Unlock()
		if op == wire.ARPRequest {
			e.sendARP(wire.ARPReply, sha, tip, sha, sip)
		}
	default:
		// For another host. RFC 826's merge step still refreshes an entry we have.
		c.ArpInNotForUs.Add(1)
		e.mu.Lock()
		q = e.learnLocked(sip, sha, learnUpdate)
		e.mu.Unlock()
	}
	e.sendQueued(q)
}

// defend announces a (one of ours) unless it did so less than defendInterval ago.
func (e *Endpoint) defend(a netip.Addr) {
	now := e.clk.Now()
	e.mu.Lock()
	last, ok := e.defended[a]
	if ok && now.Sub(last) < defendInterval {
		e.mu.Unlock()
		return
	}
	if e.defended == nil {
		e.defended = map[netip.Addr]time.Time{}
	}
	e.defended[a] = now
	e.mu.Unlock()
	if a.Is4() {
		e.sendARP(wire.ARPRequest, wire.BroadcastMAC, a, wire.MAC{}, a)
	} else {
		e.sendUnsolicitedNA(a)
	}
}

// sendARP writes one ARP packet from our MAC, to dst on Ethernet. A request with sip ==
// tip is counted as gratuitous.
func (e *Endpoint) sendARP(op uint16, dst wire.MAC, sip netip.Addr, tha wire.MAC, tip netip.Addr) {
	c := e.ctl.get()
	(&wire.EthernetFields{Dst: dst, Src: e.mac, EtherType: wire.EtherTypeARP}).Encode(c.b[:])
	(&wire.ARPFields{Op: op, SenderMAC: e.mac, SenderIP: sip, TargetMAC: tha, TargetIP: tip}).Encode(c.b[wire.EthernetHeaderLen:])
	// Pad to the 60-byte minimum frame (IEEE 802.3 §3.2.7, without FCS), as a NIC would;
	// a TAP device or a socket does not pad for us.
	n := wire.EthernetHeaderLen + wire.ARPLen
	clear(c.b[n:60])
	switch {
	case op == wire.ARPRequest && sip == tip:
		e.ctr.ArpOutGratuitous.Add(1)
	case op == wire.ARPRequest:
		e.ctr.ArpOutRequests.Add(1)
	default:
		e.ctr.ArpOutReplies.Add(1)
	}
	e.sendCtl(c, 60)
}

// solicit asks for addr's link address: multicast (broadcast ARP, NS to the solicited-node
// group) when dst is zero, else unicast to dst (a PROBE).
func (e *Endpoint) solicit(addr netip.Addr, dst wire.MAC) {
	if addr.Is4() {
		if dst.IsZero() {
			dst = wire.BroadcastMAC
		}
		e.sendARP(wire.ARPRequest, dst, e.source4(addr), wire.MAC{}, addr)
		return
	}
	e.sendNS(addr, dst)
}

// source4 picks the sender address of an ARP request for target: our address in target's
// subnet, else our first IPv4 address (RFC 826 leaves the choice to the sender).
func (e *Endpoint) source4(target netip.Addr) netip.Addr {
	var first netip.Addr
	for _, p := range e.addrs.Load().addrs {
		a := p.Addr().Unmap()
		if !a.Is4() {
			continue
		}
		if !first.IsValid() {
			first = a
		}
		if netip.PrefixFrom(a, p.Bits()).Contains(target) {
			return a
		}
	}
	return first
}

// announce sends a gratuitous ARP for every IPv4 address the interface answers for (RFC
// 5227 §2.3), so hosts that cached another MAC for them learn ours; IPv6 addresses start
// duplicate address detection (RFC 4862 §5.4).
func (e *Endpoint) announce(addrs []netip.Addr) {
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	e.announce4(v4)
	if len(v4) > 0 {
		// RFC 5227 §2.3: ANNOUNCE_NUM (2) announcements, ANNOUNCE_INTERVAL (2 s) apart,
		// in case the first one was lost.
		e.mu.Lock()
		if !e.closed.Load() {
			e.timers = append(e.timers, e.clk.AfterFunc(announceInterval, func() {
				if !e.closed.Load() {
					e.announce4(v4)
				}
			}))
		}
		e.mu.Unlock()
	}
	e.startDAD(v6)
}

// announceInterval is RFC 5227 §1.1's ANNOUNCE_INTERVAL.
const announceInterval = 2 * time.Second

func (e *Endpoint) announce4(addrs []netip.Addr) {
	for _, a := range addrs {
		if e.owns(a) {
			e.sendARP(wire.ARPRequest, wire.BroadcastMAC, a, wire.MAC{}, a)
		}
	}
}
