package berth

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
)

// NameConfig is how a stack turns host names into addresses: static entries first, then
// the DNS servers, which are queried over the stack's own UDP and TCP. A stack without
// servers resolves only its static entries, "localhost" and literal addresses.
type NameConfig struct {
	// Servers are the DNS servers' addresses, tried in turn; port 0 means 53, DNS's port
	// (RFC 1035 §4.2).
	Servers []netip.AddrPort
	// Hosts maps host names to addresses, like /etc/hosts: a name found here is never
	// looked up in DNS. Names match case-insensitively, with or without a trailing dot.
	Hosts map[string][]netip.Addr
}

// WithDNS sets the DNS servers the stack's resolver queries (see NameConfig).
func WithDNS(servers ...netip.AddrPort) Option {
	return func(cfg *Config) { cfg.Names.Servers = append(cfg.Names.Servers, servers...) }
}

// WithHosts adds static host entries, like lines of /etc/hosts (see NameConfig). Later
// entries for a name are appended to earlier ones.
func WithHosts(hosts map[string][]netip.Addr) Option {
	return func(cfg *Config) {
		if cfg.Names.Hosts == nil {
			cfg.Names.Hosts = map[string][]netip.Addr{}
		}
		for name, addrs := range hosts {
			k := hostKey(name)
			cfg.Names.Hosts[k] = append(cfg.Names.Hosts[k], addrs...)
		}
	}
}

// hostKey is the form static entries are stored and looked up in: names compare
// case-insensitively (RFC 4343 §3) and a trailing dot (a fully qualified name) changes
// nothing.
func hostKey(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// names is a stack's resolver state.
type names struct {
	hosts    map[string][]netip.Addr
	servers  []netip.AddrPort
	next     atomic.Uint32 // server rotation
	once     sync.Once
	resolver *net.Resolver
}

func newNames(c NameConfig) *names {
	n := &names{hosts: map[string][]netip.Addr{}}
	for _, a := range c.Servers {
		if a.Port() == 0 {
			a = netip.AddrPortFrom(a.Addr(), 53)
		}
		n.servers = append(n.servers, netip.AddrPortFrom(a.Addr().Unmap(), a.Port()))
	}
	for name, addrs := range c.Hosts {
		k := hostKey(name)
		for _, a := range addrs {
			n.hosts[k] = append(n.hosts[k], a.Unmap())
		}
	}
	return n
}

// Resolver returns a resolver whose DNS queries go to the stack's servers (WithDNS) over
// the stack's own UDP, and TCP for truncated answers: it is Go's own resolver
// (PreferGo) with a Dial on this stack. Queries for the stack's static entries
// (WithHosts) are answered without leaving the process, so the resolver, LookupNetIP
// and DialContext agree. Being Go's resolver it follows the host's resolv.conf options
// (search domains, ndots, timeout, attempts) and reads the host's /etc/hosts before
// asking. Every connection it dials goes to the next server in turn, so its retries
// rotate through the servers. Without servers, only static entries resolve.
func (s *Stack) Resolver() *net.Resolver {
	n := s.names
	n.once.Do(func() {
		n.resolver = &net.Resolver{PreferGo: true, Dial: s.dialDNS}
	})
	return n.resolver
}

// errNoServers is what the resolver's Dial fails with on a stack without DNS servers.
var errNoServers = errors.New("no DNS servers configured (berth.WithDNS)")

// dialDNS is the Dial of Stack.Resolver: the server address Go chose from the host's
// resolv.conf is replaced by the stack's own servers, and datagram queries first meet
// the static entries (hostsConn).
func (s *Stack) dialDNS(ctx context.Context, network, _ string) (net.Conn, error) {
	if network[:3] == "udp" {
		return &hostsConn{s: s, ctx: ctx, network: network}, nil
	}
	return s.dialServer(ctx, network)
}

// dialServer connects to the next DNS server in turn.
func (s *Stack) dialServer(ctx context.Context, network string) (net.Conn, error) {
	srv := s.names.servers
	if len(srv) == 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errNoServers}
	}
	a := srv[int(s.names.next.Add(1)-1)%len(srv)]
	d := Dialer{Stack: s}
	return d.DialContext(ctx, network, a.String())
}

// LookupNetIP returns the addresses of host, as net.Resolver.LookupNetIP does: network
// "ip" for both families, "ip4" or "ip6" for one. Static entries (WithHosts) and
// "localhost" answer without a query; other names go to the stack's DNS servers. A
// literal address is returned as is. Errors are *net.DNSError values (IsNotFound for a
// name that has no addresses).
func (s *Stack) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return s.lookup(ctx, nil, network, host)
}

// lookup is LookupNetIP with the resolver r (nil: the stack's).
func (s *Stack) lookup(ctx context.Context, r *net.Resolver, network, host string) ([]netip.Addr, error) {
	want := func(a netip.Addr) bool {
		switch network {
		case "ip4":
			return a.Is4()
		case "ip6":
			return a.Is6()
		}
		return true
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if !want(a) {
			return nil, &net.AddrError{Err: errNoSuitableAddress, Addr: host}
		}
		return []netip.Addr{a}, nil
	}
	var addrs []netip.Addr
	static, ok := s.names.hosts[hostKey(host)]
	if !ok && hostKey(host) == "localhost" {
		// RFC 6761 §6.3: "localhost" is the loopback address without asking DNS.
		static, ok = []netip.Addr{netip.IPv6Loopback(), netip.AddrFrom4([4]byte{127, 0, 0, 1})}, true
	}
	if ok {
		for _, a := range static {
			if want(a) {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			return nil, &net.AddrError{Err: errNoSuitableAddress, Addr: host}
		}
		return addrs, nil
	}
	if r == nil {
		if len(s.names.servers) == 0 {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		r = s.Resolver()
	}
	got, err := r.LookupNetIP(ctx, network, host)
	if err != nil {
		return nil, err
	}
	for _, a := range got {
		if a = a.Unmap(); want(a) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, &net.AddrError{Err: errNoSuitableAddress, Addr: host}
	}
	return addrs, nil
}

// errNoSuitableAddress is package net's text for a name whose addresses are all of the
// wrong family.
const errNoSuitableAddress = "no suitable address found"

// ipNetwork maps a socket network to the lookup network of its family.
func ipNetwork(network string) string {
	switch network[len(network)-1] {
	case '4':
		return "ip4"
	case '6':
		return "ip6"
	}
	return "ip"
}

// happyOrder sorts addresses for connection attempts as RFC 8305 §4 asks: the families
// interleaved, IPv6 first (First Address Family Count 1), each family in the order the
// lookup returned it.
func happyOrder(addrs []netip.Addr) []netip.Addr {
	var v6, v4 []netip.Addr
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	out := make([]netip.Addr, 0, len(addrs))
	for i := 0; i < len(v6) || i < len(v4); i++ {
		if i < len(v6) {
			out = append(out, v6[i])
		}
		if i < len(v4) {
			out = append(out, v4[i])
		}
	}
	return out
}

// LookupHost returns the addresses of host as strings, as net.Resolver.LookupHost does,
// with LookupNetIP's sources (static entries, then the stack's DNS servers).
func (s *Stack) LookupHost(ctx context.Context, host string) ([]string, error) {
	addrs, err := s.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out, nil
}
