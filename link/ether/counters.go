package ether

import (
	"sync"
	"sync/atomic"
)

// counters are the endpoint's event counters. The ARP and ICMPv6 names follow Linux where
// it has one (Icmp6InNeighborSolicits, ... of /proc/net/snmp6; the neighbour table's
// table_fulls and unresolved_discards of /proc/net/stat/arp_cache); the rest are berth's,
// named in the same style.
type counters struct {
	// Ethernet input and output.
	etherInFrames, etherInRunts, etherInTooBig, etherInVLAN, etherInUnknownTypes,
	etherInNotForUs, etherOutFrames, etherOutNoRoutes, etherOutErrors *atomic.Uint64
	// ARP.
	arpInRequests, arpInReplies, arpInProbes, arpInGratuitous, arpInErrors, arpInNotForUs,
	arpInSpoofed, arpOutRequests, arpOutReplies, arpOutGratuitous *atomic.Uint64
	// The neighbour cache, both families.
	neighTableFulls, neighUnresolvedDiscards, neighResFailed *atomic.Uint64
	// ICMPv6 Neighbor Discovery (RFC 4861), which the stack never sees.
	icmp6InMsgs, icmp6InErrors, icmp6OutMsgs, icmp6InNeighborSolicits,
	icmp6InNeighborAdvertisements, icmp6InRouterSolicits, icmp6InRouterAdvertisements,
	icmp6InRedirects, icmp6OutNeighborSolicits, icmp6OutNeighborAdvertisements,
	icmp6OutRouterAdvertisements, icmp6DADFailures, ndInNotForUs, ndInSpoofed *atomic.Uint64
	// DHCPv4 server.
	dhcpInDiscovers, dhcpInRequests, dhcpInReleases, dhcpInDeclines, dhcpInInforms,
	dhcpInErrors, dhcpOutOffers, dhcpOutAcks, dhcpOutNaks, dhcpPoolExhausted *atomic.Uint64

	private struct {
		mu    sync.Mutex
		names []string
		m     map[string]*atomic.Uint64
	}
}

func (c *counters) register(reg func(string) *atomic.Uint64) {
	c.private.m = map[string]*atomic.Uint64{}
	get := reg
	if get == nil {
		get = func(string) *atomic.Uint64 { return new(atomic.Uint64) }
	}
	reg = func(name string) *atomic.Uint64 {
		v := get(name)
		c.private.m[name] = v
		c.private.names = append(c.private.names, name)
		return v
	}
	for _, f := range []struct {
		p    **atomic.Uint64
		name string
	}{
		{&c.etherInFrames, "EtherInFrames"}, {&c.etherInRunts, "EtherInRunts"},
		{&c.etherInTooBig, "EtherInTooBig"}, {&c.etherInVLAN, "EtherInVLAN"},
		{&c.etherInUnknownTypes, "EtherInUnknownTypes"}, {&c.etherInNotForUs, "EtherInNotForUs"},
		{&c.etherOutFrames, "EtherOutFrames"}, {&c.etherOutNoRoutes, "EtherOutNoRoutes"},
		{&c.etherOutErrors, "EtherOutErrors"},
		{&c.arpInRequests, "ArpInRequests"}, {&c.arpInReplies, "ArpInReplies"},
		{&c.arpInProbes, "ArpInProbes"}, {&c.arpInGratuitous, "ArpInGratuitous"},
		{&c.arpInErrors, "ArpInErrors"}, {&c.arpInNotForUs, "ArpInNotForUs"},
		{&c.arpInSpoofed, "ArpInSpoofed"}, {&c.arpOutRequests, "ArpOutRequests"},
		{&c.arpOutReplies, "ArpOutReplies"}, {&c.arpOutGratuitous, "ArpOutGratuitous"},
		{&c.neighTableFulls, "NeighTableFulls"},
		{&c.neighUnresolvedDiscards, "NeighUnresolvedDiscards"},
		{&c.neighResFailed, "NeighResFailed"},
		{&c.icmp6InMsgs, "Icmp6InMsgs"}, {&c.icmp6InErrors, "Icmp6InErrors"},
		{&c.icmp6OutMsgs, "Icmp6OutMsgs"},
		{&c.icmp6InNeighborSolicits, "Icmp6InNeighborSolicits"},
		{&c.icmp6InNeighborAdvertisements, "Icmp6InNeighborAdvertisements"},
		{&c.icmp6InRouterSolicits, "Icmp6InRouterSolicits"},
		{&c.icmp6InRouterAdvertisements, "Icmp6InRouterAdvertisements"},
		{&c.icmp6InRedirects, "Icmp6InRedirects"},
		{&c.icmp6OutNeighborSolicits, "Icmp6OutNeighborSolicits"},
		{&c.icmp6OutNeighborAdvertisements, "Icmp6OutNeighborAdvertisements"},
		{&c.icmp6OutRouterAdvertisements, "Icmp6OutRouterAdvertisements"},
		{&c.icmp6DADFailures, "Ip6DADFailures"},
		{&c.ndInNotForUs, "NdInNotForUs"}, {&c.ndInSpoofed, "NdInSpoofed"},
		{&c.dhcpInDiscovers, "DhcpInDiscovers"}, {&c.dhcpInRequests, "DhcpInRequests"},
		{&c.dhcpInReleases, "DhcpInReleases"}, {&c.dhcpInDeclines, "DhcpInDeclines"},
		{&c.dhcpInInforms, "DhcpInInforms"}, {&c.dhcpInErrors, "DhcpInErrors"},
		{&c.dhcpOutOffers, "DhcpOutOffers"}, {&c.dhcpOutAcks, "DhcpOutAcks"},
		{&c.dhcpOutNaks, "DhcpOutNaks"}, {&c.dhcpPoolExhausted, "DhcpPoolExhausted"},
	} {
		*f.p = reg(f.name)
	}
}

// Counters returns the endpoint's counters by name (the same values Config.Counter's
// registry shows, when there is one).
func (e *Endpoint) Counters() map[string]uint64 {
	p := &e.ctr.private
	out := make(map[string]uint64, len(p.m))
	for n, v := range p.m {
		out[n] = v.Load()
	}
	return out
}
