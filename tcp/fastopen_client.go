package tcp

import (
	"context"
	"net/netip"
	"syscall"

	"github.com/berthnet/berth/wire"
)

// TCP Fast Open, client side (RFC 7413 §4.1): cookies the stack's servers handed out are
// cached per server address; a connection opened with data sends the first of it in its
// SYN with the cookie, or, without one, asks for a cookie in a bare SYN.

// foEntry is a cached cookie.
type foEntry struct {
	cookie [16]byte
	n      uint8
	kind   uint8 // the option kind the server answered with (34 or the experimental one)
	mss    int   // the server's MSS option, 0 if unknown
	// tryExp is Linux's try_exp, for a server that has not given a cookie: 1 after a
	// cookie request in RFC 7413's option went unanswered (the next request uses the
	// experimental option, RFC 6994's form, which older servers know), 2 after one in the
	// experimental option went unanswered too (back to RFC 7413's for good).
	tryExp uint8
}

// fastOpenCached returns the cookie cached for server a.
func (p *Protocol) fastOpenCached(a netip.Addr) (foEntry, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.foCache[a]
	return e, ok && e.n > 0 // an entry without a cookie keeps the server's MSS alone
}

// ConnectData opens c, made by Socket, as Connect does, with Fast Open (RFC 7413) when
// Config.FastOpen enables the client: with a cookie cached for remote (or the no-cookie
// bit set), up to a segment of data goes in the SYN and n reports how much of data was
// queued, the rest being the caller's to write once the connection is established; without
// one the SYN asks for a cookie and n is 0 (sendto(MSG_FASTOPEN) then returns
// EINPROGRESS). With wait it returns once the connection is established or failed.
func (c *Conn) ConnectData(ctx context.Context, local, remote netip.AddrPort, opts DialOptions, data []byte, wait bool) (n int, err error) {
	p := c.p
	f := p.fastOpen()
	c.mu.Lock()
	if f&FastOpenClient != 0 {
		c.foSend = true
		e, ok := p.fastOpenCached(remote.Addr().Unmap())
		if ok || f&FastOpenClientNoCookie != 0 {
			c.foEntry = e
			c.foHave = ok || f&FastOpenClientNoCookie != 0
			if ok {
				c.foKind = e.kind
			}
		} else if e.tryExp == 1 {
			c.foKind = wire.TCPOptExperimental // the cookie request in the older form
		}
		if c.foHave && len(data) > 0 && !c.userClosed {
			// The SYN carries as much as fits a segment of the path's MTU (and of the
			// server's MSS, when known, and TCP_MAXSEG) with a full option space, as Linux's
			// tcp_send_syn_data: that much is queued, the rest is the caller's.
			room := 0
			if _, mtu, err := p.net.Route(remote.Addr().Unmap()); err == nil {
				hdr := 40
				if remote.Addr().Unmap().Is4() {
					hdr = 20
				}
				mss := mtu - hdr - wire.TCPMinHeaderLen
				if e.mss > 0 {
					mss = min(mss, e.mss)
				}
				if c.maxSeg > 0 {
					mss = min(mss, c.maxSeg) // TCP_MAXSEG bounds the SYN's data too
				}
				room = max(mss-(wire.TCPMaxHeaderLen-wire.TCPMinHeaderLen), 0)
			}
			n = min(len(data), c.sndBufMax, room)
			c.sndBuf.reserve(n, c.sndBufMax, 0)
			c.sndBuf.writeAt(data[:n], 0)
			c.sndBuf.n = n
		}
	}
	c.mu.Unlock()
	if err := c.Connect(ctx, local, remote, opts, wait); err != nil {
		return 0, err
	}
	return n, nil
}

// synFastOpen adds the Fast Open option to our SYN and returns the data it carries.
// c.mu is held.
func (c *Conn) synFastOpen(o *wire.TCPOptions) int {
	if !c.foSend || c.retries > 0 {
		return 0 // RFC 7413 §4.1.3: a retransmitted SYN carries neither data nor option
	}
	o.FastOpen = wire.TCPOptFastOpen
	if c.foKind != 0 {
		o.FastOpen = c.foKind
	}
	if !c.foHave {
		return 0 // a cookie request: the option alone
	}
	o.FastOpenLen = c.foEntry.n
	copy(o.FastOpenCookie[:], c.foEntry.cookie[:c.foEntry.n])
	if c.foEntry.n == 0 {
		o.FastOpen = 0 // no cookie, sent without (FastOpenClientNoCookie)
	}
	n := c.sndBuf.n // ConnectData queued what fits
	c.synData = n > 0
	return n
}

// synAckFastOpen takes a SYN-ACK's Fast Open answer: it caches the cookie, and makes the
// SYN's data that the server did not acknowledge go again (RFC 7413 §4.1.2). It returns
// whether data waits to be sent. c.mu is held; sndUna is the SYN-ACK's ack.
func (c *Conn) synAckFastOpen(s *segment) bool {
	if !c.foSend {
		return false
	}
	p := c.p
	// RFC 7413 §4.1.1: a cookie is 4 to 16 bytes, of even length; the SYN-ACK's MSS is
	// cached with it. A SYN-ACK with an invalid cookie (or none) updates the MSS of what
	// is cached and keeps its cookie (Linux's tcp_fastopen_cache_set).
	// A cookie our SYN did not ask for (a SYN sent without the option,
	// FastOpenClientNoCookie) is not cached either; the MSS is, on an entry of its own.
	asked := !c.foHave || c.foEntry.n > 0
	valid := asked && s.opts.FastOpen != 0 && s.opts.FastOpenLen >= 4 && s.opts.FastOpenLen <= 16 && s.opts.FastOpenLen%2 == 0
	// A cookie request (no data) answered without any Fast Open option, on the first SYN:
	// perhaps a server that knows only the experimental option. The next request tries
	// that once (Linux's try_exp; a retransmitted SYN carried no option, so proves nothing).
	var tryExp uint8
	if asked && !c.synData && s.opts.FastOpen == 0 && c.retrans == 0 {
		tryExp = 1
		if c.foKind == wire.TCPOptExperimental {
			tryExp = 2
		}
	}
	p.mu.Lock()
	e, ok := p.foCache[c.remote.Addr()]
	if valid {
		e, ok = foEntry{cookie: s.opts.FastOpenCookie, n: s.opts.FastOpenLen, kind: s.opts.FastOpen}, true
	} else if tryExp > e.tryExp && e.n == 0 {
		e.tryExp, ok = tryExp, true
	}
	if ok || s.opts.HasMSS {
		if s.opts.HasMSS {
			e.mss = int(s.opts.MSS)
		}
		if p.foCache == nil {
			p.foCache = make(map[netip.Addr]foEntry)
		}
		p.foCache[c.remote.Addr()] = e
	}
	p.mu.Unlock()
	// The SYN's data counts as taken only when the SYN-ACK acknowledges all of it
	// (Linux's syn_data_acked, TCPI_OPT_SYN_DATA); a partial acknowledgment is a Fast
	// Open failure whose rest goes again (RFC 7413 §4.1.2).
	c.synDataAcked = c.synData && c.sndUna == c.sndMax
	if acked := int(c.sndUna - c.iss - 1); acked > 0 {
		c.sndBuf.consume(min(acked, c.sndBuf.n))
	} else {
		c.synData = false
	}
	if seqLT(c.sndUna, c.sndNxt) {
		c.sndNxt = c.sndUna // what the SYN carried and was not acknowledged goes again
	}
	return c.sndBuf.n > 0
}

// FlushFastOpenCache forgets every cached Fast Open cookie, with the servers' MSS and
// which option they answered (`ip tcp_metrics flush`, where Linux keeps them).
func (p *Protocol) FlushFastOpenCache() {
	p.mu.Lock()
	clear(p.foCache)
	p.mu.Unlock()
}

// synDataResend sends again, at once and whole, what the SYN carried and the SYN-ACK did
// not acknowledge (RFC 7413 §4.1.2): as Linux's tcp_rcv_fastopen_synack, which marks it
// lost and retransmits it (one super-segment through a GSO link), not as new data that
// Nagle could hold back for want of a full segment. c.mu is held; the connection is
// established and sndNxt is back at sndUna.
func (c *Conn) synDataResend() {
	// The SYN's data stays a segment of its own, pushed, as Linux's SYN-data skb: what
	// the caller writes next is not appended to it, and its retransmissions carry PSH
	// (a record end, sendopts.go).
	if end := c.sndUna + uint32(c.sndBuf.n); seqGT(end, c.sndNxt) && (len(c.eor) == 0 || seqLT(c.eor[len(c.eor)-1], end)) {
		c.eor = append(c.eor, end)
	}
	if c.sackOK {
		// The scoreboard gets the data's segments as Linux's rtx queue has the SYN's skb
		// after tcp_mark_skb_lost and its retransmission: lost, retransmitted, out (the
		// retransmission counts in tcpi_retrans, and RACK may find it lost again).
		now := c.mono()
		end := min(c.sndMax, c.sndUna+uint32(c.sndBuf.n))
		for s := c.sndNxt; seqLT(s, end); {
			e := s + uint32(min(int(end-s), c.mss))
			c.sb.push(s, e, now, c.mss)
			r := c.sb.at(c.sb.n - 1)
			r.flags |= segLost | segRetrans | segRexmitOut
			c.sb.lost += int(e - s)
			c.sb.rexmitOut += int(e - s)
			s = e
		}
	}
	for seqLT(c.sndNxt, c.sndMax) {
		c.rtxGSO = c.gsoMax > 0
		used := c.sendData(c.sndNxt, int(c.sndMax-c.sndNxt))
		c.rtxGSO = false
		if used == 0 {
			return
		}
		c.sndNxt += uint32(used)
	}
}

// HasFastOpenCookie reports whether a Fast Open cookie is cached for server (Linux's
// TCP_FASTOPEN_CONNECT defers the SYN to the first write then).
func (p *Protocol) HasFastOpenCookie(server netip.Addr) bool {
	_, ok := p.fastOpenCached(server.Unmap())
	return ok
}

// SetSynRetries sets how often the SYN is retransmitted before the connection fails
// (TCP_SYNCNT, 1 to 127); 0 returns to Config.SynRetries.
func (c *Conn) SetSynRetries(n int) error {
	if n < 0 || n > 127 {
		return syscall.EINVAL
	}
	return c.setOpt(func() { c.synRetries = n })
}
