package stack

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/berthnet/berth/internal/deadline"
	"github.com/berthnet/berth/wire"
)

// rawQueue is how many messages a raw ICMP endpoint holds before dropping.
const rawQueue = 256

// ICMPEndpoint is a raw ICMP socket, what Go's "ip4:icmp" and "ip6:ipv6-icmp" networks open:
// it receives a copy of every valid ICMP (or ICMPv6) message addressed to the stack — the
// stack still answers echo requests itself, as Linux does — and sends ICMP messages as
// given. As with Linux raw sockets, an ICMPv4 message is sent with the checksum the caller
// wrote, while ICMPv6 checksums are computed by the stack (RFC 3542 §3.1).
type ICMPEndpoint struct {
	s     *Stack
	v6    bool
	local netip.Addr // receive only messages to this address, unless unspecified

	mu       sync.Mutex
	q        []rawMsg
	closed   bool
	drops    uint64
	readable chan struct{}
	done     chan struct{}
	rdl      deadline.Deadline
}

type rawMsg struct {
	from netip.Addr
	b    []byte
}

// NewICMPEndpoint opens a raw ICMP (v6 false) or ICMPv6 endpoint receiving messages sent to
// local (any of the stack's addresses when local is the zero Addr or unspecified).
func (s *Stack) NewICMPEndpoint(v6 bool, local netip.Addr) (*ICMPEndpoint, error) {
	local = local.Unmap()
	if local.IsValid() && !local.IsUnspecified() {
		if local.Is4() == v6 {
			return nil, syscall.EAFNOSUPPORT
		}
		if !s.IsLocal(local) {
			return nil, syscall.EADDRNOTAVAIL
		}
	}
	e := &ICMPEndpoint{s: s, v6: v6, local: local, readable: make(chan struct{}, 1), done: make(chan struct{})}
	e.rdl.Init(s.clk)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, net.ErrClosed
	}
	var cur []*ICMPEndpoint
	if p := s.raw.Load(); p != nil {
		cur = *p
	}
	next := append(slices.Clone(cur), e)
	s.raw.Store(&next)
	return e, nil
}

// rawDeliver copies msg to every raw endpoint of its family. It allocates (a copy per
// endpoint), which only matters while raw endpoints are open.
func (s *Stack) rawDeliver(v6 bool, src, dst netip.Addr, msg []byte) {
	p := s.raw.Load()
	if p == nil {
		return
	}
	for _, e := range *p {
		if e.v6 == v6 && (!e.local.IsValid() || e.local.IsUnspecified() || e.local == dst) {
			e.enqueue(src, msg)
		}
	}
}

func (e *ICMPEndpoint) enqueue(from netip.Addr, msg []byte) {
	e.mu.Lock()
	if e.closed || len(e.q) >= rawQueue {
		e.drops++
		e.mu.Unlock()
		return
	}
	e.q = append(e.q, rawMsg{from, slices.Clone(msg)})
	e.mu.Unlock()
	select {
	case e.readable <- struct{}{}:
	default:
	}
}

// ReadFrom reads one ICMP message (without the IP header, as Go's icmp networks return it).
func (e *ICMPEndpoint) ReadFrom(b []byte) (int, netip.Addr, error) {
	for {
		if e.rdl.Expired() {
			return 0, netip.Addr{}, os.ErrDeadlineExceeded
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return 0, netip.Addr{}, net.ErrClosed
		}
		if len(e.q) > 0 {
			m := e.q[0]
			e.q[0] = rawMsg{}
			e.q = e.q[1:]
			more := len(e.q) > 0
			e.mu.Unlock()
			if more {
				select {
				case e.readable <- struct{}{}:
				default:
				}
			}
			return copy(b, m.b), m.from, nil
		}
		e.mu.Unlock()
		select {
		case <-e.readable:
		case <-e.rdl.Channel():
		case <-e.done:
		}
	}
}

// WriteTo sends one ICMP message to dst.
func (e *ICMPEndpoint) WriteTo(msg []byte, dst netip.Addr) (int, error) {
	dst = dst.Unmap()
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	if dst.Is4() == e.v6 || !dst.IsValid() {
		return 0, syscall.EAFNOSUPPORT
	}
	if len(msg) < 4 {
		return 0, syscall.EINVAL
	}
	if len(msg) > 0xffff-wire.IPv6HeaderLen {
		return 0, syscall.EMSGSIZE
	}
	ifc, src, err := e.s.resolveFrom(e.local, dst)
	if err != nil {
		return 0, err
	}
	if e.local.IsValid() && !e.local.IsUnspecified() {
		src = e.local
	}
	bp := getBuf(wire.NetworkHeadroom + len(msg))
	defer putBuf(bp)
	pkt := (*bp)[:wire.NetworkHeadroom+len(msg)]
	copy(pkt[wire.NetworkHeadroom:], msg)
	proto := wire.ProtoICMPv4
	if e.v6 {
		proto = wire.ProtoICMPv6
		wire.SetICMPv6Checksum(pkt[wire.NetworkHeadroom:], src, dst)
	}
	if err := e.s.outputIP(ifc, src, dst, proto, pkt, false, e.s.opts.DefaultTTL); err != nil {
		return 0, err
	}
	return len(msg), nil
}

// SetReadDeadline makes reads after t fail with os.ErrDeadlineExceeded.
func (e *ICMPEndpoint) SetReadDeadline(t time.Time) {
	e.rdl.Set(t)
	select {
	case e.readable <- struct{}{}:
	default:
	}
}

// Close stops delivery and wakes blocked readers.
func (e *ICMPEndpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return net.ErrClosed
	}
	e.closed = true
	e.q = nil
	close(e.done)
	e.mu.Unlock()
	e.rdl.Stop()
	s := e.s
	s.mu.Lock()
	if p := s.raw.Load(); p != nil {
		next := slices.DeleteFunc(slices.Clone(*p), func(x *ICMPEndpoint) bool { return x == e })
		s.raw.Store(&next)
	}
	s.mu.Unlock()
	return nil
}
