package tcp

import (
	"context"
	"net/netip"
	"syscall"

	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// Transparent connections (like Linux's IP_TRANSPARENT sockets) let a forwarder terminate
// connections whose addresses are not the stack's own: a namespace's connection to any
// destination (AcceptTransparent), and a connection into the namespace that carries a
// remote client's address as its source (DialTransparent). Once one exists, its segments
// never reach the forwarder: the stack offers TCP every segment for another host first
// (HandleForeign, transport.TransparentHandler) and TCP finds the connection by its exact
// 4-tuple on the batched path, as gVisor's transport demuxer finds a forwarder's
// endpoints. Only what no connection holds (a new SYN) goes on to the stack's
// unmatched-flow hook, the forwarder.

var _ transport.TransparentHandler = (*Protocol)(nil)

// HandleForeign takes a segment from src to dst, an address not the stack's own, when a
// connection holds its exact 4-tuple (transport.TransparentHandler): the segment is then
// processed as HandleBatched processes a local one, its answers and what it makes
// sendable waiting for EndBatch. Anything else it leaves untouched, not even counted, and
// reports not taken: no connection holds the 4-tuple (a new flow: the hook's job), or the
// segment is a SYN that ended a TIME-WAIT connection of the 4-tuple (as HandleTransparent
// reports reopened).
func (p *Protocol) HandleForeign(src, dst netip.Addr, seg []byte, csumOK bool) (taken bool) {
	if len(seg) < wire.TCPMinHeaderLen {
		return false
	}
	// The ports are the header's first four bytes (RFC 9293 §3.1): look the 4-tuple up
	// before anything else, so that a new flow costs TCP one lookup.
	h := wire.TCP(seg)
	owner, ok := p.mgr.Lookup(netip.AddrPortFrom(dst, h.DstPort()), netip.AddrPortFrom(src, h.SrcPort()))
	if _, isConn := owner.(*Conn); !ok || !isConn {
		return false
	}
	var s segment
	if !p.parse(&s, src, dst, seg, true, csumOK) {
		return true // dropped and counted, as it would be on the hook's path
	}
	return !p.dispatch(&s, owner, true, true)
}

// HandleTransparent is HandlePacket for a forwarder: when the segment is a SYN that ends
// a TIME-WAIT connection of the same 4-tuple (RFC 9293 §3.10.7.4, RFC 6191: its sequence
// number is beyond the old connection's) and no listener wants it, no RST is sent and
// HandleTransparent reports reopened: the forwarder then treats the SYN as a new flow,
// as the peer means it (a client reusing its port soon after a connection it closed
// last).
// csumOK says the link vouched for the segment's checksum (transport.UnmatchedHandler).
func (p *Protocol) HandleTransparent(src, dst netip.Addr, seg []byte, csumOK bool) (reopened bool) {
	return p.handle(src, dst, seg, false, true, csumOK)
}

// HasConn reports whether a connection (in any state, TIME-WAIT included) holds the
// 4-tuple (local, remote).
func (p *Protocol) HasConn(local, remote netip.AddrPort) bool {
	owner, ok := p.mgr.Lookup(netip.AddrPortFrom(local.Addr().Unmap(), local.Port()),
		netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()))
	if !ok {
		return false
	}
	_, isConn := owner.(*Conn)
	return isConn
}

// AcceptTransparent creates the passive side of a connection from the SYN segment syn,
// sent by src to dst, without a listener and whatever dst is (RFC 9293 §3.10.7.2, LISTEN
// state, as a listener would): the connection enters SYN-RECEIVED and answers with a
// SYN-ACK at once. The returned connection becomes usable (Read, Write) when the peer's
// ACK arrives; a peer that never completes the handshake makes it fail with ETIMEDOUT.
// EINVAL if syn is not a valid SYN, EADDRINUSE if the 4-tuple is taken.
func (p *Protocol) AcceptTransparent(src, dst netip.Addr, syn []byte) (*Conn, error) {
	if p.isClosed() {
		return nil, syscall.ENETDOWN
	}
	src, dst = src.Unmap(), dst.Unmap()
	h, err := wire.ParseTCP(syn)
	if err != nil || !h.VerifyChecksum(src, dst) {
		return nil, syscall.EINVAL
	}
	s := segment{hdr: h, src: src, dst: dst}
	if h.DataOffset() > wire.TCPMinHeaderLen && h.ParseOptions(&s.opts) != nil {
		return nil, syscall.EINVAL
	}
	s.init()
	if s.flags&(flagSYN|flagACK|flagRST) != flagSYN {
		return nil, syscall.EINVAL
	}
	_, mtu, err := p.net.Route(src)
	if err != nil {
		return nil, err
	}
	local, remote := netip.AddrPortFrom(dst, h.DstPort()), netip.AddrPortFrom(src, h.SrcPort())
	c, err := p.passiveOpen(nil, local, remote, mtu, s.seq, p.isn(local, remote), s.wnd, &s.opts)
	if err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	p.track(c)
	p.Stats.PassiveOpens.Add(1)
	c.sendSYN()
	c.arm(timerRetransmit, c.rto)
	return c, nil
}

// RejectTransparent answers the SYN segment syn (from src to dst) with a RST, as a closed
// port does (RFC 9293 §3.10.7.1): the peer's connect fails with ECONNREFUSED.
func (p *Protocol) RejectTransparent(src, dst netip.Addr, syn []byte) {
	src, dst = src.Unmap(), dst.Unmap()
	h, err := wire.ParseTCP(syn)
	if err != nil {
		return
	}
	s := segment{hdr: h, src: src, dst: dst}
	s.init()
	p.resetClosed(&s)
}

// DialTransparent opens a connection from local, which need not be one of the stack's
// addresses, to remote (an active open with an exact 4-tuple, like connect(2) on an
// IP_TRANSPARENT socket bound to local). It returns once the connection is established,
// or with ECONNREFUSED, ETIMEDOUT, EADDRINUSE (the 4-tuple is taken), or ctx's error.
func (p *Protocol) DialTransparent(ctx context.Context, local, remote netip.AddrPort) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.isClosed() {
		return nil, syscall.ENETDOWN
	}
	la, ra := local.Addr().Unmap(), remote.Addr().Unmap()
	local, remote = netip.AddrPortFrom(la, local.Port()), netip.AddrPortFrom(ra, remote.Port())
	if !la.IsValid() || la.IsUnspecified() || local.Port() == 0 || !ra.IsValid() ||
		ra.IsUnspecified() || ra.IsMulticast() || remote.Port() == 0 {
		return nil, syscall.EINVAL
	}
	if la.Is4() != ra.Is4() {
		return nil, syscall.EAFNOSUPPORT
	}
	_, mtu, err := p.net.Route(ra)
	if err != nil {
		return nil, err
	}
	c, err := p.registerConn(local, remote, true, nil)
	if err != nil {
		return nil, err
	}
	return c.activeOpen(ctx, mtu)
}
