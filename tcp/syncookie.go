package tcp

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"

	"github.com/berthnet/berth/wire"
)

// SYN cookies (RFC 4987 §3.6), as Linux builds them (net/ipv4/syncookies.c): when a
// listener's SYN queue is full the SYN-ACK's sequence number encodes what the connection
// needs, so no state is kept until the peer's ACK returns it.
//
//	ISS = H0(secret, 4-tuple) + peer's ISN + (t << 24) + ((H1(secret, 4-tuple, t, TSval) + mssIndex) mod 2^24)
//
// t is a counter of cookiePeriod (64 s) periods; an ACK is valid when ack-1 decodes with
// a counter at most maxCookieAge-1 periods old and an index inside the MSS table.
//
// Unlike Linux, H1 also covers the SYN-ACK's TSval (0 without timestamps), which the
// ACK must echo as TSecr. Without it any later ACK of an earlier cookie connection on
// the same 4-tuple decodes as valid whenever both sides have sent as many bytes (ack-1
// and seq-1 move together): a peer in TIME-WAIT answering a retransmitted FIN after our
// side closed then opened a ghost connection in the accept queue that no peer owns. Such
// an ACK echoes a later TSval, so with timestamps it now fails like a forged one. Without
// timestamps only the MSS survives (window scale and SACK are off for such connections,
// as in Linux's tcp_conn_request, which clears the options when the peer sent no
// timestamp); with timestamps Linux's cookie_init_timestamp carries window scale, SACK
// and ECN in the low 6 bits of TSval — encodeCookieTS/decodeCookieTS below.

// SynCookieMode is tcp_syncookies. The zero value is the default, Linux's 1.
type SynCookieMode int8

const (
	// SynCookiesOnOverflow sends cookies only when a SYN queue is full (Linux
	// tcp_syncookies=1, the default).
	SynCookiesOnOverflow SynCookieMode = 0
	// SynCookiesAlways answers every SYN with a cookie (Linux tcp_syncookies=2).
	SynCookiesAlways SynCookieMode = 2
	// SynCookiesNever never sends cookies: SYNs beyond the queues are dropped and counted
	// (Linux tcp_syncookies=0; -1 here because Go's zero value means the default).
	SynCookiesNever SynCookieMode = -1
)

// SynCookiesSysctl maps a Linux tcp_syncookies value (0, 1, 2) to a SynCookieMode.
func SynCookiesSysctl(v int) SynCookieMode {
	switch v {
	case 0:
		return SynCookiesNever
	case 2:
		return SynCookiesAlways
	}
	return SynCookiesOnOverflow
}

// Sysctl returns the mode as Linux's tcp_syncookies value.
func (m SynCookieMode) Sysctl() int {
	switch m {
	case SynCookiesNever:
		return 0
	case SynCookiesAlways:
		return 2
	}
	return 1
}

const (
	cookieBits   = 24
	cookieMask   = 1<<cookieBits - 1
	cookiePeriod = 64 // seconds per counter step (Linux: TCP_SYNCOOKIE_PERIOD)
	maxCookieAge = 2  // counter values accepted: this period and the one before
)

// The MSS values a cookie can carry (two bits), as Linux's msstab for IPv4 and IPv6:
// the common path MSSs, so that a cookie connection rarely loses much.
var (
	msstab4 = [4]uint16{536, 1300, 1440, 1460}
	msstab6 = [4]uint16{1280 - 60, 1480 - 60, 1500 - 60, 9000 - 60}
)

func msstab(remote netip.Addr) *[4]uint16 {
	if remote.Is6() && !remote.Is4In6() {
		return &msstab6
	}
	return &msstab4
}

// cookieMSSIndex picks the largest table entry not above the peer's MSS.
func cookieMSSIndex(tab *[4]uint16, mss uint16) uint32 {
	i := len(tab) - 1
	for ; i > 0; i-- {
		if mss >= tab[i] {
			break
		}
	}
	return uint32(i)
}

// cookieCounter is the coarse time counter t.
func (p *Protocol) cookieCounter() uint32 {
	return uint32(p.clk.Now().Unix() / cookiePeriod)
}

// cookieHash is a keyed hash of the 4-tuple, c and x; which separates H0 and H1 (and both
// from the RFC 6528 ISN hash, which uses the same secret without a domain byte).
func (p *Protocol) cookieHash(local, remote netip.AddrPort, c, x uint32, which byte) uint32 {
	var b [16 + 1 + 36 + 4 + 4]byte
	copy(b[:16], p.secret[:])
	b[16] = which
	la, ra := local.Addr().As16(), remote.Addr().As16()
	copy(b[17:], la[:])
	copy(b[33:], ra[:])
	binary.BigEndian.PutUint16(b[49:], local.Port())
	binary.BigEndian.PutUint16(b[51:], remote.Port())
	binary.BigEndian.PutUint32(b[53:], c)
	binary.BigEndian.PutUint32(b[57:], x)
	h := sha256.Sum256(b[:])
	return binary.BigEndian.Uint32(h[:])
}

// makeCookie returns the ISS for a SYN from remote with sequence number sseq, answered
// with TSval tsval (0: no timestamps).
func (p *Protocol) makeCookie(local, remote netip.AddrPort, sseq, count, data, tsval uint32) uint32 {
	return p.cookieHash(local, remote, 0, 0, 'c') + sseq + count<<cookieBits +
		(p.cookieHash(local, remote, count, tsval, 'C')+data)&cookieMask
}

// checkCookie recovers the data (MSS index) from cookie, the ISS our SYN-ACK carried,
// given the TSecr the ACK echoed (0: no timestamps); ok is false if the cookie is forged
// or older than maxCookieAge periods.
func (p *Protocol) checkCookie(local, remote netip.AddrPort, cookie, sseq, count, tsecr uint32) (data uint32, ok bool) {
	cookie -= p.cookieHash(local, remote, 0, 0, 'c') + sseq
	diff := (count - cookie>>cookieBits) & (0xffffffff >> cookieBits)
	if diff >= maxCookieAge {
		return 0, false
	}
	return (cookie - p.cookieHash(local, remote, count-diff, tsecr, 'C')) & cookieMask, true
}

// Low bits of a cookie connection's TSval (Linux's TS_OPT_*): window scale (15 = none),
// SACK permitted, ECN.
const (
	tsOptWscaleMask = 0xf
	tsOptSACK       = 1 << 4
	tsOptECN        = 1 << 5
	tsOptBits       = 6
	tsOptMask       = 1<<tsOptBits - 1
)

// encodeCookieTS is Linux's cookie_init_timestamp: the TSval of a cookie SYN-ACK is our
// clock now with its low 6 bits replaced by the peer's SYN options, stepped back one
// unit of 64 if that put it in the future (RFC 7323 §5.4: TSval must not run ahead).
func encodeCookieTS(now uint32, wscale uint8, hasWS, sack, ecn bool) uint32 {
	opts := uint32(tsOptWscaleMask)
	if hasWS {
		opts = uint32(wscale) & tsOptWscaleMask
	}
	if sack {
		opts |= tsOptSACK
	}
	if ecn {
		opts |= tsOptECN
	}
	ts := now&^tsOptMask | opts
	if seqGT(ts, now) {
		ts -= 1 << tsOptBits
	}
	return ts
}

// decodeCookieTS is Linux's cookie_timestamp_decode: the options are read back from the
// TSecr of the cookie ACK. ok is false for an impossible window scale (above RFC 7323
// §2.3's 14) or a TSecr from the future.
func decodeCookieTS(tsecr, now uint32) (wscale uint8, hasWS, sack, ecn, ok bool) {
	if seqGT(tsecr, now) {
		return 0, false, false, false, false
	}
	opts := tsecr & tsOptMask
	ws := uint8(opts & tsOptWscaleMask)
	if ws != tsOptWscaleMask {
		if ws > 14 {
			return 0, false, false, false, false
		}
		wscale, hasWS = ws, true
	}
	return wscale, hasWS, opts&tsOptSACK != 0, opts&tsOptECN != 0, true
}

// sendCookieSynAck answers s (a SYN to l's port) statelessly with a cookie SYN-ACK. When
// the SYN offered timestamps (and we use them), the SYN-ACK answers with timestamps,
// window scale and SACK as an ordinary one would, and TSval carries the peer's window
// scale and SACK-permitted for the ACK to bring back; otherwise it offers MSS only, as
// Linux does for a peer that sent no timestamp.
func (l *Listener) sendCookieSynAck(s *segment) bool {
	p := l.p
	_, mtu, err := p.net.Route(s.src)
	if err != nil {
		return false
	}
	local := netip.AddrPortFrom(s.dst, s.hdr.DstPort())
	remote := netip.AddrPortFrom(s.src, s.hdr.SrcPort())
	peer := uint16(536)
	if s.src.Is6() && !s.src.Is4In6() {
		peer = 1220
	}
	if s.opts.HasMSS && s.opts.MSS > 0 {
		peer = s.opts.MSS
	}
	tab := msstab(s.src)
	idx := cookieMSSIndex(tab, peer)

	var o wire.TCPOptions
	o.HasMSS, o.MSS = true, uint16(min(advMSS(s.src, mtu), 0xffff))
	if s.opts.HasTimestamps && p.timestamps() {
		sack := s.opts.SACKPermitted && !p.cfg.NoSACK
		ws := min(s.opts.WindowScale, 14)
		o.HasTimestamps = true
		o.TSVal = encodeCookieTS(p.cookieTSNow(local, remote), ws, s.opts.HasWindowScale, sack, false)
		o.TSEcr = s.opts.TSVal
		if s.opts.HasWindowScale {
			o.HasWindowScale, o.WindowScale = true, rcvWscaleFor(p.cfg.ReceiveBuffer)
		}
		o.SACKPermitted = sack
	}
	iss := p.makeCookie(local, remote, s.seq, p.cookieCounter(), idx, o.TSVal)
	f := wire.TCPFields{
		SrcPort: local.Port(), DstPort: remote.Port(),
		Seq: iss, Ack: s.seq + 1, Flags: wire.TCPFlagSYN | wire.TCPFlagACK,
		Window:  cookieWindow(p.cfg.ReceiveBuffer),
		Options: &o,
	}
	hl := f.HeaderLen()
	bp := p.scratch(wire.NetworkHeadroom + hl)
	b := *bp
	f.Encode(b[wire.NetworkHeadroom:])
	wire.SetTCPChecksum(b[wire.NetworkHeadroom:], s.dst, s.src)
	p.net.Output(s.dst, s.src, wire.ProtoTCP, b)
	p.release(bp)
	p.Stats.OutSegs.Add(1)
	p.Stats.SyncookiesSent.Add(1)
	return true
}

// cookieTSOffset is a cookie connection's TSval offset (RFC 7323 §5.4: per connection
// and unpredictable): a keyed hash of the 4-tuple, so that the connection made from the
// ACK continues the clock its SYN-ACK started.
func (p *Protocol) cookieTSOffset(local, remote netip.AddrPort) uint32 {
	return p.cookieHash(local, remote, 0, 0, 'T')
}

// cookieTSNow is a cookie connection's TS clock (milliseconds, as Conn.tsNow).
func (p *Protocol) cookieTSNow(local, remote netip.AddrPort) uint32 {
	return uint32(p.clk.Now().UnixMilli()) + p.cookieTSOffset(local, remote)
}

// rcvWscaleFor is the window scale Conn.setRoute offers for a receive buffer: the
// smallest shift that lets the window cover it.
func rcvWscaleFor(rcvBuf int) uint8 {
	ws := uint8(0)
	for ws < 14 && rcvBuf>>ws > 0xffff {
		ws++
	}
	return ws
}

// cookieWindow is the window a cookie SYN-ACK offers: the receive buffer, unscaled
// (RFC 7323 §2.2), as Conn.windowField offers in a SYN.
func cookieWindow(rcvBuf int) uint16 { return uint16(min(rcvBuf, 0xffff)) }

// advMSS is the MSS we announce on a route (as Conn.setRoute: RFC 9293 §3.7.1).
func advMSS(remote netip.Addr, mtu int) int {
	ipHdr := 20
	if remote.Is6() && !remote.Is4In6() {
		ipHdr = 40
	}
	return max(mtu-ipHdr-wire.TCPMinHeaderLen, 64)
}

// cookieACK handles an ACK (without SYN or RST) that reached the listener: with cookies
// in use it may complete a handshake whose SYN-ACK carried a cookie (Linux's
// cookie_v4_check). It returns false when the segment is not a valid cookie: the caller
// answers RST, as Linux does for an ACK to a listener (RFC 9293 §3.10.7.2).
func (l *Listener) cookieACK(s *segment) bool {
	p := l.p
	if p.cfg.SynCookies == SynCookiesNever {
		return false
	}
	count := p.cookieCounter()
	if p.cfg.SynCookies != SynCookiesAlways {
		// Linux's tcp_synq_no_recent_overflow: look at cookies only when this listener
		// sent some lately.
		last := l.lastOverflow.Load()
		if last == 0 || count-(last-1) >= maxCookieAge {
			return false
		}
	}
	local := netip.AddrPortFrom(s.dst, s.hdr.DstPort())
	remote := netip.AddrPortFrom(s.src, s.hdr.SrcPort())
	// The SYN-ACK had timestamps if the SYN offered them and we use them; the ACK then
	// echoes its TSval, which the cookie covers.
	ts := s.opts.HasTimestamps && s.opts.TSEcr != 0 && p.timestamps()
	var tsecr uint32
	if ts {
		tsecr = s.opts.TSEcr
	}
	idx, ok := p.checkCookie(local, remote, s.ack-1, s.seq-1, count, tsecr)
	if !ok || idx >= uint32(len(msstab4)) {
		p.Stats.SyncookiesFailed.Add(1)
		return false
	}
	// The SYN's options as the cookie kept them: the MSS, and with timestamps window
	// scale and SACK from TSecr (Linux's cookie_timestamp_decode); an ACK without
	// timestamps gets MSS only.
	opts := wire.TCPOptions{HasMSS: true, MSS: msstab(s.src)[idx]}
	if ts {
		ws, hasWS, sack, _, ok := decodeCookieTS(s.opts.TSEcr, p.cookieTSNow(local, remote))
		if !ok {
			p.Stats.SyncookiesFailed.Add(1)
			return false
		}
		opts.HasWindowScale, opts.WindowScale = hasWS, ws
		opts.SACKPermitted = sack && !p.cfg.NoSACK
		opts.HasTimestamps, opts.TSVal = true, s.opts.TSVal
	}
	p.Stats.SyncookiesRecv.Add(1)
	l.cookieConn(s, &opts)
	return true
}

// cookieConn creates the connection a valid cookie ACK completes, straight into the
// accept queue (or drops the ACK when that is full: ListenOverflows, as Linux).
func (l *Listener) cookieConn(s *segment, opts *wire.TCPOptions) {
	p := l.p
	l.mu.Lock()
	full := l.closed || len(l.acceptQ) >= l.backlog
	l.mu.Unlock()
	if full {
		p.Stats.ListenOverflows.Add(1)
		p.Stats.ListenDrops.Add(1)
		return
	}
	_, mtu, err := p.net.Route(s.src)
	if err != nil {
		return
	}
	local := netip.AddrPortFrom(s.dst, s.hdr.DstPort())
	remote := netip.AddrPortFrom(s.src, s.hdr.SrcPort())
	// The cookie SYN-ACK's window is not known here: the ACK in hand sets it.
	c, err := p.passiveOpen(l, local, remote, mtu, s.seq-1, s.ack-1, 0, opts)
	if err != nil {
		return
	}
	if opts.HasTimestamps {
		// Continue the TS clock of the SYN-ACK; its TSval was the last we "sent".
		c.tsOffset = p.cookieTSOffset(c.local, c.remote)
		c.lastAckSent = c.rcvNxt
	}
	c.rcvAdv = c.rcvNxt + uint32(cookieWindow(p.cfg.ReceiveBuffer)) // what our SYN-ACK offered
	p.track(c)
	p.Stats.PassiveOpens.Add(1)
	c.mu.Unlock()
	// The ACK completes the handshake by the ordinary SYN-RECEIVED path (RFC 9293
	// §3.10.7.4), which moves c to the accept queue and takes any data it carries.
	c.input(s)
	c.mu.Lock()
	if c.state == StateSynReceived {
		// The accept queue filled meanwhile: forget the connection (the peer's
		// retransmission will find the listener again).
		p.Stats.ListenOverflows.Add(1)
		p.Stats.ListenDrops.Add(1)
		c.finish(nil)
	}
	c.mu.Unlock()
}
