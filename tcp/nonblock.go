package tcp

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// This file is the socket-style surface of a connection that adapters of the BSD socket
// API need (the packetdrill adapter in conformance/, a future poll loop): a connection made
// before it opens, so that options set on it shape its SYN; a non-blocking connect, read
// and write; and the readiness poll(2) reports.

// Socket returns a connection that is not open yet, like socket(2): options set on it
// (SetBuffers, SetNoDelay, SetLinger, SetKeepAliveConfig, SetCongestionControl) apply to
// the connection Connect opens. Close releases it.
func (p *Protocol) Socket() *Conn { return p.newConn() }

// Connect opens c, made by Socket, actively, as Dial does. With wait true it returns once
// the connection is established or has failed (Dial's errors). With wait false it returns
// nil once the SYN is sent, as connect(2) on a non-blocking socket returns EINPROGRESS:
// Readiness then reports the outcome. EISCONN if c was opened already, EALREADY while it
// is still opening.
func (c *Conn) Connect(ctx context.Context, local, remote netip.AddrPort, opts DialOptions, wait bool) error {
	p := c.p
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.isClosed() {
		return syscall.ENETDOWN
	}
	c.mu.Lock()
	switch {
	case c.userClosed:
		c.mu.Unlock()
		return net.ErrClosed
	case c.state == StateSynSent:
		c.mu.Unlock()
		return syscall.EALREADY
	case c.active || c.state != StateClosed:
		c.mu.Unlock()
		return syscall.EISCONN
	}
	c.mu.Unlock()
	ra := remote.Addr().Unmap()
	if !ra.IsValid() || ra.IsUnspecified() || ra.IsMulticast() || remote.Port() == 0 {
		return syscall.ECONNREFUSED
	}
	return p.connect(ctx, c, local, remote, opts, wait)
}

// ReadNonblock is Read for a non-blocking socket: syscall.EAGAIN where Read would wait.
// With peek the data stays queued (MSG_PEEK).
func (c *Conn) ReadNonblock(b []byte, peek bool) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	switch {
	case c.userClosed:
		return 0, net.ErrClosed
	case c.rcvBuf.n > 0:
		if len(b) == 0 {
			return 0, nil
		}
		n := min(len(b), c.rcvBuf.n)
		c.rcvBuf.readAt(b[:n], 0)
		if peek {
			return n, nil
		}
		c.rcvBuf.consume(n)
		c.urgentRead()
		c.rcvAutotune(n)
		c.windowUpdate()
		return n, nil
	case c.rdShut:
		return 0, nil
	}
	if err := c.takeErr(); err != nil {
		return 0, err
	}
	if c.finRcvd || (c.state == StateClosed && (c.active || c.synced || c.tfoChild)) {
		return 0, nil // io.EOF: read(2) returns 0
	}
	if c.state == StateClosed {
		return 0, syscall.ENOTCONN
	}
	return 0, syscall.EAGAIN
}

// WriteNonblock is Write for a non-blocking socket: it queues what fits in the send buffer
// now and returns syscall.EAGAIN if nothing does (or the handshake is still under way).
func (c *Conn) WriteNonblock(b []byte) (int, error) { return c.writeNonblockMsg(b, false, false) }

func (c *Conn) writeNonblockMsg(b []byte, more, eor bool) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	c.more, c.moreNow = more, more
	defer func() { c.moreNow = false }()
	if wait, err := c.writable(); err != nil {
		// A socket that never had a connection is not connected; one that had (an
		// accepted child, Fast Open's included) gets EPIPE as on Linux
		// (sk_stream_wait_connect).
		if c.state == StateClosed && !c.active && !c.synced && !c.tfoChild && err == syscall.EPIPE {
			return 0, syscall.ENOTCONN
		}
		return 0, err
	} else if wait {
		return 0, syscall.EAGAIN
	}
	if len(b) == 0 {
		return 0, nil
	}
	space := c.sndBufMax - c.sndBuf.n
	if space <= 0 {
		c.sndbufWait()
		return 0, syscall.EAGAIN
	}
	k := c.queue(b, space)
	if k == 0 {
		return 0, syscall.EAGAIN // TCP_NOTSENT_LOWAT (sendopts.go)
	}
	if k < len(b) {
		c.sndbufWait()
	}
	if eor && k == len(b) {
		c.markEOR()
	}
	return k, nil
}

// Readiness is a connection's state as poll(2) and the socket ioctls see it.
type Readiness struct {
	Readable bool // a read would not block: data, EOF (the peer's FIN, SHUT_RD) or an error
	Writable bool // a write would not block: established with send-buffer space, or an error
	Hup      bool // both directions are finished (POLLHUP)
	RdHup    bool // the peer's FIN arrived or reading was shut down (POLLRDHUP)
	Err      bool // an error is pending (POLLERR; SO_ERROR returns it)
	Opening  bool // the handshake is under way
	Opened   bool // the connection reached ESTABLISHED once
	// RecvQueued is the data ready to read (FIONREAD/SIOCINQ); SendQueued the data not yet
	// acknowledged, in flight or queued (SIOCOUTQ); SendSpace the room left in the send
	// buffer.
	RecvQueued, SendQueued, SendSpace int
	State                             State
}

// Readiness reports what a read or write would do now.
func (c *Conn) Readiness() Readiness {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := Readiness{State: c.state, Opened: c.synced, RecvQueued: c.rcvBuf.n}
	r.Opening = c.state == StateSynSent || c.state == StateSynReceived
	r.Err = c.err != nil
	r.SendQueued = c.sndBuf.n
	r.SendSpace = max(c.sndBufMax-c.sndBuf.n, 0)
	r.RdHup = c.finRcvd || c.rdShut
	closed := c.state == StateClosed && (c.active || c.synced || c.tfoChild)
	r.Readable = r.RecvQueued > 0 || r.RdHup || r.Err || closed
	// As Linux's tcp_poll: writable with send-buffer space once established; always
	// after our FIN was queued (a write then fails at once) or an error.
	switch c.state {
	case StateEstablished, StateCloseWait:
		r.Writable = (r.SendSpace > 0 && c.lowatWritable()) || c.finQueued
	}
	r.Writable = r.Writable || r.Err || closed || (c.finQueued && !r.Opening)
	r.Hup = closed || (c.finRcvd && c.finQueued)
	return r
}

// TakeError returns the pending error and clears it, as getsockopt(SO_ERROR) does; nil if
// there is none.
func (c *Conn) TakeError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.takeErr()
}

// SetMaxSeg sets TCP_MAXSEG before the connection opens: the MSS we announce, and the
// largest segment we send, are at most n (88 to 32767 bytes, as Linux takes; 0 removes
// the limit). Once the connection is open it has no effect, as on Linux.
func (c *Conn) SetMaxSeg(n int) error {
	if n != 0 && (n < 88 || n > 32767) {
		return syscall.EINVAL
	}
	return c.setOpt(func() { c.maxSeg = n })
}

// SetMaxSeg is TCP_MAXSEG on a listener: the connections it accepts announce and send at
// most n bytes per segment.
func (l *Listener) SetMaxSeg(n int) error {
	if n != 0 && (n < 88 || n > 32767) {
		return syscall.EINVAL
	}
	l.mu.Lock()
	l.maxSeg = n
	l.mu.Unlock()
	return nil
}

// SetUserTimeout sets TCP_USER_TIMEOUT (RFC 5482): data left unacknowledged for d ends the
// connection with ETIMEDOUT, before the retransmission count would. 0 removes it.
func (c *Conn) SetUserTimeout(d time.Duration) error {
	if d < 0 {
		return syscall.EINVAL
	}
	return c.setOpt(func() { c.userTimeout = d })
}
