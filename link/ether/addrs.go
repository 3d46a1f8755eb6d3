package ether

import (
	"net/netip"
	"slices"
)

// addrTable is an immutable snapshot of the addresses an interface answers for.
type addrTable struct {
	own   map[netip.Addr]bool // Addrs, Extra and the link-local address
	nets  []netip.Prefix      // the on-link subnets of addrs
	addrs []netip.Prefix      // the interface's own addresses with their prefixes
}

func (t *addrTable) add(p netip.Prefix) {
	a := p.Addr().Unmap()
	p = netip.PrefixFrom(a, p.Bits())
	t.own[a] = true
	t.addrs = append(t.addrs, p)
	if n := p.Masked(); !slices.Contains(t.nets, n) {
		t.nets = append(t.nets, n)
	}
}

func (t *addrTable) clone() *addrTable {
	c := &addrTable{own: make(map[netip.Addr]bool, len(t.own)+1), nets: slices.Clone(t.nets), addrs: slices.Clone(t.addrs)}
	for a := range t.own {
		c.own[a] = true
	}
	return c
}

// list returns the addresses answered for.
func (t *addrTable) list() []netip.Addr {
	out := make([]netip.Addr, 0, len(t.own))
	for a := range t.own {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// owns reports whether the interface answers ARP and ND for a.
func (e *Endpoint) owns(a netip.Addr) bool { return e.addrs.Load().own[a] }

// AddAddress adds an address, with its prefix, that the interface answers for (and whose
// subnet is on-link), as Config.Addrs does; an IPv4 address is announced (RFC 5227
// §2.3), an IPv6 one goes through DAD first unless Config.NoDAD. Adding one it has
// already does nothing.
func (e *Endpoint) AddAddress(p netip.Prefix) {
	e.addrsMu.Lock()
	old := e.addrs.Load()
	a := p.Addr().Unmap()
	if slices.Contains(old.addrs, netip.PrefixFrom(a, p.Bits())) {
		e.addrsMu.Unlock()
		return
	}
	t := old.clone()
	t.add(p)
	e.addrs.Store(t)
	e.addrsMu.Unlock()
	if !old.own[a] {
		e.announce([]netip.Addr{a})
	}
}

// AddExtra adds an address the interface answers for without a subnet, as Config.Extra.
func (e *Endpoint) AddExtra(a netip.Addr) {
	a = a.Unmap()
	e.addrsMu.Lock()
	old := e.addrs.Load()
	if old.own[a] {
		e.addrsMu.Unlock()
		return
	}
	t := old.clone()
	t.own[a] = true
	e.addrs.Store(t)
	e.addrsMu.Unlock()
	e.announce([]netip.Addr{a})
}

// RemoveAddress stops answering for a (an address of Addrs or Extra, with its subnet if
// no other address is in it). The link-local address stays.
func (e *Endpoint) RemoveAddress(a netip.Addr) {
	a = a.Unmap()
	if a == e.ll6 {
		return
	}
	e.addrsMu.Lock()
	defer e.addrsMu.Unlock()
	old := e.addrs.Load()
	if !old.own[a] {
		return
	}
	t := &addrTable{own: map[netip.Addr]bool{}}
	for o := range old.own {
		if o != a {
			t.own[o] = true
		}
	}
	for _, p := range old.addrs {
		if p.Addr() != a {
			t.add(p)
		}
	}
	e.addrs.Store(t)
	e.mu.Lock()
	if d := e.addr6[a]; d != nil {
		if d.timer != nil {
			d.timer.Stop()
		}
		delete(e.addr6, a)
	}
	e.mu.Unlock()
}

// Addresses returns the addresses the interface answers ARP and ND for (the link-local
// one included), sorted.
func (e *Endpoint) Addresses() []netip.Addr { return e.addrs.Load().list() }
