package tcp

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berthnet/berth/ports"
)

// Listener is a passive-open endpoint with a backlog: a SYN queue of connections in
// SYN-RECEIVED and an accept queue of established ones (as Linux's listen(2)).
type Listener struct {
	p       *Protocol
	mu      sync.Mutex
	cond    sync.Cond
	local   netip.AddrPort
	bind    *ports.Binding
	backlog int
	synQ    map[*Conn]struct{}
	acceptQ []*Conn
	closed  bool
	dl      deadline
	// lastOverflow is the cookie counter (plus one; zero: never) when this listener last
	// sent a SYN cookie: cookie ACKs are checked only soon after (SynCookiesOnOverflow).
	lastOverflow atomic.Uint32
	foQlen       int // TCP_FASTOPEN's queue length; 0: Fast Open off (fastopen.go)
	maxSeg       int // TCP_MAXSEG for the connections accepted (SetMaxSeg)
}

// defaultMaxSynBacklog is tcp_max_syn_backlog's default here: half-open connections per
// stack, across all listeners.
const defaultMaxSynBacklog = 4096

// synQueue counts a stack's half-open (SYN-RECEIVED) connections against MaxSynBacklog.
type synQueue struct {
	n, peak atomic.Int64
}

// reserve takes a slot if fewer than max are in use.
func (q *synQueue) reserve(max int) bool {
	for {
		n := q.n.Load()
		if n >= int64(max) {
			return false
		}
		if q.n.CompareAndSwap(n, n+1) {
			for {
				pk := q.peak.Load()
				if n+1 <= pk || q.peak.CompareAndSwap(pk, n+1) {
					return true
				}
			}
		}
	}
}

func (q *synQueue) release(n int) { q.n.Add(-int64(n)) }

// ListenStats are the listen-path counters, named as Linux's TcpExt MIB (nstat).
type ListenStats struct {
	// SyncookiesSent, SyncookiesRecv, SyncookiesFailed: cookie SYN-ACKs sent, valid
	// cookie ACKs, and ACKs to a listener whose cookie did not check out.
	SyncookiesSent, SyncookiesRecv, SyncookiesFailed *atomic.Uint64
	// ListenOverflows: SYNs or cookie ACKs dropped because the accept queue was full
	// (these also count in ListenDrops).
	ListenOverflows *atomic.Uint64
	// TCPReqQFullDrop and TCPReqQFullDoCookies: SYNs that found the SYN queue full and
	// were dropped (cookies off) or answered with a cookie.
	TCPReqQFullDrop, TCPReqQFullDoCookies *atomic.Uint64
}

// SynQueueLen reports the stack's half-open connections now and at most so far.
func (p *Protocol) SynQueueLen() (n, peak int) {
	return int(p.synq.n.Load()), int(p.synq.peak.Load())
}

// Listen binds local and listens with the given backlog (<= 0 means 4096, Linux's
// somaxconn). The backlog bounds both the SYN queue (half-open connections, which also
// count against the stack's Config.MaxSynBacklog) and the accept queue; a SYN that finds
// the SYN queue full is answered with a SYN cookie unless Config.SynCookies is
// SynCookiesNever. Errors: EADDRINUSE, EADDRNOTAVAIL (not a local address), EACCES.
func (p *Protocol) Listen(local netip.AddrPort, backlog int, opts ports.BindOptions) (*Listener, error) {
	if p.isClosed() {
		return nil, syscall.ENETDOWN
	}
	a := local.Addr()
	if a.IsValid() && !a.IsUnspecified() && !p.net.IsLocal(a.Unmap()) {
		return nil, syscall.EADDRNOTAVAIL
	}
	if backlog <= 0 {
		backlog = 4096
	}
	l := &Listener{p: p, backlog: backlog, synQ: make(map[*Conn]struct{})}
	l.cond.L = &l.mu
	opts.Listening = true
	b, err := p.mgr.Bind(local, opts, l)
	if err != nil {
		return nil, err
	}
	l.bind, l.local = b, b.Local()
	p.track(l)
	return l, nil
}

// Addr returns the bound address.
func (l *Listener) Addr() netip.AddrPort { return l.local }

// input handles a segment for the listener (RFC 9293 §3.10.7.2), with the SYN queue,
// accept queue and SYN cookie decisions of Linux's tcp_conn_request.
func (l *Listener) input(s *segment) {
	p := l.p
	if s.flags&flagRST != 0 {
		return
	}
	if s.flags&flagACK != 0 {
		if s.flags&flagSYN == 0 && l.cookieACK(s) {
			return
		}
		p.sendRST(s.dst, s.src, s.hdr.DstPort(), s.hdr.SrcPort(), s.ack, 0, false)
		return
	}
	if s.flags&flagSYN == 0 {
		return
	}
	mode := p.cfg.SynCookies
	l.mu.Lock()
	closed := l.closed
	synFull := len(l.synQ) >= l.backlog
	acceptFull := len(l.acceptQ) >= l.backlog
	l.mu.Unlock()
	if closed {
		p.Stats.ListenDrops.Add(1)
		return
	}
	// The SYN queue is full when this listener's backlog or the stack's
	// MaxSynBacklog (tcp_max_syn_backlog) is reached.
	reserved := false
	if !synFull && mode != SynCookiesAlways {
		reserved = p.synq.reserve(p.cfg.MaxSynBacklog)
		synFull = !reserved
	}
	wantCookie := mode == SynCookiesAlways
	if synFull {
		// Linux's tcp_syn_flood_action.
		if mode == SynCookiesNever {
			p.Stats.TCPReqQFullDrop.Add(1)
			p.Stats.ListenDrops.Add(1)
			return
		}
		p.Stats.TCPReqQFullDoCookies.Add(1)
		wantCookie = true
	}
	if acceptFull {
		if reserved {
			p.synq.release(1)
		}
		p.Stats.ListenOverflows.Add(1)
		p.Stats.ListenDrops.Add(1)
		return
	}
	if wantCookie {
		l.lastOverflow.Store(p.cookieCounter() + 1)
		l.sendCookieSynAck(s)
		return
	}
	if !l.synRecv(s) {
		p.synq.release(1)
	}
}

// synRecv creates a SYN-RECEIVED connection for s in the SYN queue, holding a slot
// reserved in p.synq; it returns false if it did not (the caller releases the slot).
// The entry holds no buffers: the send and receive rings grow only once data flows.
func (l *Listener) synRecv(s *segment) bool {
	p := l.p
	_, mtu, err := p.net.Route(s.src)
	if err != nil {
		return false
	}
	local := netip.AddrPortFrom(s.dst, s.hdr.DstPort())
	remote := netip.AddrPortFrom(s.src, s.hdr.SrcPort())
	c, err := p.passiveOpen(l, local, remote, mtu, s.seq, p.isn(local, remote), s.wnd, &s.opts)
	if err != nil {
		return false
	}
	defer c.mu.Unlock()
	l.mu.Lock()
	if l.closed || len(l.synQ) >= l.backlog {
		// Closed, or SYNs on other goroutines filled the queue since input looked:
		// the backlog is a hard limit, so this SYN is dropped (the peer retransmits).
		full := !l.closed
		l.mu.Unlock()
		c.listener = nil
		c.finish(nil)
		if full {
			p.Stats.ListenDrops.Add(1)
		}
		return false
	}
	l.synQ[c] = struct{}{}
	l.mu.Unlock()
	tfo := l.fastOpenSYN(c, s)
	c.ecnPassive(s) // ecn.go: the SYN-ACK's ECE
	p.track(c)
	p.Stats.PassiveOpens.Add(1)
	c.sendSYN()
	c.arm(timerRetransmit, c.rto)
	if tfo {
		// RFC 7413 §4.2.2: a Fast Open connection is accepted before the handshake
		// completes, its SYN's data readable at once.
		l.ready(c)
	}
	return true
}

// synQDel removes c from the SYN queue, returning its slot in the stack's count.
// Called with l.mu held.
func (l *Listener) synQDel(c *Conn) {
	if _, ok := l.synQ[c]; ok {
		delete(l.synQ, c)
		l.p.synq.release(1)
	}
}

type readyResult uint8

const (
	readyOK readyResult = iota
	readyFull
	readyClosed
)

// ready moves c from the SYN queue to the accept queue. Called with c.mu held.
func (l *Listener) ready(c *Conn) readyResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.synQDel(c)
		return readyClosed
	}
	if len(l.acceptQ) >= l.backlog {
		return readyFull
	}
	l.synQDel(c)
	l.acceptQ = append(l.acceptQ, c)
	l.cond.Broadcast()
	return readyOK
}

// remove forgets c (it closed before being accepted). Called with c.mu held.
func (l *Listener) remove(c *Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.synQDel(c)
	for i, q := range l.acceptQ {
		if q == c {
			l.acceptQ = append(l.acceptQ[:i], l.acceptQ[i+1:]...)
			break
		}
	}
}

// Accept waits for an established connection. Errors: net.ErrClosed,
// os.ErrDeadlineExceeded, the context's error.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	l.mu.Lock()
	var stop func() bool
	for len(l.acceptQ) == 0 {
		if l.closed {
			l.mu.Unlock()
			return nil, net.ErrClosed
		}
		if l.dl.expired {
			l.mu.Unlock()
			return nil, os.ErrDeadlineExceeded
		}
		if err := ctx.Err(); err != nil {
			l.mu.Unlock()
			return nil, err
		}
		if stop == nil && ctx.Done() != nil {
			stop = context.AfterFunc(ctx, func() {
				l.mu.Lock()
				l.cond.Broadcast()
				l.mu.Unlock()
			})
			defer stop()
		}
		l.cond.Wait()
	}
	c := l.acceptQ[0]
	l.acceptQ[0] = nil
	l.acceptQ = l.acceptQ[1:]
	l.mu.Unlock()
	c.mu.Lock()
	if c.listener == l {
		c.listener = nil
	}
	c.mu.Unlock()
	return c, nil
}

// SetDeadline sets the deadline for Accept.
func (l *Listener) SetDeadline(t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return net.ErrClosed
	}
	l.dl.set(l.p.clk, t, &l.mu, &l.cond)
	return nil
}

// Close stops listening; connections never accepted are reset.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return net.ErrClosed
	}
	l.closed = true
	pending := make([]*Conn, 0, len(l.synQ)+len(l.acceptQ))
	for c := range l.synQ {
		pending = append(pending, c)
	}
	pending = append(pending, l.acceptQ...)
	l.p.synq.release(len(l.synQ))
	l.synQ, l.acceptQ = nil, nil
	l.dl.stop()
	l.cond.Broadcast()
	l.mu.Unlock()
	l.bind.Release()
	for _, c := range pending {
		c.mu.Lock()
		if c.listener == l {
			c.listener = nil
			c.userClosed = true
			c.abort()
		}
		c.mu.Unlock()
	}
	l.p.untrack(l)
	return nil
}

// QueueLen reports the accept queue's length and the backlog.
func (l *Listener) QueueLen() (n, backlog int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acceptQ), l.backlog
}
