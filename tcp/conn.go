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

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

type timerKind uint8

const (
	timerNone       timerKind = iota
	timerRetransmit           // RFC 6298; also SYN and SYN-ACK retransmission
	timerPersist              // RFC 9293 §3.8.6.1 zero-window probes, and SWS override
	timerFinWait2             // orphaned FIN-WAIT-2 (tcp_fin_timeout)
	timerTimeWait             // 2*MSL
	timerKeepalive            // RFC 9293 §3.8.4 keep-alives, while idle
	timerReorder              // RFC 8985 §6.2 RACK reordering window
	timerTLP                  // RFC 8985 §7 tail loss probe
)

var timerNames = [...]string{"off", "on", "persist", "timewait", "timewait", "keepalive", "on", "on"}

// maxOOO bounds the out-of-order ranges a connection remembers; together with the
// receive buffer it bounds reassembly memory.
const maxOOO = 16

type span struct{ start, end uint32 }

// KeepAliveConfig mirrors net.KeepAliveConfig.
type KeepAliveConfig struct {
	Enable   bool
	Idle     time.Duration
	Interval time.Duration
	Count    int
}

// Conn is one TCP connection endpoint. Its methods are safe for concurrent use.
type Conn struct {
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

	// Send sequence space (RFC 9293 §3.3.1). The send buffer holds the bytes from sndUna
	// on; sndMax is the highest sequence number sent so far (sndNxt goes back to sndUna on
	// a retransmission timeout).
	iss, sndUna, sndNxt, sndMax uint32
	sndWnd, maxSndWnd           uint32
	sndWl1, sndWl2              uint32
	sndWscale                   uint8
	wsPeer                      bool // the peer's SYN offered window scale
	sndBuf                      ring
	sndBufMax                   int
	finQueued                   bool
	finSeq                      uint32 // sequence number of our FIN, once queued
	mss                         int    // effective send MSS
	gsoMax                      int    // largest super-segment the route takes (transport.GSONetwork); 0: none
	segPay                      int    // payload per segment of the super-segment being built
	advMSS                      int    // the MSS we announce: route MTU minus headers

	// Receive sequence space.
	irs, rcvNxt uint32
	rcvAdv      uint32 // right edge of the window last advertised
	rcvWscale   uint8
	rcvBuf      ring
	rcvBufMax   int
	// Auto-tuning (Config.RMem/WMem): the limits buffers may grow to (0: fixed), and
	// the receiver's measurement of what the reader takes per RTT.
	rcvAutoMax, sndAutoMax int
	rcvCopied              int
	rcvSpaceAt             time.Time
	rcvRTT                 time.Duration // the receiver's RTT estimate from timestamps
	rcvRTTOK               bool
	rcvPeak                int // most unread bytes seen since the last auto-tuning step
	ooo                    [maxOOO]span
	nooo                   int
	oooFin                 bool
	oooFinSeq              uint32
	finRcvd                bool
	ackPending             int  // in-order segments not yet acknowledged
	ackNow                 bool // an ACK must go out when the current input is done

	// Timers.
	timer    clock.Timer
	tkind    timerKind
	tat      time.Time // when the current timer kind is due
	tsched   time.Time // when the underlying timer will fire; zero if not scheduled
	dack     clock.Timer
	dackOn   bool
	retries  int // consecutive retransmission timeouts
	probes   int // unanswered zero-window probes
	pbackoff int // persist timer backoff, kept while the window stays shut
	srtt     time.Duration
	rttvar   time.Duration
	rto      time.Duration
	rttOn    bool
	rttSeq   uint32
	rttStart time.Time
	twStart  time.Time
	kaSeen   bool      // a segment arrived since the keep-alive timer was armed
	oowLast  time.Time // last ACK sent for an out-of-window segment without data
	kaProbes int

	// Congestion control and loss recovery.
	cc         CongestionControl
	ccName     string // SetCongestionControl's choice; "" means Config's (cc.go)
	dupAcks    int
	inRecovery bool
	outPending bool       // in Protocol.pend: finishInput waits for the end of the link batch
	wmu        sync.Mutex // serializes writers (Write, ReadFrom): ReadFrom fills the buffer unlocked
	recover    uint32
	retrans    uint64 // segments retransmitted, for Sockets
	// rtoRecovery: the recovery began with a timeout (cwnd slow-starts, RFC 6675 §5.1).
	rtoRecovery bool
	// RFC 6937 proportional rate reduction during SACK recovery (sack.go, prrUpdate):
	// bytes delivered to the peer and sent by us since recovery began, the flight then,
	// and the limit for pipe until the next ACK.
	prrDelivered, prrOut, prrRecoverFS, prrLimit int

	// RFC 7323 timestamps: negotiated (tsOK), the peer's SYN offered them (tsPeer),
	// TS.Recent and when it was taken (for PAWS's 24-day rule, RFC 7323 §5.5), the
	// per-connection offset of our TSval clock, and Last.ACK.sent (RFC 7323 §4.3).
	tsOK, tsPeer bool
	tsOffset     uint32
	tsRecent     uint32
	tsRecentAt   time.Time
	lastAckSent  uint32

	// RFC 2018 SACK: negotiated (sackOK), the peer's SYN offered it (sackPeer); a D-SACK
	// block owed to the peer (RFC 2883); the sender's scoreboard and RACK-TLP state
	// (sack.go).
	sackOK, sackPeer  bool
	dsack             span
	dsackOn           bool
	sb                scoreboard
	rackValid         bool
	rackReord         bool // reordering seen (RFC 8985 §6.1 step 3)
	rackReoMult       int
	rackXmit          time.Duration
	rackEnd, rackFack uint32
	rackRTT           time.Duration
	rackMinRTT        time.Duration
	reoAt             time.Duration // when the RACK reordering timer is due; 0: not needed
	tlpOut            bool          // a tail loss probe is unanswered
	oooHeld           int           // out-of-order bytes counted in the stack-wide cap

	// RFC 5961 §7 challenge ACKs, rate-limited per socket.
	chStart time.Time
	chCount int
	// The clock, read at most once per locked operation: a clock read costs as much as
	// building a segment on some machines, and timestamps, the scoreboard and the timers
	// each want one. Every entry point that takes c.mu clears nowOK.
	nowT      time.Time
	nowOK     bool
	quickAcks int // in-order segments still acknowledged at once (as Linux's quickack)

	// User side.
	err        error // hard error, reported once to Read or Write
	errTaken   bool
	softErr    syscall.Errno
	userClosed bool
	rdShut     bool
	rd, wd     deadline
	nodelay    bool
	linger     int
	keepAlive  KeepAliveConfig
}

func (p *Protocol) newConn() *Conn {
	c := &Conn{
		p:           p,
		rto:         p.cfg.InitialRTO,
		sndBufMax:   p.cfg.WMem[1],
		rcvBufMax:   p.cfg.RMem[1],
		rcvAutoMax:  p.cfg.RMem[2],
		sndAutoMax:  p.cfg.WMem[2],
		nodelay:     true,
		linger:      -1,
		rackReoMult: 1,
		quickAcks:   16,
	}
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
	c.tsPeer, c.sackPeer = o.HasTimestamps && !c.p.cfg.NoTimestamps, o.SACKPermitted && !c.p.cfg.NoSACK
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
	c.cc = c.newCC(c.mss) // congestion-control hook (cc.go)
}

// LocalAddr and RemoteAddr return the connection's addresses.
func (c *Conn) LocalAddr() netip.AddrPort  { return c.local }
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
	src, mtu, err := p.net.Route(ra)
	if err != nil {
		return nil, err
	}
	la := local.Addr().Unmap()
	if la.IsValid() && !la.IsUnspecified() {
		if !p.net.IsLocal(la) {
			return nil, os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)
		}
		if la.Is4() != ra.Is4() {
			return nil, syscall.EAFNOSUPPORT
		}
		src = la
	}
	c := p.newConn()
	c.active = true
	c.remote = remote
	var b *ports.Binding
	if local.Port() != 0 || (la.IsValid() && !la.IsUnspecified()) {
		if !la.IsValid() {
			la = src
		}
		if b, err = p.mgr.Bind(netip.AddrPortFrom(la, local.Port()), opts.Bind, c); err != nil {
			return nil, os.NewSyscallError("bind", err)
		}
	}
	c.mu.Lock()
	nb, err := p.mgr.Connect(b, src, remote, c)
	if err != nil {
		c.mu.Unlock()
		if b != nil {
			b.Release()
		}
		return nil, err
	}
	c.bind = nb
	c.local = nb.Local()
	return c.activeOpen(ctx, mtu)
}

// activeOpen sends the SYN of a connection whose 4-tuple is registered and waits for the
// handshake to finish (RFC 9293 §3.5). c.mu is held on entry and released on return.
func (c *Conn) activeOpen(ctx context.Context, mtu int) (*Conn, error) {
	p := c.p
	c.setRoute(mtu)
	p.track(c)
	p.Stats.ActiveOpens.Add(1)
	c.iss = p.isn(c.local, c.remote)
	c.sndUna, c.sndNxt, c.sndMax, c.recover = c.iss, c.iss+1, c.iss+1, c.iss
	c.state = StateSynSent
	c.sendSYN()
	c.arm(timerRetransmit, c.rto)

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

// sendSYN sends our SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED), with the options negotiated
// in one place: MSS, and window scale (offered always in a SYN; in a SYN-ACK only if the
// peer offered it).
func (c *Conn) sendSYN() {
	var o wire.TCPOptions
	o.HasMSS, o.MSS = true, uint16(min(c.advMSS, 0xffff))
	flags := wire.TCPFlagSYN
	if c.state == StateSynReceived {
		flags |= wire.TCPFlagACK
		if c.wsPeer {
			o.HasWindowScale, o.WindowScale = true, c.rcvWscale
		}
		if c.tsPeer {
			o.HasTimestamps, o.TSVal, o.TSEcr = true, c.tsNow(), c.tsRecent
		}
		o.SACKPermitted = c.sackPeer
	} else {
		o.HasWindowScale, o.WindowScale = true, c.rcvWscale
		if !c.p.cfg.NoTimestamps {
			o.HasTimestamps, o.TSVal = true, c.tsNow()
		}
		o.SACKPermitted = !c.p.cfg.NoSACK
	}
	if c.retries == 0 && !c.rttOn {
		c.rttOn, c.rttSeq, c.rttStart = true, c.iss, c.now()
	}
	c.emit(c.iss, flags, 0, &o)
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

// emit builds one segment in a scratch buffer and hands it to the network: payload n
// bytes from the send buffer at seq. Timestamps and SACK blocks are added here unless the
// caller gives the options (a SYN). The caller holds c.mu.
func (c *Conn) emit(seq uint32, flags uint8, n int, opts *wire.TCPOptions) {
	var o wire.TCPOptions
	if opts == nil && (c.tsOK || c.sackOK) {
		if c.tsOK {
			o.HasTimestamps, o.TSVal, o.TSEcr = true, c.tsNow(), c.tsRecent
		}
		if c.sackOK && flags&wire.TCPFlagACK != 0 && (c.nooo > 0 || c.dsackOn) {
			c.sackBlocks(&o)
		}
		opts = &o
	}
	f := wire.TCPFields{
		SrcPort: c.local.Port(),
		DstPort: c.remote.Port(),
		Seq:     seq,
		Flags:   flags,
		Options: opts,
	}
	if flags&wire.TCPFlagACK != 0 {
		f.Ack = c.rcvNxt
		f.Window = c.windowField(flags&wire.TCPFlagSYN != 0)
		c.lastAckSent = c.rcvNxt
		c.ackPending, c.ackNow = 0, false
		if c.dackOn {
			c.dackOn = false
			c.dack.Stop()
		}
	}
	hl := f.HeaderLen()
	total := wire.NetworkHeadroom + hl + n
	bp := c.p.scratch(total)
	b := *bp
	f.Encode(b[wire.NetworkHeadroom:])
	if n > 0 {
		c.sndBuf.readAt(b[wire.NetworkHeadroom+hl:total], int(seq-c.sndUna))
	}
	if c.gsoMax > 0 && n > 0 {
		// Through the GSO link: a super-segment is cut there, copying our header into
		// each piece, and the link computes every piece's checksum (link.GSOEndpoint), a
		// single segment's too (the kernel behind a TUN device then needs no check of
		// its own): no pass over the payload here.
		mss := c.segPay
		if mss == 0 || n <= mss {
			mss = n
		}
		err := c.p.net.(transport.GSONetwork).OutputGSO(c.local.Addr(), c.remote.Addr(), b[:total], mss)
		if err == nil || n > mss {
			if err != nil {
				c.gsoMax = 0 // the route changed under us: segment ourselves from now on
			}
			c.p.release(bp)
			c.p.Stats.OutSegs.Add(uint64((n + mss - 1) / mss))
			return
		}
		// One segment the route would not take whole: send it the ordinary way.
		c.gsoMax = 0
	}
	wire.SetTCPChecksum(b[wire.NetworkHeadroom:total], c.local.Addr(), c.remote.Addr())
	c.p.net.Output(c.local.Addr(), c.remote.Addr(), wire.ProtoTCP, b[:total])
	c.p.release(bp)
	c.p.Stats.OutSegs.Add(1)
}

// windowField computes the window to advertise and remembers its right edge. Receiver SWS
// avoidance (RFC 9293 §3.8.6.2.2): the right edge moves only when it can move by at least
// min(buffer/2, MSS); it never moves left (RFC 9293 §3.8.6: do not shrink the window).
func (c *Conn) windowField(syn bool) uint16 {
	free := max(c.rcvBufMax-c.rcvBuf.n, 0)
	if syn {
		w := min(free, 0xffff) // RFC 7323 §2.2: the window in a SYN is never scaled
		c.rcvAdv = c.rcvNxt + uint32(w)
		return uint16(w)
	}
	cur := 0
	if seqGT(c.rcvAdv, c.rcvNxt) {
		cur = int(c.rcvAdv - c.rcvNxt)
	}
	w := cur
	if free >= cur+min(c.rcvBufMax/2, c.mss) {
		w = free
	}
	field := min(w>>c.rcvWscale, 0xffff)
	if field<<c.rcvWscale < cur {
		field = min((cur+(1<<c.rcvWscale)-1)>>c.rcvWscale, 0xffff)
	}
	c.rcvAdv = c.rcvNxt + uint32(field<<c.rcvWscale)
	return uint16(field)
}

// rcvWnd is the window currently offered to the peer.
func (c *Conn) rcvWnd() uint32 {
	if seqGT(c.rcvAdv, c.rcvNxt) {
		return c.rcvAdv - c.rcvNxt
	}
	return 0
}

// sendAck sends a bare ACK. Its sequence number is SND.MAX, not SND.NXT (as BSD): after a
// timeout SND.NXT goes back, and an ACK numbered below what the peer already has would
// fail its acceptance test, so the acknowledgment in it would be ignored.
func (c *Conn) sendAck() {
	c.emit(c.sndMax, wire.TCPFlagACK, 0, nil)
}

// sendData sends one segment at seq with up to limit bytes from the send buffer, with FIN if
// it reaches our FIN. It returns the sequence space used.
func (c *Conn) sendData(seq uint32, limit int) int {
	off := int(seq - c.sndUna)
	n := min(max(c.sndBuf.n-off, 0), limit)
	pay := c.mss
	if sl := c.sackOptLen(); sl > 0 {
		pay = max(c.mss-sl, 1) // SACK blocks share the segment's option space
	}
	c.segPay = 0
	if n > pay {
		if c.gsoMax > 0 && seq == c.sndMax {
			// New data as a super-segment of whole segments (and a last partial one).
			c.segPay = pay
		} else {
			n = pay
		}
	}
	flags := wire.TCPFlagACK
	fin := c.finQueued && seq+uint32(n) == c.finSeq
	if fin {
		flags |= wire.TCPFlagFIN
	}
	if n == 0 && !fin {
		return 0
	}
	if n > 0 && off+n == c.sndBuf.n {
		flags |= wire.TCPFlagPSH
	}
	used := n
	if fin {
		used++
	}
	end := seq + uint32(used)
	if c.inRecovery {
		c.prrOut += n // RFC 6937: prr_out counts retransmissions and new data alike
	}
	if seqLT(seq, c.sndMax) {
		// A retransmission: Karn's rule, no RTT sample from it (RFC 6298 §3).
		c.rttOn = false
		c.retrans++
		c.p.Stats.RetransSegs.Add(1)
	} else {
		if !c.rttOn {
			c.rttOn, c.rttSeq, c.rttStart = true, seq, c.now()
		}
		if c.sackOK {
			now := c.mono()
			for s := seq; seqLT(s, end); {
				e := end
				if c.segPay > 0 && int(end-s) > c.segPay {
					e = s + uint32(c.segPay) // one record per segment the link will cut
				}
				c.sb.push(s, e, now, c.mss)
				s = e
			}
		}
	}
	c.emit(seq, flags, n, nil)
	c.segPay = 0
	if seqGT(end, c.sndMax) {
		c.sndMax = end
	}
	return used
}

// output sends what the windows allow: new data, segmented by MSS, with sender SWS
// avoidance (RFC 9293 §3.8.6.2.1) and Nagle's algorithm when NoDelay is off; then the FIN.
func (c *Conn) output() {
	if !c.state.sending() {
		return
	}
	if c.sackOK && c.sb.lost > 0 {
		c.retransmitLost(false)
	}
	for {
		bufEnd := c.sndUna + uint32(c.sndBuf.n)
		pending := 0
		if seqLT(c.sndNxt, bufEnd) {
			pending = int(bufEnd - c.sndNxt)
		}
		finPending := c.finQueued && seqLEQ(c.sndNxt, c.finSeq)
		if pending == 0 && !finPending {
			break
		}
		inFlight := int(c.sndNxt - c.sndUna)
		usable := int(c.sndWnd) - inFlight
		if c.sackOK {
			// RFC 6675 §5: the congestion window limits pipe, which leaves out what the
			// peer SACKed and what is lost.
			usable = min(usable, c.cwndLimit()-c.pipe())
		} else {
			usable = min(usable, c.cc.Window()-inFlight)
		}
		seg := c.mss
		if c.gsoMax > 0 && c.sndNxt == c.sndMax {
			// GSO: as many whole segments as the windows allow in one super-segment.
			hdr := wire.TCPMinHeaderLen + tsOptLen + c.sackOptLen()
			seg = max(c.mss, min(usable/c.mss, (c.gsoMax-hdr)/c.mss)*c.mss)
		}
		n := min(pending, usable, seg)
		if pending > 0 {
			if n <= 0 {
				break
			}
			if n < c.mss && n < pending && n < int(c.maxSndWnd/2) {
				break // SWS avoidance: wait for a bigger window
			}
			if n < c.mss && n == pending && !c.nodelay && inFlight > 0 {
				break // Nagle (RFC 9293 §3.7.4)
			}
		}
		used := c.sendData(c.sndNxt, max(n, 0))
		if used == 0 {
			break
		}
		c.sndNxt += uint32(used)
	}
	c.updateTimer()
}

// updateTimer picks the timer the send side needs: retransmission while data is in
// flight, persist while data waits on a zero (or too small) window, none otherwise.
func (c *Conn) updateTimer() {
	switch c.state {
	case StateSynSent, StateSynReceived:
		return
	case StateTimeWait, StateClosed:
		return
	}
	inFlight := c.sndNxt != c.sndUna
	bufEnd := c.sndUna + uint32(c.sndBuf.n)
	pending := seqLT(c.sndNxt, bufEnd) || (c.finQueued && seqLEQ(c.sndNxt, c.finSeq))
	switch {
	case c.sndWnd == 0 && (pending || inFlight):
		if c.tkind != timerPersist {
			c.arm(timerPersist, c.backedOff())
		}
	case inFlight:
		if c.tkind != timerRetransmit && c.tkind != timerReorder && c.tkind != timerTLP {
			c.armLoss()
		}
	case pending:
		if c.tkind != timerPersist {
			c.arm(timerPersist, c.backedOff())
		}
	default:
		if c.keepAlive.Enable && (c.state == StateEstablished || c.state == StateCloseWait) {
			if c.tkind != timerKeepalive {
				c.kaSeen = false // the connection falls idle now
				c.arm(timerKeepalive, c.keepAliveIdle())
			}
		} else if c.tkind == timerRetransmit || c.tkind == timerPersist || c.tkind == timerKeepalive {
			c.disarm()
		}
	}
}

func (c *Conn) keepAliveIdle() time.Duration {
	if d := c.keepAlive.Idle; d > 0 {
		return d
	}
	return 15 * time.Second // Go's default
}

// onKeepalive probes an idle connection with <SEQ=SND.NXT-1> and no data, which the peer
// must acknowledge (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6); Count unanswered probes, Interval
// apart, end the connection with ETIMEDOUT. The timer is armed when the connection falls
// idle; segments arriving later only set kaSeen (no clock read per segment), so a
// connection that was active is given a fresh idle period: the first probe goes out
// between Idle and twice Idle after the last segment.
func (c *Conn) onKeepalive() {
	if !c.keepAlive.Enable || c.sndNxt != c.sndUna || !(c.state == StateEstablished || c.state == StateCloseWait) {
		c.updateTimer()
		return
	}
	if c.kaSeen {
		c.kaSeen, c.kaProbes = false, 0
		c.arm(timerKeepalive, c.keepAliveIdle())
		return
	}
	count := c.keepAlive.Count
	if count <= 0 {
		count = 9
	}
	if c.kaProbes >= count {
		c.fail(syscall.ETIMEDOUT)
		return
	}
	c.kaProbes++
	c.emit(c.sndNxt-1, wire.TCPFlagACK, 0, nil)
	iv := c.keepAlive.Interval
	if iv <= 0 {
		iv = 15 * time.Second
	}
	c.arm(timerKeepalive, iv)
}

func (c *Conn) backedOff() time.Duration {
	d := c.rto
	for i := 0; i < c.pbackoff && d < c.p.cfg.MaxRTO; i++ {
		d *= 2
	}
	return min(d, c.p.cfg.MaxRTO)
}

func (c *Conn) arm(kind timerKind, d time.Duration) {
	c.tkind = kind
	now := c.now()
	c.tat = now.Add(d)
	if c.timer == nil {
		c.timer = c.p.clk.AfterFunc(d, c.onTimer)
		c.tsched = c.tat
		return
	}
	if c.tsched.IsZero() || c.tat.Before(c.tsched) {
		c.timer.Reset(d)
		c.tsched = c.tat
	}
}

func (c *Conn) disarm() {
	c.tkind = timerNone
	if c.timer != nil && !c.tsched.IsZero() {
		c.timer.Stop()
		c.tsched = time.Time{}
	}
}

func (c *Conn) onTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
	c.tsched = time.Time{}
	if c.tkind == timerNone {
		return
	}
	now := c.p.clk.Now()
	if left := c.tat.Sub(now); left > 0 {
		c.timer.Reset(left)
		c.tsched = c.tat
		return
	}
	kind := c.tkind
	c.tkind = timerNone
	switch kind {
	case timerRetransmit:
		c.onRetransmit()
	case timerPersist:
		c.onPersist()
	case timerFinWait2, timerTimeWait:
		c.finish(nil)
	case timerKeepalive:
		c.onKeepalive()
	case timerReorder:
		c.onReorder()
	case timerTLP:
		c.onTLP()
	}
}

// onRetransmit handles an expired retransmission timer (RFC 6298 §5.4-5.6).
func (c *Conn) onRetransmit() {
	switch c.state {
	case StateSynSent, StateSynReceived:
		limit := c.p.cfg.SynRetries
		if !c.active {
			limit = c.p.cfg.SynAckRetries
		}
		if c.retries >= limit {
			c.fail(syscall.ETIMEDOUT)
			return
		}
		c.retries++
		c.backoff()
		c.rttOn = false
		c.retrans++
		c.p.Stats.RetransSegs.Add(1)
		c.sendSYN()
		c.arm(timerRetransmit, c.rto)
		return
	}
	if c.sndNxt == c.sndUna && c.sndMax == c.sndUna {
		c.updateTimer()
		return
	}
	if c.retries >= c.p.cfg.Retries {
		err := syscall.ETIMEDOUT
		if c.softErr != 0 {
			err = c.softErr
		}
		c.fail(err)
		return
	}
	c.retries++
	c.backoff()
	c.p.Stats.Timeouts.Add(1)
	c.cc.OnTimeout(int(c.sndMax - c.sndUna))
	c.inRecovery, c.dupAcks, c.recover = false, 0, c.sndMax
	c.rttOn = false
	if c.sbComplete() && c.sndWnd > 0 {
		c.rtoSACK()
		c.arm(timerRetransmit, c.rto)
		return
	}
	c.sb.reset()        // going back N: records of the old transmissions no longer apply
	c.sndNxt = c.sndUna // go back: resend from the first unacknowledged byte
	if c.sndWnd == 0 {
		c.updateTimer()
		return
	}
	c.sndNxt += uint32(c.sendData(c.sndUna, c.mss))
	c.arm(timerRetransmit, c.rto)
}

// onPersist sends a zero-window probe carrying one byte of new data (RFC 9293
// §3.8.6.1), or, when the window is open but too small for SWS avoidance, what fits.
// Probes back off exponentially; as long as the peer answers, the connection stays.
func (c *Conn) onPersist() {
	if c.probes > c.p.cfg.Retries {
		c.fail(syscall.ETIMEDOUT)
		return
	}
	c.probes++
	c.pbackoff++
	inFlight := int(c.sndNxt - c.sndUna)
	usable := min(int(c.sndWnd), c.cc.Window()) - inFlight
	if usable > 0 {
		c.sndNxt += uint32(c.sendData(c.sndNxt, min(usable, c.mss)))
	} else {
		used := c.sendData(c.sndUna, 1)
		if seqLT(c.sndNxt, c.sndUna+uint32(used)) {
			c.sndNxt = c.sndUna + uint32(used)
		}
	}
	// Still shut: the next probe, backed off. Data sent into an open window: the
	// retransmission timer covers it.
	c.updateTimer()
}

func (c *Conn) backoff() { c.rto = min(2*c.rto, c.p.cfg.MaxRTO) }

// rttSample updates SRTT, RTTVAR and RTO (RFC 6298 §2), with the RTO floored at MinRTO.
func (c *Conn) rttSample(r time.Duration) {
	r = max(r, time.Microsecond)
	if c.srtt == 0 {
		c.srtt, c.rttvar = r, r/2
	} else {
		d := c.srtt - r
		if d < 0 {
			d = -d
		}
		c.rttvar = (3*c.rttvar + d) / 4
		c.srtt = (7*c.srtt + r) / 8
	}
	c.rto = c.computedRTO()
	if c.cc != nil {
		c.cc.OnRTTSample(r, c.srtt) // CUBIC target, HyStart++ rounds (cc.go)
	}
}

func (c *Conn) computedRTO() time.Duration {
	if c.srtt == 0 {
		return c.p.cfg.InitialRTO
	}
	return min(max(c.srtt+max(time.Millisecond, 4*c.rttvar), c.p.cfg.MinRTO), c.p.cfg.MaxRTO)
}

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
	c.timeWait.Store(false)
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
		c.p.sendRST(c.local.Addr(), c.remote.Addr(), c.local.Port(), c.remote.Port(), c.sndMax, c.rcvNxt, true)
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
		if errno != syscall.EMSGSIZE {
			c.fail(errno) // RFC 1122 §4.2.3.9: hard errors abort an opening connection
		}
		return
	}
	if !c.state.synchronized() || seqLT(seq, c.sndUna) || !seqLT(seq, c.sndMax) {
		return
	}
	if errno == syscall.EMSGSIZE {
		if mtu <= 0 {
			return
		}
		ipHdr := 20
		if c.remote.Addr().Is6() {
			ipHdr = 40
		}
		m := mtu - ipHdr - wire.TCPMinHeaderLen
		if c.tsOK {
			m -= tsOptLen
		}
		// RFC 1191 §6.5 / RFC 8201 §5.4: lower the MSS and resend what is outstanding
		// in segments that fit.
		if m >= 64 && m < c.mss {
			c.mss = m
			c.cc.SetMSS(m)
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
			c.nowOK = false // Read may have waited
			c.rcvAutotune(n)
			c.windowUpdate()
			return n, nil
		}
		if c.rdShut {
			return 0, io.EOF
		}
		if err := c.takeErr(); err != nil {
			return 0, err
		}
		if c.finRcvd || c.state == StateClosed {
			return 0, io.EOF
		}
		if len(b) == 0 {
			return 0, nil
		}
		c.cond.Wait()
	}
}

// rcvAutotune grows the receive buffer toward what the reader takes in one RTT, twice
// over (Linux's tcp_rcv_space_adjust, "dynamic right-sizing"): the sender's window can
// double per RTT in slow start, and the window must not be what limits it. The RTT is
// the receiver's own estimate from timestamps when the millisecond clock can resolve it
// (2 ms or more), else SRTT (microseconds, from the handshake at least), else 100 ms: on
// a sub-millisecond path a 1 ms estimate would inflate buffers many times over.
func (c *Conn) rcvAutotune(n int) {
	if c.rcvAutoMax <= c.rcvBufMax {
		return
	}
	c.rcvCopied += n
	now := c.now()
	if c.rcvSpaceAt.IsZero() {
		c.rcvSpaceAt, c.rcvCopied = now, n
		return
	}
	rtt := c.rcvRTT
	if (!c.rcvRTTOK || rtt < 2*time.Millisecond) && c.srtt > 0 {
		rtt = c.srtt
	}
	if rtt == 0 {
		rtt = 100 * time.Millisecond
	}
	if now.Sub(c.rcvSpaceAt) < rtt {
		return
	}
	want := 2*c.rcvCopied + 16*c.advMSS
	peak := c.rcvPeak
	c.rcvSpaceAt, c.rcvCopied, c.rcvPeak = now, 0, 0
	// A reader that left half the buffer unread is what limits the transfer, not the
	// window: a bigger buffer would only hold more unread data (and cost cache).
	if want > c.rcvBufMax && peak <= c.rcvBufMax/2 {
		// Never beyond what the window field can announce with the fixed scale.
		c.rcvBufMax = min(want, c.rcvAutoMax, 0xffff<<c.rcvWscale)
	}
}

// sndAutotune grows the send buffer to twice the window the sender can use (Linux's
// tcp_sndbuf_expand), so that a write can always fill the path.
func (c *Conn) sndAutotune() {
	if c.sndAutoMax <= c.sndBufMax {
		return
	}
	if want := 2 * min(c.cc.Window(), int(c.maxSndWnd)); want > c.sndBufMax {
		c.sndBufMax = min(want, c.sndAutoMax)
		c.cond.Broadcast()
	}
}

// windowUpdate sends an ACK when reading opened the window a lot: from (almost) zero to
// at least an MSS, or to twice what was offered (as Linux's tcp_cleanup_rbuf).
func (c *Conn) windowUpdate() {
	if !c.state.receiving() {
		return
	}
	cur := int(c.rcvWnd())
	free := c.rcvBufMax - c.rcvBuf.n
	step := min(c.rcvBufMax/2, c.mss)
	if free-cur >= step && (cur < step || free >= 2*cur) {
		c.sendAck()
	}
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
	case StateSynSent, StateSynReceived:
		return true, nil
	}
	return false, syscall.EPIPE
}

// Write queues b for sending, blocking while the send buffer is full.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nowOK = false
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
			return n, nil
		}
		// After waiting for space, go on once ACKs woke us (sndWritable) or what is
		// left fits; not for every few bytes freed.
		if space := c.sndBufMax - c.sndBuf.n; space > 0 && (!waited || space >= len(b) || c.sndWritable()) {
			c.nowOK = false // Write may have waited
			k := min(space, len(b))
			c.sndBuf.reserve(c.sndBuf.n+k, c.sndBufMax, c.sndBuf.n)
			c.sndBuf.writeAt(b[:k], c.sndBuf.n)
			c.sndBuf.n += k
			n += k
			b = b[k:]
			c.output()
			continue
		}
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
			c.cond.Wait()
			continue
		}
		k := min(space, readFromChunk)
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

// CloseRead ends reading (shutdown(SHUT_RD)): Read returns io.EOF; data that arrives later
// is acknowledged and dropped.
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
	c.rcvBuf.consume(c.rcvBuf.n)
	c.windowUpdate()
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

func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userClosed {
		return net.ErrClosed
	}
	c.rd.set(c.p.clk, t, &c.mu, &c.cond)
	return nil
}

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
			c.output()
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
