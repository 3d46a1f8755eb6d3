package ether

import (
	"reflect"
	"sync/atomic"
)

// counters are the endpoint's event counters; each field's name is the counter's. The
// ARP and ICMPv6 names follow Linux where it has one (Icmp6InNeighborSolicits, ... of
// /proc/net/snmp6; the neighbour table's table_fulls and unresolved_discards of
// /proc/net/stat/arp_cache); the rest are berth's, named in the same style.
type counters struct {
	// Ethernet input and output.
	EtherInFrames, EtherInRunts, EtherInTooBig, EtherInVLAN, EtherInUnknownTypes,
	EtherInNotForUs, EtherInLooped, EtherOutFrames, EtherOutNoRoutes, EtherOutErrors *atomic.Uint64
	// ARP.
	ArpInRequests, ArpInReplies, ArpInProbes, ArpInGratuitous, ArpInErrors, ArpInNotForUs,
	ArpInSpoofed, ArpOutRequests, ArpOutReplies, ArpOutGratuitous *atomic.Uint64
	// The neighbour cache, both families.
	NeighTableFulls, NeighUnresolvedDiscards, NeighResFailed *atomic.Uint64
	// ICMPv6 Neighbor Discovery (RFC 4861), which the stack never sees, and DAD.
	Icmp6InMsgs, Icmp6InErrors, Icmp6OutMsgs, Icmp6InNeighborSolicits,
	Icmp6InNeighborAdvertisements, Icmp6InRouterSolicits, Icmp6InRouterAdvertisements,
	Icmp6InRedirects, Icmp6OutNeighborSolicits, Icmp6OutNeighborAdvertisements,
	Icmp6OutRouterAdvertisements, Ip6DADFailures, NdInNotForUs, NdInSpoofed *atomic.Uint64
	// DHCPv4 server.
	DhcpInDiscovers, DhcpInRequests, DhcpInReleases, DhcpInDeclines, DhcpInInforms,
	DhcpInErrors, DhcpOutOffers, DhcpOutAcks, DhcpOutNaks, DhcpPoolExhausted *atomic.Uint64
	// Stateless DHCPv6 server.
	Dhcp6InInformationRequests, Dhcp6InUnanswered, Dhcp6InErrors, Dhcp6OutReplies *atomic.Uint64

	all map[string]*atomic.Uint64 // every field by name, for Endpoint.Counters
}

// register resolves every counter through reg (nil: private counters), once, so that the
// packet paths only add.
func (c *counters) register(reg func(string) *atomic.Uint64) {
	if reg == nil {
		reg = func(string) *atomic.Uint64 { return new(atomic.Uint64) }
	}
	c.all = map[string]*atomic.Uint64{}
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Type != reflect.TypeFor[*atomic.Uint64]() {
			continue
		}
		p := reg(f.Name)
		v.Field(i).Set(reflect.ValueOf(p))
		c.all[f.Name] = p
	}
}

// Counters returns the endpoint's counters by name (the same values Config.Counter's
// registry shows, when there is one).
func (e *Endpoint) Counters() map[string]uint64 {
	out := make(map[string]uint64, len(e.ctr.all))
	for n, v := range e.ctr.all {
		out[n] = v.Load()
	}
	return out
}
