package tcp

import (
	"encoding/binary"
	"net/netip"

	"github.com/berthnet/berth/internal/siphash"
	"github.com/berthnet/berth/wire"
)

// TCP Fast Open, server side (RFC 7413): a listener with Fast Open on accepts the data of
// a SYN that carries a valid cookie, and hands out cookies to clients that ask. The knobs
// are Linux's tcp_fastopen bits (Config.FastOpen) and TCP_FASTOPEN on the listener.

// Config.FastOpen bits, as Linux's tcp_fastopen sysctl.
const (
	FastOpenClient          = 0x1   // TFO_CLIENT_ENABLE
	FastOpenServer          = 0x2   // TFO_SERVER_ENABLE
	FastOpenClientNoCookie  = 0x4   // TFO_CLIENT_NO_COOKIE: send SYN data without a cookie
	FastOpenServerNoCookie  = 0x200 // TFO_SERVER_COOKIE_NOT_REQD: accept SYN data without one
	FastOpenServerNoSockopt = 0x400 // TFO_SERVER_WO_SOCKOPT1: every listener, no TCP_FASTOPEN
)

// SetFastOpen turns Fast Open on for the listener (TCP_FASTOPEN with queue length qlen > 0)
// or off (0). Config.FastOpen's server bit must be set too, as on Linux.
func (l *Listener) SetFastOpen(qlen int) {
	l.mu.Lock()
	l.foQlen = max(qlen, 0)
	l.mu.Unlock()
}

// fastOpenOn reports whether the listener takes Fast Open SYNs.
func (l *Listener) fastOpenOn() bool {
	f := l.p.fastOpen()
	if f&FastOpenServer == 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.foQlen > 0 || f&FastOpenServerNoSockopt != 0
}

// fastOpenCookie is the cookie for a client at src talking to dst (RFC 7413 §4.1.2: a MAC
// of the client's address under a server secret): SipHash-2-4 of the two addresses
// (network order, source first) under Config.FastOpenKey, eight bytes, as Linux's, so
// that cookies a Linux server with the same key issued are valid here.
func (p *Protocol) fastOpenCookie(src, dst netip.Addr) (c [8]byte) {
	var in [32]byte
	var n int
	if s, d := src.Unmap(), dst.Unmap(); s.Is4() && d.Is4() {
		s4, d4 := s.As4(), d.As4()
		n = copy(in[:], s4[:])
		n += copy(in[n:], d4[:])
	} else {
		s16, d16 := src.As16(), dst.As16()
		n = copy(in[:], s16[:])
		n += copy(in[n:], d16[:])
	}
	k := p.cfg.FastOpenKey
	binary.LittleEndian.PutUint64(c[:], siphash.Sum64(binary.LittleEndian.Uint64(k[0:]), binary.LittleEndian.Uint64(k[8:]), in[:n]))
	return c
}

// fastOpenSYN applies Fast Open to a SYN for which passiveOpen made c (held): it reports
// whether c is a Fast Open child (the SYN's data, if any, accepted and acknowledged by the
// SYN-ACK; the connection goes to the accept queue at once), and sets the option the
// SYN-ACK carries (a cookie, when the client asked for one or sent a wrong one).
// Linux's tcp_try_fastopen.
func (l *Listener) fastOpenSYN(c *Conn, s *segment) bool {
	p := l.p
	o := &s.opts
	if (len(s.payload) == 0 && o.FastOpen == 0) || !l.fastOpenOn() {
		return false
	}
	child := p.fastOpen()&FastOpenServerNoCookie != 0
	valid := p.fastOpenCookie(s.src, s.dst)
	if !child && o.FastOpenLen == 8 && [8]byte(o.FastOpenCookie[:8]) == valid {
		child = true
	}
	if !child {
		// A cookie request, or a wrong cookie: the data is not taken (the client sends it
		// again after the handshake), the right cookie goes back. RFC 7413 §4.2.2.
		if o.FastOpen != 0 {
			c.foReply = o.FastOpen
			c.foCookie = valid
		}
		p.Stats.FastOpenPassiveFail.Add(uint64(min(int(o.FastOpenLen), 1)))
		return false
	}
	c.tfoChild = true
	if n := len(s.payload); n > 0 {
		c.rcvBuf.reserve(n, c.rcvBufMax, 0)
		c.rcvBuf.writeAt(s.payload, 0)
		c.rcvBuf.n = n
		c.rcvNxt += uint32(n)
		c.synData = true
		c.synDataAcked = true
	}
	// The SYN's sequence number is consumed by the SYN-ACK's acknowledgment; our own SYN
	// stays unacknowledged until the client's ACK, but data may go out before it
	// (RFC 7413 §4.2.2), so the send queue starts after our SYN.
	c.sndUna = c.iss + 1
	p.Stats.FastOpenPassive.Add(1)
	return true
}

// fastOpenOption adds the option the SYN-ACK carries, if any. c.mu is held.
func (c *Conn) fastOpenOption(o *wire.TCPOptions) {
	if c.foReply == 0 {
		return
	}
	o.FastOpen, o.FastOpenLen = c.foReply, 8
	copy(o.FastOpenCookie[:], c.foCookie[:])
}
