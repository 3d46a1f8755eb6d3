package tcp

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// KeepAliveConfig mirrors net.KeepAliveConfig.
type KeepAliveConfig struct {
	Enable   bool          // SO_KEEPALIVE
	Idle     time.Duration // TCP_KEEPIDLE: idle time before the first probe (0: 15 s)
	Interval time.Duration // TCP_KEEPINTVL: time between probes (0: 15 s)
	Count    int           // TCP_KEEPCNT: unanswered probes before the connection fails with ETIMEDOUT (0: 9)
}

// Conn is one TCP connection endpoint. Its methods are safe for concurrent use.
type Conn struct {
	// The connection is split by job, as gVisor splits its endpoint: the sender (send
	// sequence space, segmentation, congestion control, loss recovery; sender.go,
	// sack.go, recovery.go), the receiver (receive sequence space, reassembly, window,
	// ACK policy; receiver.go) and the timers with the RTO (timers.go) are plain types
	// embedded here, so one lock, c.mu, guards them all; conn.go keeps the lifecycle and
	// the user API, input.go the segment arrival state machine.

	p    *Protocol
	mu   sync.Mutex
	cond sync.Cond

	state    State
	local    netip.AddrPort
	remote   netip.AddrPort
	bind     *ports.Binding
	listener *Listener   // passive open not yet accepted
	active   bool        // opened by Dial
	synced   bool        // reached ESTABLISHED once
	timeWait atomic.Bool // in TIME-WAIT: read without the lock by reclaim

	sender
	receiver
	timers

	outPending bool       // in Protocol.pend: finishInput waits for the end of the link batch
	wmu        sync.Mutex // serializes writers (Write, ReadFrom): ReadFrom fills the buffer unlocked

	// RFC 7323 timestamps: negotiated (tsOK), the peer's SYN offered them (tsPeer),
	// TS.Recent and when it was taken (for PAWS's 24-day rule, RFC 7323 §5.5), the
	// per-connection offset of our TSval clock, and Last.ACK.sent (RFC 7323 §4.3).
	tsOK, tsPeer bool
	tsOffset     uint32
	tsRecent     uint32
	tsRecentAt   time.Time
	lastAckSent  uint32
	synTSVal     uint32 // TSval of our first SYN

	// RFC 2018 SACK: negotiated (sackOK), the peer's SYN offered it (sackPeer). The
	// sender keeps the scoreboard, the receiver the blocks it reports.
	sackOK, sackPeer bool

	// RFC 5961 §7 challenge ACKs, rate-limited per socket.
	chStart time.Time
	chCount int
	// The clock, read at most once per locked operation: a clock read costs as much as
	// building a segment on some machines, and timestamps, the scoreboard and the timers
	// each want one. Every entry point that takes c.mu clears nowOK.
	nowT  time.Time
	nowOK bool

	// User side.
	err        error // hard error, reported once to Read or Write
	errTaken   bool
	softErr    syscall.Errno
	userClosed bool
	rdShut     bool
	ecn        ecnState // Explicit Congestion Notification (ecn.go)
	// Fast Open (fastopen.go): a passive connection whose SYN was taken as Fast Open, and
	// whether it carried data; the option the SYN-ACK carries (kind, cookie). On either
	// side synDataAcked is Linux's syn_data_acked: the SYN's data was all taken.
	tfoChild, synData bool
	synDataAcked      bool
	foReply           uint8
	foCookie          [8]byte
	// Fast Open client (fastopen_client.go): the SYN carries the option (foSend), with
	// the cookie foEntry if foHave, in the option kind foKind.
	foSend, foHave bool
	foKind         uint8
	foEntry        foEntry
	synRetries     int // SetSynRetries (TCP_SYNCNT); 0: Config's
	maxSeg         int // SetMaxSeg (TCP_MAXSEG); 0: none
	// SetUserTimeout (TCP_USER_TIMEOUT; 0: none), and when the data now unacknowledged
	// began to time out.
	userTimeout time.Duration
	utStart     time.Time

	rd, wd    deadline
	nodelay   bool
	linger    int
	keepAlive KeepAliveConfig
}

func (p *Protocol) newConn() *Conn {
	c := &Conn{
		p:       p,
		nodelay: true,
		linger:  -1,
	}
	c.sndBufMax, c.sndAutoMax = p.cfg.WMem[1], p.cfg.WMem[2]
	c.rcvBufMax, c.rcvAutoMax = p.cfg.RMem[1], p.cfg.RMem[2]
	c.rto = p.cfg.InitialRTO
	c.rackReoMult = 1
	c.quickAcks = 16
	c.cond.L = &c.mu
	return c
}

// setRoute derives the MSS we announce from the path MTU (RFC 9293 §3.7.1).
func (c *Conn) setRoute(mtu int) {
	ipHdr := 20
	if c.remote.Addr().Is6() && !c.remote.Addr().Is4In6() {
		ipHdr = 40
	}
	c.advMSS = max(mtu-ipHdr-wire.TCPMinHeaderLen, 64)
	if c.maxSeg > 0 {
		c.advMSS = min(c.advMSS, c.maxSeg) // TCP_MAXSEG (nonblock.go)
	}
	c.mss = c.advMSS
	// RFC 7323 §5.4: a per-connection random offset for TSval, derived like the ISN.
	c.tsOffset = c.p.isn(c.remote, c.local)
	if g, ok := c.p.net.(transport.GSONetwork); ok {
		c.gsoMax = g.GSOMax(c.remote.Addr())
	}
	// Window scale we offer: the smallest shift that lets the window cover the buffer,
	// as far as auto-tuning may grow it (RFC 7323 §2.2: the shift is fixed at the SYN).
	for c.rcvWscale < 14 && max(c.rcvBufMax, c.rcvAutoMax)>>c.rcvWscale > 0xffff {
		c.rcvWscale++
	}
}

// negotiate applies the peer's SYN options: MSS (RFC 9293 §3.7.1: 536 for IPv4 and 1220 for
// IPv6 when absent) and window scale (RFC 7323 §2.2: used only when both sides sent it).
func (c *Conn) negotiate(o *wire.TCPOptions) {
	peer := 536
	if c.remote.Addr().Is6() && !c.remote.Addr().Is4In6() {
		peer = 1220
	}
	if o.HasMSS && o.MSS > 0 {
		peer = int(o.MSS)
	}
	c.mss = max(min(peer, c.advMSS), 64)
	// RFC 7323 §3.2 and RFC 2018 §2: timestamps and SACK are used when both SYNs carry
	// them (we offer both in our SYN unless disabled, and answer in kind).
	c.tsPeer, c.sackPeer = o.HasTimestamps && c.p.timestamps(), o.SACKPermitted && !c.p.cfg.NoSACK
	c.tsOK, c.sackOK = c.tsPeer, c.sackPeer
	if c.tsOK {
		c.tsRecent, c.tsRecentAt = o.TSVal, c.now()
		c.mss = max(c.mss-tsOptLen, 64) // every segment carries the option (RFC 7323 §3.2)
	}
	if o.HasWindowScale {
		c.wsPeer = true
		c.sndWscale = min(o.WindowScale, 14)
	} else {
		c.sndWscale, c.rcvWscale = 0, 0
	}
	c.mssNeg = c.mss
	c.cc = c.newCC(c.mss) // congestion-control hook (cc.go)
}

// LocalAddr returns the connection's local address and port.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// RemoteAddr returns the peer's address and port.
func (c *Conn) RemoteAddr() netip.AddrPort { return c.remote }

// State returns the connection's state.
func (c *Conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// DialOptions are settings for Dial.
type DialOptions struct {
	Bind ports.BindOptions // used when a local address or port is given
	// Setup, if set, is called with the new connection before it binds or sends its SYN:
	// the place for settings that must precede the handshake, such as the receive buffer
	// (SetBuffers), which fixes the window scale offered in the SYN (RFC 7323 §2.2).
	Setup func(*Conn)
}

// Dial opens a connection to remote (active open). A valid local address or non-zero
// local port binds first, like bind(2) before connect(2). It returns once the connection
// is established, or with ECONNREFUSED, ETIMEDOUT, EADDRNOTAVAIL, ENETUNREACH, or the
// context's error. Errors of the bind step come as *os.SyscallError{Syscall: "bind"}.
func (p *Protocol) Dial(ctx context.Context, local, remote netip.AddrPort, opts DialOptions) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.isClosed() {
		return nil, syscall.ENETDOWN
	}
	ra := remote.Addr().Unmap()
	remote = netip.AddrPortFrom(ra, remote.Port())
	if !ra.IsValid() || ra.IsUnspecified() || ra.IsMulticast() || remote.Port() == 0 {
		return nil, syscall.ECONNREFUSED
	}
	c := p.newConn()
	if err := p.connect(ctx, c, local, remote, opts, true); err != nil {
		return nil, err
	}
	return c, nil
}

// connect is Dial's body for the connection c (new, or made by Socket), after the checks
// of the addresses. With wait false it returns once the SYN is sent.
func (p *Protocol) connect(ctx context.Context, c *Conn, local, remote netip.AddrPort, opts DialOptions, wait bool) error {
	ra := remote.Addr().Unmap()
	remote = netip.AddrPortFrom(ra, remote.Port())
	src, mtu, err := p.net.Route(ra)
	if err != nil {
		return err
	}
	la := local.Addr().Unmap()
	if la.IsValid() && !la.IsUnspecified() {
		if !p.net.IsLocal(la) {
			return os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)
		}
		if la.Is4() != ra.Is4() {
			return syscall.EAFNOSUPPORT
		}
		src = la
	}
	c.active = true
	c.remote = remote
	if opts.Setup != nil {
		opts.Setup(c)
	}
	var b *ports.Binding
	if local.Port() != 0 || (la.IsValid() && !la.IsUnspecified()) {
		if !la.IsValid() {
			la = src
		}
		if b, err = p.mgr.Bind(netip.AddrPortFrom(la, local.Port()), opts.Bind, c); err != nil {
			return os.NewSyscallError("bind", err)
		}
	}
	c.mu.Lock()
	nb, err := p.mgr.Connect(b, src, remote, c)
	if err != nil {
		c.mu.Unlock()
		if b != nil {
			b.Release()
		}
		return err
	}
	c.bind = nb
	c.local = nb.Local()
	if !wait {
		c.startOpen(mtu)
		c.mu.Unlock()
		return nil
	}
	_, err = c.activeOpen(ctx, mtu)
	return err
}

// activeOpen sends the SYN of a connection whose 4-tuple is registered and waits for the
// handshake to finish (RFC 9293 §3.5). c.mu is held on entry and released on return.
func (c *Conn) activeOpen(ctx context.Context, mtu int) (*Conn, error) {
	p := c.p
	c.startOpen(mtu)

	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	for !c.synced && c.err == nil && c.state != StateClosed {
		if err := ctx.Err(); err != nil {
			c.abort()
			c.mu.Unlock()
			p.Stats.AttemptFails.Add(1)
			return nil, err
		}
		c.cond.Wait()
	}
	if !c.synced {
		err := c.err
		if err == nil {
			err = syscall.ECONNREFUSED
		}
		c.finish(nil)
		c.mu.Unlock()
		p.Stats.AttemptFails.Add(1)
		return nil, err
	}
	c.mu.Unlock()
	return c, nil
}

// startOpen sends the SYN of an active open and enters SYN-SENT. c.mu is held.
func (c *Conn) startOpen(mtu int) {
	p := c.p
	c.setRoute(mtu)
	p.track(c)
	p.Stats.ActiveOpens.Add(1)
	c.initSend(p.isn(c.local, c.remote))
	c.setState(StateSynSent)
	c.sendSYN()
	c.arm(timerRetransmit, c.rto)
}

// passiveOpen creates the connection the peer's SYN asks for (RFC 9293 §3.10.7.2, as in
// LISTEN), registered under its 4-tuple and in SYN-RECEIVED, and returns it with c.mu
// held; l is the listener that accepts it, if any. irs is the peer's initial sequence
// number, iss ours, wnd the window of the SYN (never scaled, RFC 7323 §2.2), opts the
// options of the SYN. Listeners (listener.go), syncookies (syncookie.go) and transparent
// connections (transparent.go) all open through it; the caller then tracks the
// connection and answers (or, for a cookie, completes) the handshake.
// registerConn creates a connection for the exact 4-tuple (local, remote), registered
// with the Manager (EADDRINUSE if the 4-tuple is taken), and returns it with c.mu held:
// the passive opens and DialTransparent. active says we send the SYN; l is the listener
// of a passive open, if any.
func (p *Protocol) registerConn(local, remote netip.AddrPort, active bool, l *Listener) (*Conn, error) {
	c := p.newConn()
	c.active = active
	c.local, c.remote = local, remote
	c.listener = l
	c.mu.Lock()
	b, err := p.mgr.Register(local, remote, c)
	if err != nil {
		c.mu.Unlock()
		return nil, err
	}
	c.bind = b
	return c, nil
}

func (p *Protocol) passiveOpen(l *Listener, local, remote netip.AddrPort, mtu int, irs, iss, wnd uint32, opts *wire.TCPOptions) (*Conn, error) {
	c, err := p.registerConn(local, remote, false, l)
	if err != nil {
		return nil, err
	}
	if l != nil {
		l.mu.Lock() // after c.mu, as Listener.ready
		c.maxSeg = l.maxSeg
		l.mu.Unlock()
	}
	c.setRoute(mtu)
	c.initRecv(irs)
	c.negotiate(opts)
	c.sndWnd, c.sndWl1, c.maxSndWnd = wnd, irs, wnd
	c.initSend(iss)
	c.sndWl2 = iss
	c.setState(StateSynReceived)
	return c, nil
}

// sendSYN sends our SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED), with the options negotiated
// in one place: MSS, and window scale (offered always in a SYN; in a SYN-ACK only if the
// peer offered it).
func (c *Conn) sendSYN() {
	var o wire.TCPOptions
	o.HasMSS, o.MSS = true, uint16(min(c.advMSS, 0xffff))
	flags := wire.TCPFlagSYN | c.ecnSYNFlags() // ecn.go
	if c.state == StateSynReceived {
		flags |= wire.TCPFlagACK
		if c.wsPeer {
			o.HasWindowScale, o.WindowScale = true, c.rcvWscale
		}
		if c.tsPeer {
			o.HasTimestamps, o.TSVal, o.TSEcr = true, c.tsNow(), c.tsRecent
		}
		o.SACKPermitted = c.sackPeer
		c.fastOpenOption(&o)
	} else {
		o.HasWindowScale, o.WindowScale = true, c.rcvWscale
		if c.p.timestamps() {
			o.HasTimestamps, o.TSVal = true, c.tsNow()
			if c.retries == 0 {
				c.synTSVal = o.TSVal // the oldest TSval a SYN-ACK may echo (inputSynSent)
			}
		}
		o.SACKPermitted = !c.p.cfg.NoSACK
	}
	n := 0
	if c.state == StateSynSent {
		if n = c.synFastOpen(&o); n > 0 {
			c.sndNxt, c.sndMax = c.iss+1+uint32(n), c.iss+1+uint32(n)
		}
	}
	if c.retries == 0 && !c.rttOn {
		c.rttOn, c.rttSeq, c.rttStart = true, c.iss, c.now()
	}
	c.emit(c.iss, flags, n, &o)
}

// tsOptLen is the space the timestamps option takes in every segment (RFC 7323 §3.2,
// aligned with two NOPs as Linux).
const tsOptLen = 12

// tsNow is our TSval clock: milliseconds (RFC 7323 §5.4 allows 1 ms to 1 s per tick) plus
// the connection's offset.
func (c *Conn) tsNow() uint32 { return uint32(c.now().UnixMilli()) + c.tsOffset }

// now is the clock as of the current locked operation.
func (c *Conn) now() time.Time {
	if !c.nowOK {
		c.nowT, c.nowOK = c.p.clk.Now(), true
	}
	return c.nowT
}

// mono is now on the protocol's monotonic clock, for transmission times (sack.go).
func (c *Conn) mono() time.Duration { return c.now().Sub(c.p.epoch) }

// takeErr reports the pending hard error once, as Linux's sock_error does: afterwards
// reads see EOF and writes EPIPE.
func (c *Conn) takeErr() error {
	err := c.err
	if err != nil {
		c.err = nil
		c.errTaken = true
	}
	return err
}

// fail ends the connection with a hard error.
func (c *Conn) fail(err error) {
	if c.err == nil && !c.errTaken {
		c.err = err
	}
	if c.synced && (err == syscall.ECONNRESET || err == syscall.ETIMEDOUT) {
		c.p.Stats.EstabResets.Add(1)
	}
	c.finish(err)
}

// finish moves the connection to CLOSED: timers stop, the binding goes back to the
// Manager, buffers are freed (unread data stays readable until Close).
func (c *Conn) finish(err error) {
	if c.err == nil && !c.errTaken && err != nil {
		c.err = err
	}
	if c.state == StateClosed && c.bind == nil && c.listener == nil {
		c.cond.Broadcast()
		return
	}
	c.setState(StateClosed)
	if c.timeWait.Swap(false) {
		c.p.twCount.Add(-1)
	}
	c.disarm()
	if c.dackOn {
		c.dackOn = false
		c.dack.Stop()
	}
	if c.bind != nil {
		c.bind.Release()
		c.bind = nil
	}
	if l := c.listener; l != nil {
		c.listener = nil
		l.remove(c)
	}
	c.sndBuf.free()
	c.eor = nil
	c.sb = scoreboard{}
	c.releaseOOO()
	if c.userClosed {
		c.rcvBuf.free()
	}
	c.p.untrack(c)
	c.cond.Broadcast()
}

// abort sends RST if the peer holds state for us (RFC 9293 §3.10.4 ABORT) and closes.
func (c *Conn) abort() {
	switch c.state {
	case StateSynReceived, StateEstablished, StateFinWait1, StateFinWait2, StateCloseWait:
		// RFC 7323 §3.2: once timestamps are negotiated every segment carries them, the
		// RST too (as Linux's tcp_send_active_reset): a peer that enforces PAWS on RSTs
		// would otherwise have to take it without.
		var o *wire.TCPOptions
		if c.tsOK {
			o = &wire.TCPOptions{HasTimestamps: true, TSVal: c.tsNow(), TSEcr: c.tsRecent}
		}
		c.p.sendRSTOpts(c.local.Addr(), c.remote.Addr(), c.local.Port(), c.remote.Port(), c.sndMax, c.rcvNxt, true, o)
	}
	c.finish(nil)
}

// reclaim lets a new connection take this TIME-WAIT 4-tuple. The safe-reuse rule: the
// record has aged at least one second (as Linux's tcp_tw_reuse) and the new connection's
// ISN lies beyond every sequence number the old one used (RFC 9293 §3.4.1, RFC 6191), so
// old duplicates cannot be taken for new data. The Manager hands the tuple over itself.
func (c *Conn) reclaim() bool {
	if !c.timeWait.Load() {
		return false // cheap: the Manager asks about every busy 4-tuple it meets
	}
	// The Manager calls without its lock held, and no goroutine holds two Conn locks, so
	// waiting here cannot deadlock.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != StateTimeWait {
		return false
	}
	if c.p.clk.Now().Sub(c.twStart) < time.Second {
		return false
	}
	if !seqGT(c.p.isn(c.local, c.remote), c.sndMax) {
		return false
	}
	c.bind = nil
	c.finish(nil)
	c.p.Stats.TimeWaitReused.Add(1)
	return true
}

// icmpError handles an ICMP error for this connection (RFC 5927 §4.1: the quoted sequence
// number must be outstanding).
func (c *Conn) icmpError(seq uint32, errno syscall.Errno, mtu int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	if c.state == StateSynSent {
		if seq != c.iss {
			return
		}
		if errno == syscall.EMSGSIZE {
			c.icmpSynSentMTU(mtu) // icmp_synsent.go
			return
		}
		c.fail(errno) // RFC 1122 §4.2.3.9: hard errors abort an opening connection
		return
	}
	if c.state == StateSynReceived {
		c.icmpSynReceived(seq, errno) // icmp_synrecv.go
		return
	}
	if !c.state.synchronized() || seqLT(seq, c.sndUna) || !seqLT(seq, c.sndMax) {
		return
	}
	if errno == syscall.EMSGSIZE {
		if mtu <= 0 {
			return
		}
		// RFC 1191 §6.5 / RFC 8201 §5.4: lower the MSS and resend what is outstanding
		// in segments that fit.
		if m := c.mtuToMSS(mtu); m < c.mss {
			old := c.mss
			c.mss, c.pmtuAt = m, c.now()
			c.cc.SetMSS(m)
			c.scaleCwnd(old)
			c.p.Stats.PMTUUpdates.Add(1)
			if c.sbComplete() {
				for i := 0; i < c.sb.n; i++ {
					if r := c.sb.at(i); r.flags&segSACKed == 0 {
						c.markLost(r)
					}
				}
				c.sb.rxHint = c.sndUna
			} else {
				c.sb.reset()
				c.sndNxt = c.sndUna
			}
			c.output()
		}
		return
	}
	c.softErr = errno
}

// mtuToMSS is the send MSS a path MTU allows, after the IP and TCP headers and the
// timestamp option. The MTU may come from a packet anyone can forge, so TCP does not trust
// the network layer's floor alone: as Linux's tcp_mtu_to_mss, the MSS never goes below
// tcp_min_snd_mss (minSndMSS), whatever MTU is reported.
func (c *Conn) mtuToMSS(mtu int) int {
	ipHdr := 20
	if c.remote.Addr().Is6() {
		ipHdr = 40
	}
	m := max(mtu-ipHdr-wire.TCPMinHeaderLen, minSndMSS)
	if c.tsOK {
		m -= tsOptLen
	}
	return m
}

// pmtuExpires is how long an MSS lowered by an ICMP error holds before the route's MTU
// is read again (RFC 1191 §6.3 / RFC 8201 §4: a PMTU estimate must age so that a path
// that grew, or a forged error, costs for a while only), as Linux's ip_rt_mtu_expires.
const pmtuExpires = 600 * time.Second

// pmtuRecover raises the MSS after pmtuExpires back toward what the route's MTU allows now
// (the network layer may still hold a lowered PMTU of its own) and never above the
// negotiated one, as Linux rereads the route's MTU in tcp_current_mss.
func (c *Conn) pmtuRecover() {
	c.pmtuAt = time.Time{}
	_, mtu, err := c.p.net.Route(c.remote.Addr())
	if err != nil {
		return
	}
	m := c.mtuToMSS(mtu)
	if m = min(m, c.mssNeg); m > c.mss {
		old := c.mss
		c.mss = m
		c.cc.SetMSS(m)
		c.scaleCwnd(old)
	}
	if m < c.mssNeg {
		c.pmtuAt = c.now() // still below: look again after another period
	}
}

// scaleCwnd keeps cwnd's size in segments when the MSS changes from old to c.mss, as
// Linux, which counts cwnd in segments: a lower path MTU then means fewer bytes in
// flight, not more packets, and a forged ICMP error cannot multiply the packet rate (a
// window of bytes at a 36-byte MSS would be 40 times as many segments).
func (c *Conn) scaleCwnd(old int) {
	c.cc.SetWindow(max(int(int64(c.cc.Window())*int64(c.mss)/int64(old)), 2*c.mss))
}

// minSndMSS is Linux's tcp_min_snd_mss: the smallest MSS (before options) a reported
// path MTU can drive a connection to. Far below any real path's (IPv4's 576-byte minimum
// datagram gives 536), it bounds what a forged ICMP error can do: every segment still
// carries 48 bytes of options and data.
const minSndMSS = 48

// Read reads data the peer sent: io.EOF after the peer's FIN, the connection's error
// after a reset or timeout, os.ErrDeadlineExceeded, net.ErrClosed after Close.
func (c *Conn) Read(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	for {
		if c.userClosed {
			return 0, net.ErrClosed
		}
		if c.rd.expired {
			return 0, os.ErrDeadlineExceeded
		}
		if c.rcvBuf.n > 0 {
			if len(b) == 0 {
				return 0, nil
			}
			n := min(len(b), c.rcvBuf.n)
			c.rcvBuf.readAt(b[:n], 0)
			c.rcvBuf.consume(n)
			c.urgentRead()
			c.nowOK = false // Read may have waited
			c.rcvAutotune(n)
			c.windowUpdate()
			return n, nil
		}
		if c.rdShut || c.finRcvd {
			// After the peer's FIN reads see EOF, and a later error (a reset in
			// CLOSE-WAIT, a timeout) waits for a write, as on Linux (SOCK_DONE).
			return 0, io.EOF
		}
		if err := c.takeErr(); err != nil {
			return 0, err
		}
		if c.state == StateClosed {
			return 0, io.EOF
		}
		if len(b) == 0 {
			return 0, nil
		}
		c.cond.Wait()
	}
}

// WaitRead blocks until a Read would return without waiting (data, the peer's FIN, an
// error, the connection closed, or the read deadline passed) and reads nothing: a caller
// that copies (the forwarder) takes its buffer only then, so an idle connection holds
// none. It returns nil when a Read should follow, the error Read would return otherwise.
func (c *Conn) WaitRead() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.userClosed:
			return net.ErrClosed
		case c.rd.expired:
			return os.ErrDeadlineExceeded
		case c.rcvBuf.n > 0 || c.rdShut || c.err != nil || c.finRcvd || c.state == StateClosed:
			return nil // Read returns the data, EOF or the error
		}
		c.cond.Wait()
	}
}

// Buffered is how many bytes a Read returns now without waiting.
func (c *Conn) Buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rcvBuf.n
}

// writable reports whether data may be queued now: an error if it never may, wait if the
// handshake is still under way. Called with c.mu held.
func (c *Conn) writable() (wait bool, err error) {
	switch {
	case c.userClosed:
		return false, net.ErrClosed
	case c.wd.expired:
		return false, os.ErrDeadlineExceeded
	}
	if err := c.takeErr(); err != nil {
		return false, err
	}
	if c.finQueued {
		return false, syscall.EPIPE
	}
	switch c.state {
	case StateEstablished, StateCloseWait:
		return false, nil
	case StateSynReceived:
		return !c.tfoChild, nil // a Fast Open child sends before the handshake completes
	case StateSynSent:
		return true, nil
	}
	return false, syscall.EPIPE
}

// Write queues b for sending, blocking while the send buffer is full.
func (c *Conn) Write(b []byte) (int, error) { return c.writeMsg(b, false, false) }

// writeMsg is Write, with MSG_MORE's cork for this write when more (cork.go) and a record
// end after b when eor (sendopts.go).
func (c *Conn) writeMsg(b []byte, more, eor bool) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	c.more, c.moreNow = more, more
	defer func() { c.moreNow = false }()
	n := 0
	waited := false
	for {
		if wait, err := c.writable(); err != nil {
			return n, err
		} else if wait {
			c.cond.Wait()
			continue
		}
		if len(b) == 0 {
			if eor {
				c.markEOR()
			}
			return n, nil
		}
		// After waiting for space, go on once ACKs woke us (sndWritable) or what is
		// left fits; not for every few bytes freed.
		if space := c.sndBufMax - c.sndBuf.n; space > 0 && (!waited || space >= len(b) || c.sndWritable()) {
			c.nowOK = false // Write may have waited
			if k := c.queue(b, space); k > 0 {
				n += k
				b = b[k:]
				continue
			}
		}
		c.sndbufWait()
		c.cond.Wait()
		waited = true
	}
}

// readFromChunk is the most ReadFrom asks of its reader at once.
const readFromChunk = 256 << 10

// ReadFrom implements io.ReaderFrom: it reads from r straight into the send buffer, with
// no copy through a buffer of the caller's (the forwarder's host-to-namespace direction),
// until r's EOF (nil error) or an error of either side. It blocks as Write does while the
// send buffer is full. The read itself runs without the connection's lock: writers are
// serialized (wmu), the stack only reads and frees what lies before the end of the queued
// data, and a buffer released meanwhile (the connection closed) is noticed afterwards.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	var total int64
	for {
		if wait, err := c.writable(); err != nil {
			return total, err
		} else if wait {
			c.cond.Wait()
			continue
		}
		// Read only into a sizable space (a chunk, or a third of the buffer, as writers
		// are woken): reads into whatever few kilobytes an ACK freed would mean many small
		// reads and small transmissions.
		space := c.sndBufMax - c.sndBuf.n
		if space <= 0 || space < min(readFromChunk, c.sndBufMax/3) {
			c.sndbufWait()
			c.cond.Wait()
			continue
		}
		k := min(space, readFromChunk)
		if l, ok := r.(interface{ Len() int }); ok {
			// A reader that knows how much it has (bytes.Reader; the forwarder's host
			// socket): room for that, not a whole chunk, so that a connection that only
			// ever sends a little keeps a small buffer (the ring never shrinks).
			k = min(k, max(l.Len(), 1))
		}
		c.sndBuf.reserve(c.sndBuf.n+k, c.sndBufMax, c.sndBuf.n)
		dst, _ := c.sndBuf.slices(c.sndBuf.n, k) // up to the end of the ring: one read
		buf := c.sndBuf.buf
		c.mu.Unlock()
		m, rerr := r.Read(dst)
		c.mu.Lock()
		c.nowOK = false
		if m > 0 {
			// Closed, shut down or reset meanwhile: what was read goes nowhere, as for a
			// Write that came too late.
			if _, err := c.writable(); err != nil {
				return total, err
			}
			if len(c.sndBuf.buf) == 0 || &c.sndBuf.buf[0] != &buf[0] {
				return total, syscall.EPIPE
			}
			c.sndBuf.n += m
			total += int64(m)
			c.chronoStart(chronoBusy)
			c.output()
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// shutdownWrite queues our FIN after the data already written (RFC 9293 §3.10.4 CLOSE).
func (c *Conn) shutdownWrite() {
	if c.finQueued {
		return
	}
	switch c.state {
	case StateSynSent:
		c.finish(nil)
		return
	case StateSynReceived, StateEstablished:
		c.setState(StateFinWait1)
	case StateCloseWait:
		c.setState(StateLastAck)
	default:
		return
	}
	c.finQueued = true
	c.finSeq = c.sndUna + uint32(c.sndBuf.n)
	c.output()
}

// CloseWrite sends FIN after the queued data (shutdown(SHUT_WR)); reads go on.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	if c.userClosed {
		return net.ErrClosed
	}
	if !c.state.synchronized() && c.state != StateSynReceived {
		return syscall.ENOTCONN
	}
	c.shutdownWrite()
	c.cond.Broadcast()
	return nil
}

// CloseRead ends reading (shutdown(SHUT_RD)) as Linux does: Read returns what is queued,
// then io.EOF instead of waiting; data that arrives later is still acknowledged and
// queued, and no window update is sent for the shutdown.
func (c *Conn) CloseRead() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	if c.userClosed {
		return net.ErrClosed
	}
	if !c.state.synchronized() && c.state != StateSynReceived {
		return syscall.ENOTCONN
	}
	c.rdShut = true
	c.cond.Broadcast()
	return nil
}

// Close closes the connection: with linger 0, or with unread data (RFC 2525 §2.17, as
// Linux), it resets it; otherwise the queued data and a FIN go out in the background.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	if c.userClosed {
		return net.ErrClosed
	}
	c.userClosed = true
	c.rd.stop()
	c.wd.stop()
	c.cond.Broadcast()
	switch {
	case c.state == StateClosed:
		c.finish(nil)
	case c.linger == 0 || (c.rcvBuf.n > 0 && !c.rdShut):
		c.abort()
	default:
		c.shutdownWrite()
		if c.linger > 0 {
			c.lingerWait(time.Duration(c.linger) * time.Second)
		}
		if c.state == StateFinWait2 {
			c.arm(timerFinWait2, c.p.cfg.FinTimeout)
		}
	}
	if c.state == StateClosed || c.state == StateTimeWait {
		c.rcvBuf.free()
	}
	return nil
}

// lingerWait blocks Close (SO_LINGER with a positive time) until the peer has
// acknowledged everything, our FIN included, or d passes, as Linux's tcp_close does
// (sk_stream_wait_close); after d the connection goes on closing in the background.
func (c *Conn) lingerWait(d time.Duration) {
	done := false
	t := c.p.clk.AfterFunc(d, func() {
		c.mu.Lock()
		done = true
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer t.Stop()
	for !done {
		switch c.state {
		case StateFinWait1, StateClosing, StateLastAck:
			c.cond.Wait()
			c.nowOK = false
		default:
			return
		}
	}
}

// Abort resets the connection at once (close with linger 0).
func (c *Conn) Abort() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userClosed {
		return net.ErrClosed
	}
	c.userClosed = true
	c.rd.stop()
	c.wd.stop()
	c.abort()
	c.rcvBuf.free()
	return nil
}

// SetDeadline, SetReadDeadline and SetWriteDeadline behave as net.Conn's.
func (c *Conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userClosed {
		return net.ErrClosed
	}
	c.rd.set(c.p.clk, t, &c.mu, &c.cond)
	c.wd.set(c.p.clk, t, &c.mu, &c.cond)
	return nil
}

// SetReadDeadline makes reads fail with os.ErrDeadlineExceeded once t passes (the zero
// time clears it); after Close it returns net.ErrClosed.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userClosed {
		return net.ErrClosed
	}
	c.rd.set(c.p.clk, t, &c.mu, &c.cond)
	return nil
}

// SetWriteDeadline makes writes blocked on a full send buffer fail with
// os.ErrDeadlineExceeded once t passes (the zero time clears it); after Close it returns
// net.ErrClosed.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userClosed {
		return net.ErrClosed
	}
	c.wd.set(c.p.clk, t, &c.mu, &c.cond)
	return nil
}

func (c *Conn) setOpt(f func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	if c.userClosed {
		return net.ErrClosed
	}
	f()
	return nil
}

// SetNoDelay turns Nagle's algorithm off (true, the default as in Go) or on.
func (c *Conn) SetNoDelay(on bool) error {
	return c.setOpt(func() {
		c.nodelay = on
		if on {
			// As Linux, TCP_NODELAY pushes what is queued once, through a cork too.
			c.pushOnce = true
			c.output()
			c.pushOnce = false
		}
	})
}

// SetLinger sets SO_LINGER: sec < 0 closes in the background (default), 0 resets on
// Close; sec > 0 makes Close wait up to sec seconds for the peer to acknowledge the data
// and the FIN, as on Linux, and then go on closing in the background.
func (c *Conn) SetLinger(sec int) error { return c.setOpt(func() { c.linger = sec }) }

// SetKeepAliveConfig sets SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT;
// zero durations and counts mean Go's defaults (15 s, 15 s, 9).
func (c *Conn) SetKeepAliveConfig(k KeepAliveConfig) error {
	return c.setOpt(func() {
		c.keepAlive = k
		c.kaSeen = false
		if !k.Enable && c.tkind == timerKeepalive {
			c.disarm()
		}
		c.kaProbes = 0
		if c.tkind == timerKeepalive {
			c.tkind = timerNone
		}
		c.updateTimer()
	})
}

// SetBuffers sets the send and receive buffer sizes (SO_SNDBUF/SO_RCVBUF); zero keeps one.
// The receive size matters only before the connection opens (window scale is fixed then).
func (c *Conn) SetBuffers(send, recv int) error {
	return c.setOpt(func() {
		// As SO_SNDBUF/SO_RCVBUF on Linux: a size set by the application is kept, no
		// auto-tuning.
		if send > 0 {
			c.sndBufMax = max(send, c.sndBuf.n, c.p.cfg.WMem[0], 1024)
			c.sndAutoMax = 0
		}
		if recv > 0 && !c.synced {
			c.rcvBufMax = max(recv, c.p.cfg.RMem[0], 1024)
			c.rcvAutoMax = 0
		}
		c.cond.Broadcast()
	})
}

// KeepAliveConfig returns the keep-alive settings.
func (c *Conn) KeepAliveConfig() KeepAliveConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keepAlive
}
