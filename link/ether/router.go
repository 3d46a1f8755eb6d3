package ether

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/wire"
)

// Router configures the router advertisements of an interface that is the link's IPv6
// router (RFC 4861 §6.2.1's variables; zero fields take the defaults named).
type Router struct {
	// Prefixes are announced on-link and for autonomous address configuration (SLAAC,
	// RFC 4862 §5.5.3 needs a /64 on Ethernet). Empty: the /64s of Config.Addrs.
	Prefixes []netip.Prefix
	// Lifetime is the default-router lifetime (AdvDefaultLifetime, 3×Interval = 1800 s);
	// negative: 0, the router is not a default router.
	Lifetime time.Duration
	// Interval is MaxRtrAdvInterval (600 s): unsolicited advertisements go out at random
	// times between a third of it and it (§6.2.4).
	Interval time.Duration
	// ValidLifetime and PreferredLifetime of the prefixes (AdvValidLifetime 30 days,
	// AdvPreferredLifetime 7 days).
	ValidLifetime, PreferredLifetime time.Duration
	// MTU, if set, is announced in an MTU option (§4.6.4).
	MTU int
	// DNS are announced in an RDNSS option (RFC 8106) with DNSLifetime (default
	// 3×Interval, within RFC 8106 §5.1's range).
	DNS         []netip.Addr
	DNSLifetime time.Duration
	// HopLimit is CurHopLimit (64, Linux's default); Managed and Other the M and O flags
	// (addresses and other configuration from DHCPv6).
	HopLimit       uint8
	Managed, Other bool
}

// Router timing constants (RFC 4861 §10): the first advertisements come faster, and
// solicited ones are paced.
const (
	maxInitialRtrAdvertisements = 3
	maxInitialRtrAdvertInterval = 16 * time.Second
	minDelayBetweenRAs          = 3 * time.Second
)

type raState struct {
	mu    sync.Mutex
	cfg   Router
	timer clock.Timer
	sent  int       // unsolicited advertisements so far
	last  time.Time // last solicited unicast advertisement
	lastM time.Time // last solicited multicast advertisement
	rng   *rand.Rand
}

func (e *Endpoint) initRouter() {
	if e.cfg.Router == nil {
		return
	}
	r := *e.cfg.Router
	if r.Interval <= 0 {
		r.Interval = 600 * time.Second
	}
	if r.Interval < 4*time.Second {
		r.Interval = 4 * time.Second // §6.2.1: MaxRtrAdvInterval >= 4 s
	}
	switch {
	case r.Lifetime == 0:
		r.Lifetime = 3 * r.Interval
	case r.Lifetime < 0:
		r.Lifetime = 0
	}
	if r.ValidLifetime <= 0 {
		r.ValidLifetime = 30 * 24 * time.Hour
	}
	if r.PreferredLifetime <= 0 {
		r.PreferredLifetime = 7 * 24 * time.Hour
	}
	r.PreferredLifetime = min(r.PreferredLifetime, r.ValidLifetime)
	if r.DNSLifetime <= 0 {
		r.DNSLifetime = 3 * r.Interval
	}
	if r.HopLimit == 0 {
		r.HopLimit = 64
	}
	if len(r.Prefixes) == 0 {
		for _, p := range e.cfg.Addrs {
			if p.Addr().Is6() && !p.Addr().Is4In6() && p.Bits() == 64 && !p.Addr().IsLinkLocalUnicast() {
				r.Prefixes = append(r.Prefixes, p.Masked())
			}
		}
	}
	e.ra = &raState{cfg: r, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// routerUp starts the unsolicited advertisements once the link-local address is usable
// (RFC 4861 §6.2.2: advertisements come from it).
func (e *Endpoint) routerUp() {
	if e.ra == nil || e.closed.Load() {
		return
	}
	e.sendRA(allNodes, wire.IPv6MulticastMAC(allNodes.As16()))
	e.scheduleRA()
}

// scheduleRA arms the next unsolicited advertisement (RFC 4861 §6.2.4).
func (e *Endpoint) scheduleRA() {
	r := e.ra
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.closed.Load() {
		return
	}
	lo := r.cfg.Interval / 3
	d := lo + time.Duration(r.rng.Int64N(int64(r.cfg.Interval-lo)+1))
	if r.sent < maxInitialRtrAdvertisements {
		d = min(d, maxInitialRtrAdvertInterval)
	}
	r.sent++
	if r.timer != nil {
		r.timer.Stop()
	}
	r.timer = e.clk.AfterFunc(d, func() {
		if e.closed.Load() {
			return
		}
		e.sendRA(allNodes, wire.IPv6MulticastMAC(allNodes.As16()))
		e.scheduleRA()
	})
}

// rsInput answers a router solicitation (RFC 4861 §6.2.6). A solicitation from an
// address is answered at once to that host; one from the unspecified address with a
// multicast advertisement, at most one per MIN_DELAY_BETWEEN_RAS, so a flood of
// solicitations cannot become a flood of advertisements.
func (e *Endpoint) rsInput(h wire.Ethernet, src netip.Addr, m wire.NDP) {
	if e.ra == nil {
		return
	}
	if tentative, dup := e.addrState(e.ll6); tentative || dup {
		// RFC 4862 §5.4: no advertisement from a tentative address; the first one goes
		// out when DAD ends (routerUp), and none if it failed.
		return
	}
	if !src.IsUnspecified() {
		mac, ok := m.LinkAddr(wire.NDPOptSourceLinkAddr)
		if !ok {
			mac = h.Src()
		} else {
			e.learn(src, mac, learnSolicit)
		}
		if e.raPaced(false) {
			e.sendRA(src, mac)
		}
		return
	}
	if e.raPaced(true) {
		e.sendRA(allNodes, wire.IPv6MulticastMAC(allNodes.As16()))
	}
}

// raPaced reports whether a solicited advertisement may go now: a multicast one at
// most once per MIN_DELAY_BETWEEN_RAS (§6.2.6), a unicast one at most once per
// unicastRAPace, so a flood of solicitations is not answered by a flood.
func (e *Endpoint) raPaced(multicast bool) bool {
	r := e.ra
	now := e.clk.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	last, gap := &r.last, unicastRAPace
	if multicast {
		last, gap = &r.lastM, minDelayBetweenRAs
	}
	if !last.IsZero() && now.Sub(*last) < gap {
		return false
	}
	*last = now
	return true
}

// unicastRAPace paces answers to solicitations from hosts that have an address.
const unicastRAPace = 100 * time.Millisecond

// sendRA writes a router advertisement to dstIP at dst.
func (e *Endpoint) sendRA(dstIP netip.Addr, dst wire.MAC) {
	r := &e.ra.cfg
	var flags uint8
	if r.Managed {
		flags |= wire.NDPFlagManaged
	}
	if r.Other {
		flags |= wire.NDPFlagOther
	}
	c := e.ctl.get()
	b := c.b[wire.EthernetHeaderLen+wire.IPv6HeaderLen:]
	n := (&wire.NDPFields{Type: wire.ICMPv6RouterAdvertisement, Flags: flags, CurHopLimit: r.HopLimit,
		RouterLifetime: uint16(min(durationSeconds(r.Lifetime), 9000))}).Encode(b) // §6.2.1: at most 9000 s
	n += wire.PutNDPLinkAddr(b[n:], wire.NDPOptSourceLinkAddr, e.mac)
	if r.MTU > 0 {
		n += wire.PutNDPMTU(b[n:], uint32(r.MTU))
	}
	for _, p := range r.Prefixes {
		if n+32 > len(b)-8-16*len(r.DNS) {
			break
		}
		n += wire.PutNDPPrefix(b[n:], wire.NDPPrefix{Prefix: p, Flags: wire.NDPPrefixOnLink | wire.NDPPrefixAutonomy,
			Valid: durationSeconds(r.ValidLifetime), Preferred: durationSeconds(r.PreferredLifetime)})
	}
	if len(r.DNS) > 0 && n+8+16*len(r.DNS) <= len(b) {
		n += wire.PutNDPRDNSS(b[n:], durationSeconds(r.DNSLifetime), r.DNS)
	}
	e.ctr.Icmp6OutRouterAdvertisements.Add(1)
	e.sendND(c, dst, e.ll6, dstIP, n)
}
