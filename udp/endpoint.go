package udp

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/berthnet/berth/internal/deadline"
	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/wire"
)

// Family is a socket's address family, as the user API's network names choose it.
type Family uint8

const (
	V4   Family = iota + 1 // "udp4": AF_INET
	V6                     // "udp6": AF_INET6 with IPV6_V6ONLY
	Dual                   // "udp" on an IPv6 or wildcard address: AF_INET6, IPv4 too
)

// Endpoint is one UDP socket.
type Endpoint struct {
	// The receive path's fields come first, together, so delivering a datagram to one of
	// 100,000 sockets touches as few cache lines as possible.
	mu      sync.Mutex
	closed  bool
	softErr syscall.Errno
	waiters int     // readers blocked in RecvFrom: only then is readable signalled
	q       []dgram // ring
	head, n int
	qbytes  int
	drops   uint64
	recvBuf int // SO_RCVBUF set on this socket; 0: the protocol's
	p       *Protocol

	fam    Family
	b      *ports.Binding
	local  netip.AddrPort // as bound (may be a wildcard address)
	remote netip.AddrPort // when connected
	opts   ports.BindOptions

	readable chan struct{} // capacity 1: "the queue may be non-empty"
	done     chan struct{} // closed by Close
	rdl, wdl deadline.Deadline
}

type dgram struct {
	b    *[]byte
	n    int
	from netip.AddrPort
}

// NewEndpoint returns an unbound socket of family fam.
func (p *Protocol) NewEndpoint(fam Family) (*Endpoint, error) {
	if fam < V4 || fam > Dual {
		return nil, syscall.EAFNOSUPPORT
	}
	e := &Endpoint{p: p, fam: fam, readable: make(chan struct{}, 1), done: make(chan struct{})}
	e.rdl.Init(p.net.Clock())
	e.wdl.Init(p.net.Clock())
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	p.eps[e] = struct{}{}
	return e, nil
}

// Family returns the socket's family.
func (e *Endpoint) Family() Family { return e.fam }

func (e *Endpoint) wildcard() netip.Addr {
	if e.fam == V4 {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// familyOK reports whether a (unmapped) is an address this socket may use.
func (e *Endpoint) familyOK(a netip.Addr) error {
	switch {
	case e.fam == V4 && !a.Is4():
		return syscall.EAFNOSUPPORT
	case e.fam == V6 && a.Is4():
		// Linux: an IPv4(-mapped) destination on a V6ONLY socket is unreachable.
		return syscall.ENETUNREACH
	}
	return nil
}

// Bind binds the socket to local (a zero Addr means the family's wildcard; port 0 picks
// a free port). Errors: EINVAL (already bound), EAFNOSUPPORT, EADDRNOTAVAIL (not a local
// address), EADDRINUSE, EACCES.
func (e *Endpoint) Bind(local netip.AddrPort, opts ports.BindOptions) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return net.ErrClosed
	}
	return e.bindLocked(local, opts)
}

func (e *Endpoint) bindLocked(local netip.AddrPort, opts ports.BindOptions) error {
	if e.b != nil {
		return syscall.EINVAL
	}
	a := local.Addr()
	if !a.IsValid() {
		a = e.wildcard()
	}
	if a.Is4In6() {
		if e.fam == V6 {
			return syscall.EADDRNOTAVAIL
		}
		a = a.Unmap()
	}
	if e.fam == V4 && !a.Is4() {
		return syscall.EAFNOSUPPORT
	}
	if e.fam == V6 && a.Is4() {
		return syscall.EAFNOSUPPORT
	}
	if !a.IsUnspecified() && !e.p.net.IsLocal(a) {
		return syscall.EADDRNOTAVAIL
	}
	opts.V6Only = e.fam == V6
	lp := netip.AddrPortFrom(a, local.Port())
	b, err := e.p.pm.Bind(lp, opts, e)
	if err != nil {
		return err
	}
	e.b, e.opts, e.local = b, opts, b.Local()
	return nil
}

// Connect sets the socket's remote end: it then receives only from there, and Send needs
// no address. An unbound socket gets an ephemeral port (Linux autobind) and the route's
// source address.
func (e *Endpoint) Connect(remote netip.AddrPort) error {
	ra := remote.Addr().Unmap()
	if !ra.IsValid() || remote.Port() == 0 {
		return syscall.EINVAL
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return net.ErrClosed
	}
	if err := e.familyOK(ra); err != nil {
		return err
	}
	remote = netip.AddrPortFrom(ra, remote.Port())
	src, _, err := e.p.net.Route(ra)
	if err != nil {
		return err
	}
	if e.b != nil && !e.local.Addr().IsUnspecified() {
		if e.local.Addr().Is4() != ra.Is4() {
			return syscall.EAFNOSUPPORT
		}
		src = e.local.Addr()
	}
	b, err := e.p.pm.Connect(e.b, src, remote, e)
	if err != nil {
		return err
	}
	e.b, e.local, e.remote = b, b.Local(), remote
	e.softErr = 0
	return nil
}

// LocalAddr returns the bound address (zero before the first bind, connect or send).
func (e *Endpoint) LocalAddr() netip.AddrPort {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.local
}

// RemoteAddr returns the connected remote (zero if not connected).
func (e *Endpoint) RemoteAddr() netip.AddrPort {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.remote
}

// Connected reports whether Connect succeeded.
func (e *Endpoint) Connected() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.remote.IsValid()
}

// SendTo sends b as one datagram to to, or to the connected remote when to is the zero
// AddrPort. An unbound socket is bound to an ephemeral port first. It never blocks.
func (e *Endpoint) SendTo(b []byte, to netip.AddrPort) (int, error) {
	if e.wdl.Expired() {
		return 0, os.ErrDeadlineExceeded
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, net.ErrClosed
	}
	if e.softErr != 0 {
		err := e.softErr
		e.softErr = 0
		e.mu.Unlock()
		return 0, err
	}
	if !to.IsValid() {
		if !e.remote.IsValid() {
			e.mu.Unlock()
			return 0, syscall.EDESTADDRREQ
		}
		to = e.remote
	}
	dst := to.Addr().Unmap()
	if err := e.familyOK(dst); err != nil {
		e.mu.Unlock()
		return 0, err
	}
	if to.Port() == 0 {
		e.mu.Unlock()
		return 0, syscall.EINVAL
	}
	if (dst.Is4() && len(b) > MaxPayload4) || len(b) > MaxPayload6 {
		e.mu.Unlock()
		return 0, syscall.EMSGSIZE
	}
	if e.b == nil {
		// Linux autobind: the first send binds the wildcard address and a free port.
		if err := e.bindLocked(netip.AddrPort{}, ports.BindOptions{}); err != nil {
			e.mu.Unlock()
			return 0, err
		}
	}
	src, sport := e.local.Addr(), e.local.Port()
	e.mu.Unlock()
	if src.IsUnspecified() || src.Is4() != dst.Is4() {
		if src.Is4() && !src.IsUnspecified() {
			return 0, syscall.EAFNOSUPPORT
		}
		var err error
		if src, _, err = e.p.net.Route(dst); err != nil {
			return 0, err
		}
	}
	n := wire.NetworkHeadroom + wire.UDPHeaderLen + len(b)
	bp := getBuf(n)
	pkt := (*bp)[:n]
	d := pkt[wire.NetworkHeadroom:]
	f := wire.UDPFields{SrcPort: sport, DstPort: to.Port(), Length: wire.UDPHeaderLen + len(b)}
	f.Encode(d)
	copy(d[wire.UDPHeaderLen:], b)
	wire.SetUDPChecksum(d, src, dst)
	err := e.p.net.Output(src, dst, wire.ProtoUDP, pkt)
	putBuf(bp)
	if err != nil {
		return 0, err
	}
	e.p.c.OutDatagrams.Add(1)
	return len(b), nil
}

// RecvFrom reads one datagram into b (the rest of a longer one is discarded, as recvfrom
// does without MSG_TRUNC) and returns its length and sender. It blocks until a datagram
// arrives, the read deadline passes (os.ErrDeadlineExceeded), a pending ICMP error is
// reported (ECONNREFUSED), or the socket closes (net.ErrClosed).
func (e *Endpoint) RecvFrom(b []byte) (int, netip.AddrPort, error) {
	n, from, _, err := e.RecvMsg(b)
	return n, from, err
}

// RecvMsg is RecvFrom that also reports whether the datagram was longer than b (and cut
// to fit), as recvmsg(2)'s MSG_TRUNC flag does.
func (e *Endpoint) RecvMsg(b []byte) (n int, from netip.AddrPort, truncated bool, err error) {
	for {
		if e.rdl.Expired() {
			return 0, netip.AddrPort{}, false, os.ErrDeadlineExceeded
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return 0, netip.AddrPort{}, false, net.ErrClosed
		}
		if e.softErr != 0 {
			// Linux reports a pending socket error before queued data (__skb_recv_udp).
			err := e.softErr
			e.softErr = 0
			e.mu.Unlock()
			return 0, netip.AddrPort{}, false, err
		}
		if e.n > 0 {
			d := e.q[e.head]
			e.q[e.head] = dgram{}
			e.head = (e.head + 1) % len(e.q)
			e.n--
			e.qbytes -= d.n + overhead
			more := e.n > 0 && e.waiters > 0
			e.mu.Unlock()
			if more {
				e.signal() // pass the wake-up on to another blocked reader
			}
			n := copy(b, (*d.b)[:d.n])
			putBuf(d.b)
			return n, d.from, n < d.n, nil
		}
		e.waiters++
		e.mu.Unlock()
		select {
		case <-e.readable:
		case <-e.rdl.Channel():
		case <-e.done:
		}
		e.mu.Lock()
		e.waiters--
		e.mu.Unlock()
	}
}

// SetReceiveBuffer sets the bytes the socket's receive queue may hold (SO_RCVBUF; the
// per-datagram overhead counts, as the kernel counts an skb's truesize). n <= 0 restores
// the protocol's default. A datagram arriving at an empty queue is always taken.
func (e *Endpoint) SetReceiveBuffer(n int) {
	e.mu.Lock()
	e.recvBuf = max(n, 0)
	e.mu.Unlock()
}

func (e *Endpoint) signal() {
	select {
	case e.readable <- struct{}{}:
	default:
	}
}

// enqueue copies a datagram into the receive queue; false means the queue is full.
func (e *Endpoint) enqueue(data []byte, from netip.AddrPort) bool {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return false
	}
	cost := len(data) + overhead
	limit := e.p.recvBuf
	if e.recvBuf > 0 {
		limit = e.recvBuf
	}
	if e.qbytes > 0 && e.qbytes+cost > limit {
		e.drops++
		e.mu.Unlock()
		return false
	}
	if e.n == len(e.q) {
		nq := make([]dgram, max(16, 2*len(e.q)))
		for i := 0; i < e.n; i++ {
			nq[i] = e.q[(e.head+i)%len(e.q)]
		}
		e.q, e.head = nq, 0
	}
	bp := getBuf(len(data))
	n := copy(*bp, data)
	e.q[(e.head+e.n)%len(e.q)] = dgram{b: bp, n: n, from: from}
	e.n++
	e.qbytes += cost
	wake := e.waiters > 0
	e.mu.Unlock()
	// Counted before the reader is woken, so a reply never overtakes the count.
	e.p.c.InDatagrams.Add(1)
	if wake {
		e.signal()
	}
	return true
}

func (e *Endpoint) setSoftError(remote netip.AddrPort, errno syscall.Errno) {
	e.mu.Lock()
	if e.closed || !e.remote.IsValid() || e.remote != remote {
		e.mu.Unlock()
		return
	}
	e.softErr = errno
	e.mu.Unlock()
	e.signal()
}

// SetReadDeadline and SetWriteDeadline behave as net.Conn's, on the stack's clock.
func (e *Endpoint) SetReadDeadline(t time.Time) error {
	e.rdl.Set(t)
	e.signal() // wake blocked readers to re-evaluate
	return nil
}

// SetWriteDeadline makes sends after t fail with os.ErrDeadlineExceeded (sends never block).
func (e *Endpoint) SetWriteDeadline(t time.Time) error {
	e.wdl.Set(t)
	return nil
}

// Close releases the port and wakes blocked readers; queued datagrams are discarded.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return net.ErrClosed
	}
	e.closed = true
	b := e.b
	for e.n > 0 {
		putBuf(e.q[e.head].b)
		e.q[e.head] = dgram{}
		e.head = (e.head + 1) % len(e.q)
		e.n--
	}
	e.qbytes = 0
	close(e.done)
	e.mu.Unlock()
	if b != nil {
		b.Release()
	}
	e.rdl.Stop()
	e.wdl.Stop()
	e.p.mu.Lock()
	delete(e.p.eps, e)
	e.p.mu.Unlock()
	return nil
}

// Info is a snapshot of a socket for listings (ss).
type Info struct {
	Family        Family         // V4, V6 or Dual
	Local, Remote netip.AddrPort // bound and connected addresses
	RecvQ         int            // bytes charged to the receive queue
	Queued        int            // datagrams queued
	Drops         uint64         // datagrams dropped because the queue was full
}

// Info returns a snapshot of the socket.
func (e *Endpoint) Info() Info {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Info{Family: e.fam, Local: e.local, Remote: e.remote, RecvQ: e.qbytes, Queued: e.n, Drops: e.drops}
}
