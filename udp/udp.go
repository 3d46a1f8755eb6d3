// Package udp is the User Datagram Protocol (RFC 768) for berth: endpoints with bounded
// receive queues, binding and connecting through a ports.Manager, and demultiplexing of
// inbound datagrams with Manager.Lookup (O(1) whatever the number of sockets). It does not
// import the stack: it consumes transport.Network, which *stack.Stack implements, and is a
// transport.Handler.
package udp

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// Defaults.
const (
	// DefaultRecvBuf is net.core.rmem_default: bytes a socket's receive queue may hold.
	DefaultRecvBuf = 212992
	// overhead is charged per queued datagram on top of its payload, as the kernel charges
	// an skb's truesize, so zero-length floods are bounded too.
	overhead = 256
	// MaxPayload4 and MaxPayload6 are the largest datagrams: 65535 minus the IP and UDP
	// headers (RFC 768, RFC 791; RFC 8200 without jumbograms).
	MaxPayload4 = 0xffff - wire.IPv4MinHeaderLen - wire.UDPHeaderLen
	MaxPayload6 = 0xffff - wire.UDPHeaderLen
)

// Config configures a Protocol.
type Config struct {
	Ports   ports.Config // the port Manager's settings
	RecvBuf int          // per-socket receive queue in bytes (SO_RCVBUF); 0: DefaultRecvBuf
	// Counter registers a named counter (the stack's Counters.Counter); nil keeps private
	// counters.
	Counter func(name string) *atomic.Uint64
}

// Protocol is UDP on one stack. It is a transport.Handler.
type Protocol struct {
	net     transport.Network
	pm      *ports.Manager
	recvBuf int
	c       counters

	mu     sync.Mutex
	eps    map[*Endpoint]struct{}
	closed bool
}

// counters are named as in Linux's /proc/net/snmp "Udp:" line.
type counters struct {
	InDatagrams, NoPorts, InErrors, OutDatagrams, RcvbufErrors, SndbufErrors,
	InCsumErrors *atomic.Uint64
}

// New returns UDP over n.
func New(n transport.Network, cfg Config) *Protocol {
	if cfg.RecvBuf <= 0 {
		cfg.RecvBuf = DefaultRecvBuf
	}
	reg := cfg.Counter
	if reg == nil {
		reg = func(string) *atomic.Uint64 { return new(atomic.Uint64) }
	}
	p := &Protocol{
		net:     n,
		pm:      ports.NewManager(ports.UDP, cfg.Ports),
		recvBuf: cfg.RecvBuf,
		eps:     map[*Endpoint]struct{}{},
	}
	p.c = counters{reg("UdpInDatagrams"), reg("UdpNoPorts"), reg("UdpInErrors"),
		reg("UdpOutDatagrams"), reg("UdpRcvbufErrors"), reg("UdpSndbufErrors"),
		reg("UdpInCsumErrors")}
	return p
}

// Ports returns the protocol's port Manager.
func (p *Protocol) Ports() *ports.Manager { return p.pm }

// HandlePacket receives one UDP datagram addressed to dst (transport.Handler). It returns
// true when no socket wants it, so that the stack answers ICMP port unreachable.
func (p *Protocol) HandlePacket(src, dst netip.Addr, seg []byte) bool {
	u, err := wire.ParseUDP(seg)
	if err != nil {
		p.c.InErrors.Add(1)
		return false
	}
	// RFC 768: a zero checksum means none was sent, allowed on IPv4 only; RFC 8200 §8.1
	// forbids it on IPv6 (VerifyChecksum rejects it there). Bad checksums are dropped
	// silently (RFC 1122 §4.1.3.4), with no ICMP.
	if !u.VerifyChecksum(src, dst) {
		if u.Checksum() != 0 {
			p.c.InCsumErrors.Add(1)
		}
		p.c.InErrors.Add(1)
		return false
	}
	owner, ok := p.pm.Lookup(netip.AddrPortFrom(dst, u.DstPort()), netip.AddrPortFrom(src, u.SrcPort()))
	if !ok {
		p.c.NoPorts.Add(1)
		return true
	}
	e, ok := owner.(*Endpoint)
	if !ok {
		p.c.NoPorts.Add(1)
		return true
	}
	if !e.enqueue(u.Payload(), netip.AddrPortFrom(src, u.SrcPort())) {
		// Like the kernel: a full receive buffer counts as RcvbufErrors and InErrors.
		p.c.RcvbufErrors.Add(1)
		p.c.InErrors.Add(1)
	}
	return false
}

// HandleICMPError reports an ICMP error about a datagram this host sent (transport.Handler).
// As on Linux without IP_RECVERR, only hard errors (not "fragmentation needed"/"packet too
// big" or "time exceeded") and only on a socket connected to that remote are kept; the
// socket's next read or write fails with the errno (ECONNREFUSED for port unreachable).
func (p *Protocol) HandleICMPError(local, remote netip.Addr, quoted []byte, errno syscall.Errno, mtu int) {
	if len(quoted) < wire.UDPHeaderLen || errno == syscall.EMSGSIZE || errno == syscall.ETIMEDOUT {
		return
	}
	u := wire.UDP(quoted)
	r := netip.AddrPortFrom(remote, u.DstPort())
	owner, ok := p.pm.Lookup(netip.AddrPortFrom(local, u.SrcPort()), r)
	if !ok {
		return
	}
	if e, ok := owner.(*Endpoint); ok {
		e.setSoftError(r, errno)
	}
}

// Endpoints returns every open endpoint.
func (p *Protocol) Endpoints() []*Endpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Endpoint, 0, len(p.eps))
	for e := range p.eps {
		out = append(out, e)
	}
	return out
}

// Close closes every endpoint; later NewEndpoint calls fail.
func (p *Protocol) Close() {
	p.mu.Lock()
	p.closed = true
	eps := make([]*Endpoint, 0, len(p.eps))
	for e := range p.eps {
		eps = append(eps, e)
	}
	p.mu.Unlock()
	for _, e := range eps {
		e.Close()
	}
}

// Buffers for queued datagrams and outgoing packets come from pools, so the steady state
// allocates nothing per datagram.
const smallBuf = 2048

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, 0x10000+wire.NetworkHeadroom); return &b }}
)

func getBuf(n int) *[]byte {
	if n <= smallBuf {
		return smallPool.Get().(*[]byte)
	}
	return largePool.Get().(*[]byte)
}

func putBuf(b *[]byte) {
	if cap(*b) == smallBuf {
		smallPool.Put(b)
	} else {
		largePool.Put(b)
	}
}

var _ transport.Handler = (*Protocol)(nil)
