// Package vnet builds virtual networks of berth stacks in one process: stacks joined by
// in-memory pipes (link/pipe), optionally impaired (link/impair) or wrapped otherwise
// (WithLinkWrap: link/pcap to record a host's side), on a real or virtual clock.
//
// Pair is the one-call case: two stacks, 10.0.0.1/24 + fd00::1/64 and 10.0.0.2/24 +
// fd00::2/64, on one MTU-1500 pipe. Network builds larger topologies: hosts, routers
// (forwarding on), links with their MTU, addresses and impairments, and static routes.
//
// Time: by default everything runs on the real clock. To make timeouts (deadlines,
// fragment reassembly, impairment delays) pass without waiting, run the test inside
// testing/synctest.Test with the real clock — the recommended way, since every goroutine
// of the network (pipes, loopback) then lives in the bubble and time advances whenever they
// are all blocked. WithClock(clock.NewManual(...)) also works for stack timers and
// impairment delays, but the test must then Advance the clock itself.
package vnet

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/impair"
	"github.com/berthnet/berth/link/pipe"
)

// Default addresses of Pair.
var (
	PairA4 = netip.MustParsePrefix("10.0.0.1/24")
	PairB4 = netip.MustParsePrefix("10.0.0.2/24")
	PairA6 = netip.MustParsePrefix("fd00::1/64")
	PairB6 = netip.MustParsePrefix("fd00::2/64")
)

// DefaultMTU is the MTU of links made without one (Ethernet's).
const DefaultMTU = 1500

type config struct {
	clock   clock.Clock
	seed    uint64
	mtu     int
	impair  *impair.Config
	wrap    func(host, iface string, ep link.Endpoint) link.Endpoint
	options []berth.Option
}

// Option configures Pair or New.
type Option func(*config)

// WithClock gives every stack and impairment the clock c.
func WithClock(c clock.Clock) Option { return func(cfg *config) { cfg.clock = c } }

// WithSeed makes the stacks' random choices repeatable (each stack gets seed+i).
func WithSeed(seed uint64) Option { return func(cfg *config) { cfg.seed = seed } }

// WithMTU sets the MTU of Pair's link (and New's default link MTU).
func WithMTU(mtu int) Option { return func(cfg *config) { cfg.mtu = mtu } }

// WithImpairment impairs Pair's link in both directions (each direction with its own
// random stream).
func WithImpairment(c impair.Config) Option { return func(cfg *config) { cfg.impair = &c } }

// WithLinkWrap has wrap called for each end of every link of the network (Pair's, Link's,
// LinkNamed's) with the host's name, the new interface's name and the end, after its
// impairment if any. The stack is attached to what wrap returns: link/pcap.Tap(ep, w) to
// record what the host sends and receives, or a test's own filter. What wrap returns
// must close ep when it is closed, as the link wrappers do: closing a stack closes it.
func WithLinkWrap(wrap func(host, iface string, ep link.Endpoint) link.Endpoint) Option {
	return func(cfg *config) { cfg.wrap = wrap }
}

// WithStackOptions passes options to every berth.New call.
func WithStackOptions(opts ...berth.Option) Option {
	return func(cfg *config) { cfg.options = append(cfg.options, opts...) }
}

// Pair returns two stacks joined by a pipe: a has 10.0.0.1/24 and fd00::1/64, b has
// 10.0.0.2/24 and fd00::2/64, both on interface "eth0". Close both stacks when done
// (closing either closes the pipe).
func Pair(opts ...Option) (a, b *berth.Stack, err error) {
	n := New(opts...)
	a, b = n.Host("a"), n.Host("b")
	err = n.Link("a", "b", LinkConfig{
		A: []netip.Prefix{PairA4, PairA6},
		B: []netip.Prefix{PairB4, PairB6},
	})
	if err != nil {
		n.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// Network is a set of named stacks and the links between them.
type Network struct {
	cfg   config
	mu    sync.Mutex
	hosts map[string]*berth.Stack
	order []*berth.Stack
	nifs  map[string]int // interfaces made per host, for names eth0, eth1, ...
}

// New returns an empty network.
func New(opts ...Option) *Network {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.mtu == 0 {
		cfg.mtu = DefaultMTU
	}
	return &Network{cfg: cfg, hosts: map[string]*berth.Stack{}, nifs: map[string]int{}}
}

// Host returns the stack called name, creating it (with opts after the network's own).
func (n *Network) Host(name string, opts ...berth.Option) *berth.Stack {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.hosts[name]; ok {
		return s
	}
	all := append([]berth.Option(nil), n.cfg.options...)
	if n.cfg.clock != nil {
		all = append(all, berth.WithClock(n.cfg.clock))
	}
	if n.cfg.seed != 0 {
		all = append(all, berth.WithSeed(n.cfg.seed+uint64(len(n.order))))
	}
	s := berth.New(append(all, opts...)...)
	n.hosts[name] = s
	n.order = append(n.order, s)
	return s
}

// Router returns the stack called name with IP forwarding on, creating it.
func (n *Network) Router(name string) *berth.Stack {
	return n.Host(name, berth.WithForwarding(true))
}

// LinkConfig describes a link between two hosts.
type LinkConfig struct {
	MTU int // 0: the network's default
	// A and B are the addresses (with prefix lengths) of the two ends.
	A, B []netip.Prefix
	// Impair, if set, impairs both directions (outbound on each end, seeds Seed and Seed+1).
	Impair *impair.Config
}

// Link joins hosts a and b (created if needed) with a pipe. Each end is a new interface
// named eth0, eth1, ... on its host; the interface names are returned.
func (n *Network) Link(a, b string, cfg LinkConfig) error {
	_, _, err := n.LinkNamed(a, b, cfg)
	return err
}

// LinkNamed is Link returning the interface names on a and b.
func (n *Network) LinkNamed(a, b string, cfg LinkConfig) (ifA, ifB string, err error) {
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = n.cfg.mtu
	}
	imp := cfg.Impair
	if imp == nil {
		imp = n.cfg.impair
	}
	sa, sb := n.Host(a), n.Host(b)
	pa, pb := pipe.New(mtu)
	var ea, eb link.Endpoint = pa, pb
	if imp != nil {
		ca, cb := *imp, *imp
		cb.Seed++
		if ca.Clock == nil {
			ca.Clock, cb.Clock = n.cfg.clock, n.cfg.clock
		}
		ea, eb = impair.New(pa, ca), impair.New(pb, cb)
	}
	n.mu.Lock()
	ifA = fmt.Sprintf("eth%d", n.nifs[a])
	n.nifs[a]++
	ifB = fmt.Sprintf("eth%d", n.nifs[b])
	n.nifs[b]++
	n.mu.Unlock()
	if n.cfg.wrap != nil {
		ea, eb = n.cfg.wrap(a, ifA, ea), n.cfg.wrap(b, ifB, eb)
	}
	if err := sa.AddInterface(ifA, ea); err != nil {
		ea.Close()
		eb.Close()
		return "", "", err
	}
	if err := sb.AddInterface(ifB, eb); err != nil {
		eb.Close()
		return "", "", err
	}
	for _, p := range cfg.A {
		if err := sa.AddAddress(ifA, p); err != nil {
			return "", "", fmt.Errorf("vnet: %s %v: %w", a, p, err)
		}
	}
	for _, p := range cfg.B {
		if err := sb.AddAddress(ifB, p); err != nil {
			return "", "", fmt.Errorf("vnet: %s %v: %w", b, p, err)
		}
	}
	return ifA, ifB, nil
}

// Route adds a route on host: prefix via gateway (the interface is found from the
// gateway's connected network). "0.0.0.0/0" and "::/0" are default routes.
func (n *Network) Route(host string, prefix, gateway string) error {
	n.mu.Lock()
	s, ok := n.hosts[host]
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("vnet: no host %q", host)
	}
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return err
	}
	gw, err := netip.ParseAddr(gateway)
	if err != nil {
		return err
	}
	return s.AddRoute(p, gw, "")
}

// Close closes every stack (and so every link).
func (n *Network) Close() error {
	n.mu.Lock()
	hosts := n.order
	n.order, n.hosts = nil, map[string]*berth.Stack{}
	n.mu.Unlock()
	var errs []error
	for _, s := range hosts {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
