package stack

import (
	"iter"
	"sync"
	"sync/atomic"
)

// Counters is a registry of named event counters, named like the Linux kernel's SNMP MIB
// counters (`nstat`, `netstat -s`): IpInReceives, IcmpOutDestUnreachs, UdpNoPorts, ...
// The stack registers its own; transport protocols register theirs through Counter (the
// udp and tcp packages take a `func(name string) *atomic.Uint64` so they need not import
// this package). Counting is one atomic add: no lock, no allocation.
type Counters struct {
	mu    sync.Mutex
	names []string
	m     map[string]*atomic.Uint64
}

// NewCounters returns an empty registry.
func NewCounters() *Counters { return &Counters{m: make(map[string]*atomic.Uint64)} }

// Counter returns the counter called name, registering it at zero the first time. Callers
// keep the pointer and count on it directly.
func (c *Counters) Counter(name string) *atomic.Uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.m[name]; ok {
		return v
	}
	v := new(atomic.Uint64)
	c.m[name] = v
	c.names = append(c.names, name)
	return v
}

// Get returns the value of counter name (zero if it was never registered).
func (c *Counters) Get(name string) uint64 {
	c.mu.Lock()
	v := c.m[name]
	c.mu.Unlock()
	if v == nil {
		return 0
	}
	return v.Load()
}

// All yields every counter with its current value, in registration order.
func (c *Counters) All() iter.Seq2[string, uint64] {
	return func(yield func(string, uint64) bool) {
		c.mu.Lock()
		names := append([]string(nil), c.names...)
		vals := make([]*atomic.Uint64, len(names))
		for i, n := range names {
			vals[i] = c.m[n]
		}
		c.mu.Unlock()
		for i, n := range names {
			if !yield(n, vals[i].Load()) {
				return
			}
		}
	}
}

// Snapshot returns every counter's value.
func (c *Counters) Snapshot() map[string]uint64 {
	out := make(map[string]uint64)
	for n, v := range c.All() {
		out[n] = v
	}
	return out
}

// ipCounters are the stack's own counters, resolved once so the packet path only adds.
type ipCounters struct {
	// IPv4 (RFC 4293 ipSystemStatsTable, Linux /proc/net/snmp "Ip:").
	InReceives, InHdrErrors, InAddrErrors, InUnknownProtos, InDiscards, InDelivers,
	InTruncatedPkts, InCsumErrors, InMartians, ForwDatagrams, OutRequests, OutNoRoutes,
	OutDiscards, ReasmReqds, ReasmOKs, ReasmFails, ReasmTimeout, ReasmOverlaps,
	FragOKs, FragFails, FragCreates *atomic.Uint64
	// ReasmEvictions (berth's; Linux has no SNMP name for it): incomplete datagrams
	// dropped to make room, under FragHighThresh or the per-source share. Each also
	// counts in ReasmFails.
	ReasmEvictions *atomic.Uint64
}

type ip6Counters struct {
	InReceives, InHdrErrors, InAddrErrors, InUnknownProtos, InDiscards, InDelivers,
	InTruncatedPkts, InTooBigErrors, InNoRoutes, ForwDatagrams, OutRequests, OutNoRoutes,
	OutDiscards, ReasmReqds, ReasmOKs, ReasmFails, ReasmTimeout, ReasmOverlaps,
	FragOKs, FragFails, FragCreates *atomic.Uint64
	// ReasmEvictions (berth's; Linux has no SNMP name for it): incomplete datagrams
	// dropped to make room, under FragHighThresh or the per-source share. Each also
	// counts in ReasmFails.
	ReasmEvictions *atomic.Uint64
}

type icmpCounters struct {
	InMsgs, InErrors, InCsumErrors, InDestUnreachs, InTimeExcds, InParmProbs, InEchos,
	InEchoReps, InPktTooBigs, OutMsgs, OutErrors, OutDestUnreachs, OutTimeExcds,
	OutParmProbs, OutEchos, OutEchoReps, OutPktTooBigs, OutRateLimitGlobal,
	OutRateLimitHost *atomic.Uint64
}

func (s *Stack) registerCounters() {
	c := s.counters
	p := func(prefix string, names ...string) []*atomic.Uint64 {
		out := make([]*atomic.Uint64, len(names))
		for i, n := range names {
			out[i] = c.Counter(prefix + n)
		}
		return out
	}
	v := p("Ip", "InReceives", "InHdrErrors", "InAddrErrors", "InUnknownProtos", "InDiscards",
		"InDelivers", "InTruncatedPkts", "InCsumErrors", "InMartians", "ForwDatagrams",
		"OutRequests", "OutNoRoutes", "OutDiscards", "ReasmReqds", "ReasmOKs", "ReasmFails",
		"ReasmTimeout", "ReasmOverlaps", "FragOKs", "FragFails", "FragCreates")
	s.ip4 = ipCounters{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10],
		v[11], v[12], v[13], v[14], v[15], v[16], v[17], v[18], v[19], v[20], c.Counter("IpReasmEvictions")}
	v = p("Ip6", "InReceives", "InHdrErrors", "InAddrErrors", "InUnknownProtos", "InDiscards",
		"InDelivers", "InTruncatedPkts", "InTooBigErrors", "InNoRoutes", "ForwDatagrams",
		"OutRequests", "OutNoRoutes", "OutDiscards", "ReasmReqds", "ReasmOKs", "ReasmFails",
		"ReasmTimeout", "ReasmOverlaps", "FragOKs", "FragFails", "FragCreates")
	s.ip6 = ip6Counters{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10],
		v[11], v[12], v[13], v[14], v[15], v[16], v[17], v[18], v[19], v[20], c.Counter("Ip6ReasmEvictions")}
	icmpNames := []string{"InMsgs", "InErrors", "InCsumErrors", "InDestUnreachs", "InTimeExcds",
		"InParmProbs", "InEchos", "InEchoReps", "InPktTooBigs", "OutMsgs", "OutErrors",
		"OutDestUnreachs", "OutTimeExcds", "OutParmProbs", "OutEchos", "OutEchoReps",
		"OutPktTooBigs", "OutRateLimitGlobal", "OutRateLimitHost"}
	for i, prefix := range []string{"Icmp", "Icmp6"} {
		v = p(prefix, icmpNames...)
		ic := icmpCounters{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10],
			v[11], v[12], v[13], v[14], v[15], v[16], v[17], v[18]}
		if i == 0 {
			s.icmp4 = ic
		} else {
			s.icmp6 = ic
		}
	}
	s.loDrops = c.Counter("LoopbackDrops")
	s.linkTxErrs = c.Counter("LinkTxErrors")
}
