package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berthnet/berth/wire"
)

// Largest ICMP error messages: RFC 1812 §4.3.2.3 (the whole message fits in 576 bytes) and
// RFC 4443 §2.4(c) (it fits in the IPv6 minimum MTU, 1280 bytes).
const (
	icmp4MaxQuote = 576 - wire.IPv4MinHeaderLen - wire.ICMPv4HeaderLen
	icmp6MaxQuote = 1280 - wire.IPv6HeaderLen - wire.ICMPv6HeaderLen
)

// icmp4Input handles an ICMPv4 message addressed to us (RFC 792, RFC 1122 §3.2.2).
func (s *Stack) icmp4Input(ifc *Interface, ip []byte, src, dst netip.Addr, payload []byte) {
	c := &s.icmp4
	c.InMsgs.Add(1)
	m, err := wire.ParseICMPv4(payload)
	if err != nil {
		if len(payload) >= wire.ICMPv4HeaderLen {
			c.InCsumErrors.Add(1)
		}
		c.InErrors.Add(1)
		return
	}
	s.rawDeliver(false, src, dst, m)
	switch m.Type() {
	case wire.ICMPv4EchoRequest:
		// RFC 1122 §3.2.2.6: reply with the same identifier, sequence and data.
		c.InEchos.Add(1)
		s.sendEcho(src, dst, wire.ICMPv4EchoReply, m.ID(), m.Seq(), m.Payload())
	case wire.ICMPv4EchoReply:
		c.InEchoReps.Add(1)
		s.pinger.reply(false, src, m.ID(), m.Seq(), m.Payload())
	case wire.ICMPv4DestUnreachable:
		c.InDestUnreachs.Add(1)
		mtu := 0
		if m.Code() == wire.ICMPv4CodeFragNeeded {
			mtu = int(m.MTU()) // clamped once the quote names the path (icmp4ToTransport)
		}
		s.icmp4ToTransport(m, unreach4Errno(m.Code()), mtu)
	case wire.ICMPv4TimeExceeded:
		c.InTimeExcds.Add(1)
		s.icmp4ToTransport(m, syscall.ETIMEDOUT, 0)
	case wire.ICMPv4ParamProblem:
		c.InParmProbs.Add(1)
		s.icmp4ToTransport(m, syscall.EPROTO, 0)
	}
	// Source quench (RFC 6633) and redirects (hosts on bare IP links have no use for them)
	// are ignored, as are unknown types (RFC 1122 §3.2.2).
}

// unreach4Errno maps destination unreachable codes as Linux's icmp_err_convert does.
func unreach4Errno(code uint8) syscall.Errno {
	switch code {
	case wire.ICMPv4CodeNetUnreachable, wire.ICMPv4CodeNetUnknown, wire.ICMPv4CodeNetProhibited,
		wire.ICMPv4CodeNetUnreachableTOS:
		return syscall.ENETUNREACH
	case wire.ICMPv4CodeProtocolUnreachable:
		return syscall.ENOPROTOOPT
	case wire.ICMPv4CodePortUnreachable:
		return syscall.ECONNREFUSED
	case wire.ICMPv4CodeFragNeeded:
		return syscall.EMSGSIZE
	case wire.ICMPv4CodeSourceRouteFailed:
		return syscall.EOPNOTSUPP
	case wire.ICMPv4CodeHostUnknown:
		return syscall.EHOSTDOWN
	case wire.ICMPv4CodeHostIsolated:
		return syscall.ENONET
	}
	return syscall.EHOSTUNREACH
}

// icmp4ToTransport delivers an ICMP error to the protocol of the datagram it quotes
// (RFC 1122 §3.2.2: the quote's protocol and ports identify the socket).
func (s *Stack) icmp4ToTransport(m wire.ICMPv4, errno syscall.Errno, mtu int) {
	q, err := wire.ParseIPv4Quote(m.Payload())
	if err != nil || q.FragmentOffset() != 0 || !s.IsLocal(q.Src()) {
		s.icmp4.InErrors.Add(1)
		return
	}
	tp := q.Payload()
	if len(tp) < 8 {
		s.icmp4.InErrors.Add(1)
		return
	}
	if q.Protocol() == wire.ProtoICMPv4 {
		if tp[0] == wire.ICMPv4EchoRequest {
			s.pinger.fail(false, binary.BigEndian.Uint16(tp[4:]), binary.BigEndian.Uint16(tp[6:]), errno)
		}
		return
	}
	if errno == syscall.EMSGSIZE {
		if mtu < minPMTU4 {
			s.pmtu.lock(q.Dst(), s.clk.Now())
		}
		mtu = s.pmtuFloor(q.Dst(), mtu)
	}
	if h := s.transports.Load()[q.Protocol()]; h != nil {
		h.HandleICMPError(q.Src(), q.Dst(), tp, errno, mtu)
	}
}

// Path MTU floors. An ICMP error is easily forged (RFC 5927 §7): a "fragmentation needed"
// with next-hop MTU 0, 68 or 104 quoting a live connection would cut its segments to a
// few dozen bytes. Like Linux (__ip_rt_update_pmtu), a reported IPv4 MTU below
// net.ipv4.route.min_pmtu counts as min_pmtu (RFC 1191 §5's plateau guess for an old
// router's 0 also lands there); RFC 8201 §4: an IPv6 node never lowers its path MTU below
// the minimum link MTU, 1280 (a smaller report may be a forgery, or a translator's).
const (
	minPMTU4 = 552  // net.ipv4.route.min_pmtu: 512 + 20 + 20
	minPMTU6 = 1280 // RFC 8200 §5: the IPv6 minimum link MTU
)

// pmtuLocks remembers IPv4 destinations whose path MTU was reported below min_pmtu, for
// net.ipv4.route.mtu_expires. Linux locks such a route's MTU at min_pmtu and sends
// without DF (ip_dont_fragment), so a path that really is that narrow still works, by
// fragmentation at the router, while the MTU cannot be driven lower. The table is a
// fixed hashed array (a flood of forged errors costs no memory; a collision forgets a
// lock, erring towards DF), and the packet path reads one atomic when it is empty.
type pmtuLocks struct {
	n     atomic.Int32 // slots in use, expired or not
	mu    sync.Mutex
	slots [64]pmtuLock
}

type pmtuLock struct {
	dst   netip.Addr
	until time.Time
}

// mtuExpires is net.ipv4.route.mtu_expires.
const mtuExpires = 600 * time.Second

func (l *pmtuLocks) slot(dst netip.Addr) *pmtuLock {
	a := dst.As16()
	h := binary.LittleEndian.Uint64(a[8:]) * 0x9e3779b97f4a7c15
	return &l.slots[h>>58]
}

func (l *pmtuLocks) lock(dst netip.Addr, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.slot(dst)
	if !e.dst.IsValid() {
		l.n.Add(1)
	}
	*e = pmtuLock{dst, now.Add(mtuExpires)}
}

// locked reports whether packets to dst go without DF; it forgets an expired lock.
func (l *pmtuLocks) locked(dst netip.Addr, clk interface{ Now() time.Time }) bool {
	if l.n.Load() == 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.slot(dst)
	if e.dst != dst {
		return false
	}
	if !clk.Now().Before(e.until) {
		*e = pmtuLock{}
		l.n.Add(-1)
		return false
	}
	return true
}

// pmtuFloor is the path MTU a "fragmentation needed" / Packet Too Big reporting mtu for
// the path to dst may set: at least the family's floor, unless dst's own link is smaller
// still (then the link's MTU, which no report can go under anyway).
func (s *Stack) pmtuFloor(dst netip.Addr, mtu int) int {
	floor := minPMTU6
	if dst.Is4() {
		floor = minPMTU4
	}
	if ifc, _, err := s.resolve(dst); err == nil {
		floor = min(floor, ifc.mtu)
	}
	return max(mtu, floor)
}

// icmp6Input handles an ICMPv6 message addressed to us (RFC 4443).
func (s *Stack) icmp6Input(ifc *Interface, ip []byte, src, dst netip.Addr, payload []byte) {
	c := &s.icmp6
	c.InMsgs.Add(1)
	m, err := wire.ParseICMPv6(payload, src, dst)
	if err != nil {
		if len(payload) >= wire.ICMPv6HeaderLen {
			c.InCsumErrors.Add(1)
		}
		c.InErrors.Add(1)
		return
	}
	s.rawDeliver(true, src, dst, m)
	switch m.Type() {
	case wire.ICMPv6EchoRequest:
		// RFC 4443 §4.2.
		c.InEchos.Add(1)
		s.sendEcho(src, dst, wire.ICMPv6EchoReply, m.ID(), m.Seq(), m.Payload())
	case wire.ICMPv6EchoReply:
		c.InEchoReps.Add(1)
		s.pinger.reply(true, src, m.ID(), m.Seq(), m.Payload())
	case wire.ICMPv6DestUnreachable:
		c.InDestUnreachs.Add(1)
		s.icmp6ToTransport(m, unreach6Errno(m.Code()), 0)
	case wire.ICMPv6PacketTooBig:
		c.InPktTooBigs.Add(1)
		s.icmp6ToTransport(m, syscall.EMSGSIZE, int(min(m.MTU(), 0xffff)))
	case wire.ICMPv6TimeExceeded:
		c.InTimeExcds.Add(1)
		s.icmp6ToTransport(m, syscall.ETIMEDOUT, 0)
	case wire.ICMPv6ParamProblem:
		c.InParmProbs.Add(1)
		s.icmp6ToTransport(m, syscall.EPROTO, 0)
	}
	// Neighbor Discovery and MLD are not used: berth's links carry bare IP packets.
}

// unreach6Errno maps codes as Linux's icmpv6_err_convert does.
func unreach6Errno(code uint8) syscall.Errno {
	switch code {
	case wire.ICMPv6CodeNoRoute:
		return syscall.ENETUNREACH
	case wire.ICMPv6CodeAdminProhibited:
		return syscall.EACCES
	case wire.ICMPv6CodePortUnreachable:
		return syscall.ECONNREFUSED
	}
	return syscall.EHOSTUNREACH
}

func (s *Stack) icmp6ToTransport(m wire.ICMPv6, errno syscall.Errno, mtu int) {
	q := wire.IPv6(m.Payload())
	if len(q) < wire.IPv6HeaderLen || q[0]>>4 != 6 || !s.IsLocal(q.Src()) {
		s.icmp6.InErrors.Add(1)
		return
	}
	proto, off, frag, ok := walk6(q)
	if ok && frag >= 0 {
		fh := q[frag : frag+8]
		if binary.BigEndian.Uint16(fh[2:])&^7 != 0 {
			return // a later fragment: no transport header quoted
		}
		proto, off = fh[0], frag+8
	}
	if !ok || len(q)-off < 8 {
		s.icmp6.InErrors.Add(1)
		return
	}
	tp := q[off:]
	if proto == wire.ProtoICMPv6 {
		if tp[0] == wire.ICMPv6EchoRequest {
			s.pinger.fail(true, binary.BigEndian.Uint16(tp[4:]), binary.BigEndian.Uint16(tp[6:]), errno)
		}
		return
	}
	if errno == syscall.EMSGSIZE {
		mtu = s.pmtuFloor(q.Dst(), mtu)
	}
	if h := s.transports.Load()[proto]; h != nil {
		h.HandleICMPError(q.Src(), q.Dst(), tp, errno, mtu)
	}
}

// sendEcho sends an echo request or reply from src to dst.
func (s *Stack) sendEcho(to, from netip.Addr, typ uint8, id, seq uint16, data []byte) {
	// The largest echo: an IPv4 datagram of 65535 bytes (Linux's `ping -s 65507`), an IPv6
	// payload of 65535 (`ping -6 -s 65527`).
	lim := 0xffff - 8 - wire.IPv4MinHeaderLen
	if to.Is6() {
		lim = 0xffff - 8
	}
	if len(data) > lim {
		return
	}
	ifc, rsrc, err := s.resolveFrom(from, to) // a link-local asker: back through its link
	if err != nil {
		return
	}
	if !from.IsValid() || !s.IsLocal(from) {
		from = rsrc
	}
	bp := getBuf(wire.NetworkHeadroom + 8 + len(data))
	defer putBuf(bp)
	pkt := (*bp)[:wire.NetworkHeadroom+8+len(data)]
	msg := pkt[wire.NetworkHeadroom:]
	copy(msg[8:], data)
	var c *icmpCounters
	if to.Is4() {
		c = &s.icmp4
		f := wire.ICMPv4Fields{Type: typ, ID: id, Seq: seq}
		f.Encode(msg)
		wire.SetICMPv4Checksum(msg)
		_ = s.outputIP(ifc, from, to, wire.ProtoICMPv4, pkt, false, s.opts.DefaultTTL)
	} else {
		c = &s.icmp6
		f := wire.ICMPv6Fields{Type: typ, ID: id, Seq: seq}
		f.Encode(msg)
		wire.SetICMPv6Checksum(msg, from, to)
		_ = s.outputIP(ifc, from, to, wire.ProtoICMPv6, pkt, false, s.opts.DefaultTTL)
	}
	c.OutMsgs.Add(1)
	if typ == wire.ICMPv4EchoReply || typ == wire.ICMPv6EchoReply {
		c.OutEchoReps.Add(1)
	} else {
		c.OutEchos.Add(1)
	}
}

// icmp4Error answers the IPv4 packet orig (header included) with an ICMP error, unless
// RFC 1122 §3.2.2 / RFC 1812 §4.3.2.7 forbid it or the rate limit says no.
func (s *Stack) icmp4Error(in *Interface, orig []byte, typ, code uint8, mtu int) {
	h := wire.IPv4(orig)
	if len(h) < wire.IPv4MinHeaderLen {
		return
	}
	src, dst := h.Src(), h.Dst()
	if h.FragmentOffset() != 0 || martian4(in, src) || dst.IsMulticast() ||
		dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return
	}
	if h.Protocol() == wire.ProtoICMPv4 {
		p := h.Payload()
		// Never an error about an error (or about a message too short to tell).
		if len(p) < 1 || wire.ICMPv4(p).IsError() || p[0] > wire.ICMPv4ParamProblem+6 {
			return
		}
	}
	s.sendICMPError(in, false, src, dst, orig[:min(len(orig), wire.IPv4MinHeaderLen+icmp4MaxQuote)], typ, code, mtu)
}

// icmp6Error answers orig (an IPv6 packet) with an ICMPv6 error, following RFC 4443 §2.4(e).
func (s *Stack) icmp6Error(in *Interface, orig []byte, typ, code uint8, mtu int) {
	h := wire.IPv6(orig)
	if len(h) < wire.IPv6HeaderLen {
		return
	}
	src, dst := h.Src(), h.Dst()
	if src.IsUnspecified() || src.IsMulticast() {
		return
	}
	// RFC 4443 §2.4(e.3): a multicast destination is answered only with Packet Too Big,
	// or with Parameter Problem code 2 for an option whose action asks for it (the caller
	// checks the action: RFC 8200 §4.2).
	if dst.IsMulticast() && typ != wire.ICMPv6PacketTooBig &&
		(typ != wire.ICMPv6ParamProblem || code != wire.ICMPv6CodeUnrecognizedOption) {
		return
	}
	if proto, off, _, ok := walk6(h); ok && proto == wire.ProtoICMPv6 {
		if len(h)-off < 1 || h[off] < 128 {
			return
		}
	}
	s.sendICMPError(in, true, src, dst, orig[:min(len(orig), wire.IPv6HeaderLen+icmp6MaxQuote)], typ, code, mtu)
}

func (s *Stack) sendICMPError(in *Interface, v6 bool, origSrc, origDst netip.Addr, quote []byte, typ, code uint8, mtu int) {
	c := &s.icmp4
	if v6 {
		c = &s.icmp6
	}
	// Linux does not rate-limit towards loopback (icmpv4_xrlim_allow).
	if !in.loopback && !s.rl.allow(origSrc, s.clk.Now(), c) {
		return
	}
	ifc, rsrc, err := s.resolveFrom(origDst, origSrc)
	if err != nil {
		return
	}
	from := rsrc
	if s.IsLocal(origDst) && !origDst.IsMulticast() {
		from = origDst // answer from the address the packet was sent to
	}
	n := wire.NetworkHeadroom + 8 + len(quote)
	bp := getBuf(n)
	defer putBuf(bp)
	pkt := (*bp)[:n]
	msg := pkt[wire.NetworkHeadroom:]
	copy(msg[8:], quote)
	c.OutMsgs.Add(1)
	if !v6 {
		// mtu doubles as the pointer of a parameter problem (RFC 792).
		f := wire.ICMPv4Fields{Type: typ, Code: code, MTU: uint16(mtu), Pointer: uint8(mtu)}
		f.Encode(msg)
		wire.SetICMPv4Checksum(msg)
		switch typ {
		case wire.ICMPv4DestUnreachable:
			c.OutDestUnreachs.Add(1)
		case wire.ICMPv4TimeExceeded:
			c.OutTimeExcds.Add(1)
		case wire.ICMPv4ParamProblem:
			c.OutParmProbs.Add(1)
		}
		_ = s.outputIP(ifc, from, origSrc, wire.ProtoICMPv4, pkt, false, s.opts.DefaultTTL)
		return
	}
	// mtu doubles as the pointer of a parameter problem (RFC 4443 §3.4).
	f := wire.ICMPv6Fields{Type: typ, Code: code, MTU: uint32(mtu), Pointer: uint32(mtu)}
	f.Encode(msg)
	wire.SetICMPv6Checksum(msg, from, origSrc)
	switch typ {
	case wire.ICMPv6DestUnreachable:
		c.OutDestUnreachs.Add(1)
	case wire.ICMPv6TimeExceeded:
		c.OutTimeExcds.Add(1)
	case wire.ICMPv6ParamProblem:
		c.OutParmProbs.Add(1)
	case wire.ICMPv6PacketTooBig:
		c.OutPktTooBigs.Add(1)
	}
	_ = s.outputIP(ifc, from, origSrc, wire.ProtoICMPv6, pkt, false, s.opts.DefaultTTL)
}

// rateLimiter is Linux's ICMP output limiting: a global credit (icmp_msgs_per_sec,
// icmp_msgs_burst) and a per-destination token bucket (inet_peer_xrlim_allow: one message per
// icmp_ratelimit, burst of 6). Destinations live in a fixed hashed table, so a flood of
// spoofed sources costs no memory; a collision resets the slot (erring towards sending).
type rateLimiter struct {
	mu       sync.Mutex
	off      bool
	interval time.Duration
	perSec   float64
	burst    float64
	credit   float64
	last     time.Time
	hosts    [256]hostBucket
}

type hostBucket struct {
	addr   netip.Addr
	tokens time.Duration
	last   time.Time
}

const xrlimBurstFactor = 6

func (r *rateLimiter) init(o *Options, now time.Time) {
	r.off = o.NoICMPRateLimit
	r.interval = o.ICMPRateLimit
	r.perSec = float64(o.ICMPMsgsPerSec)
	r.burst = float64(o.ICMPMsgsBurst)
	r.credit = r.burst
	r.last = now
}

func (r *rateLimiter) allow(dst netip.Addr, now time.Time, c *icmpCounters) bool {
	if r.off {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.credit = min(r.burst, r.credit+now.Sub(r.last).Seconds()*r.perSec)
	r.last = now
	if r.credit < 1 {
		c.OutRateLimitGlobal.Add(1)
		return false
	}
	a := dst.As16()
	h := binary.LittleEndian.Uint64(a[:8]) ^ binary.LittleEndian.Uint64(a[8:])*0x9e3779b97f4a7c15
	b := &r.hosts[(h>>56)&0xff]
	if b.addr != dst {
		*b = hostBucket{addr: dst, tokens: xrlimBurstFactor * r.interval, last: now}
	} else {
		b.tokens = min(xrlimBurstFactor*r.interval, b.tokens+now.Sub(b.last))
		b.last = now
	}
	if b.tokens < r.interval {
		c.OutRateLimitHost.Add(1)
		return false
	}
	b.tokens -= r.interval
	r.credit--
	return true
}

// pinger matches echo replies to Ping calls.
type pinger struct {
	mu      sync.Mutex
	nextID  uint16
	waiters map[pingKey]*pingWaiter
	done    chan struct{}
	closed  bool
}

type pingKey struct {
	v6      bool
	id, seq uint16
}

type pingWaiter struct {
	peer    netip.Addr
	payload []byte
	ch      chan error
}

func (p *pinger) init(id uint16) {
	p.nextID = id
	p.waiters = map[pingKey]*pingWaiter{}
	p.done = make(chan struct{})
}

func (p *pinger) reply(v6 bool, from netip.Addr, id, seq uint16, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := pingKey{v6, id, seq}
	if w, ok := p.waiters[k]; ok && w.peer == from && bytes.Equal(w.payload, data) {
		delete(p.waiters, k)
		w.ch <- nil
	}
}

func (p *pinger) fail(v6 bool, id, seq uint16, errno syscall.Errno) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := pingKey{v6, id, seq}
	if w, ok := p.waiters[k]; ok {
		delete(p.waiters, k)
		w.ch <- errno
	}
}

func (p *pinger) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.done)
	}
}

// Ping sends one ICMP or ICMPv6 echo request (RFC 792, RFC 4443 §4.1) to dst with sequence
// number seq and the given data, and waits for the matching reply. It returns the round-trip
// time measured on the stack's clock. An ICMP error about the request ends the wait with its
// errno (e.g. EHOSTUNREACH); ctx ends it with ctx.Err().
func (s *Stack) Ping(ctx context.Context, dst netip.Addr, seq uint16, data []byte) (time.Duration, error) {
	dst = dst.Unmap()
	if _, _, err := s.Route(dst); err != nil {
		return 0, err
	}
	w := &pingWaiter{peer: dst, payload: bytes.Clone(data), ch: make(chan error, 1)}
	p := &s.pinger
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, net.ErrClosed
	}
	var k pingKey
	for range 1 << 16 {
		p.nextID++
		k = pingKey{!dst.Is4(), p.nextID, seq}
		if _, busy := p.waiters[k]; !busy {
			break
		}
	}
	p.waiters[k] = w
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		if p.waiters[k] == w {
			delete(p.waiters, k)
		}
		p.mu.Unlock()
	}()
	typ := wire.ICMPv4EchoRequest
	if !dst.Is4() {
		typ = wire.ICMPv6EchoRequest
	}
	start := s.clk.Now()
	s.sendEcho(dst, netip.Addr{}, typ, k.id, seq, data)
	select {
	case err := <-w.ch:
		if err != nil {
			return 0, err
		}
		return s.clk.Now().Sub(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-p.done:
		return 0, net.ErrClosed
	}
}
