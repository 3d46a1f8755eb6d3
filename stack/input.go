package stack

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// input processes one inbound IP packet to completion on the caller's goroutine.
func (s *Stack) input(ifc *Interface, p []byte, csumOK bool) {
	if s.closed.Load() || len(p) == 0 {
		return
	}
	switch p[0] >> 4 {
	case 4:
		s.input4(ifc, p, csumOK)
	case 6:
		s.input6(ifc, p, csumOK)
	default:
		// Unknown version: count it where Linux does (the link gave us no ethertype).
		s.ip4.InReceives.Add(1)
		s.ip4.InHdrErrors.Add(1)
	}
}

var errTooShort = &wire.Error{Kind: wire.ErrTooShort}
var errBadLength = &wire.Error{Kind: wire.ErrBadLength}
var errBadChecksum = &wire.Error{Kind: wire.ErrBadChecksum}

// martian4 reports source addresses a host must not accept (RFC 1122 §3.2.1.3, RFC 1812
// §5.3.7): multicast, limited broadcast, "this network" and, off the loopback interface,
// 127/8.
func martian4(ifc *Interface, src netip.Addr) bool {
	b := src.As4()
	return src.IsMulticast() || src == netip.AddrFrom4([4]byte{255, 255, 255, 255}) ||
		b[0] == 0 || (!ifc.loopback && b[0] == 127)
}

func (s *Stack) input4(ifc *Interface, p []byte, csumOK bool) {
	c := &s.ip4
	c.InReceives.Add(1)
	h, err := wire.ParseIPv4(p)
	if err != nil {
		// RFC 1122 §3.2.1.1-2: silently discard bad version, length or checksum.
		switch {
		case errors.Is(err, errBadChecksum):
			c.InCsumErrors.Add(1)
			c.InHdrErrors.Add(1)
		case errors.Is(err, errTooShort), errors.Is(err, errBadLength):
			c.InTruncatedPkts.Add(1)
			c.InHdrErrors.Add(1)
		default:
			c.InHdrErrors.Add(1)
		}
		return
	}
	src, dst := h.Src(), h.Dst()
	if martian4(ifc, src) || dst.As4()[0] == 0 {
		// RFC 1122 §3.2.1.3: 0/8 is never a destination either (Linux:
		// martian_destination).
		c.InMartians.Add(1)
		c.InAddrErrors.Add(1)
		return
	}
	if h.HeaderLen() > wire.IPv4MinHeaderLen {
		if at := h.BadOption(); at >= 0 {
			// RFC 1122 §3.2.1.8 and Linux's ip_options_compile: a malformed option
			// (length 0 or 1, or past the header) drops the datagram, with a parameter
			// problem pointing at it.
			c.InHdrErrors.Add(1)
			s.icmp4Error(ifc, h, wire.ICMPv4ParamProblem, wire.ICMPv4CodePointer, at)
			return
		}
	}
	t := s.tab.Load()
	if !t.isLocal(dst) || (!ifc.loopback && dst.As4()[0] == 127) {
		if dst.IsMulticast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			// No multicast or broadcast receivers yet.
			c.InAddrErrors.Add(1)
			return
		}
		if h.IsFragment() {
			if s.unmatched.Load() != nil {
				// The hook terminates flows to other hosts (the forwarder) and needs whole
				// transport segments: reassemble as for a local destination (RFC 791 §3.2)
				// and offer the datagram to it then.
				s.reasm.add4(ifc, h, true)
				return
			}
			s.forward4(ifc, h, false)
			return
		}
		if !s.takeForeign(h.Protocol(), src, dst, h.Payload(), csumOK) {
			s.forward4(ifc, h, csumOK)
		}
		return
	}
	if h.IsFragment() {
		// RFC 791 §3.2, RFC 815: reassemble before delivery.
		s.reasm.add4(ifc, h, false)
		return
	}
	s.deliver(ifc, h, src, dst, h.Protocol(), h.Payload(), csumOK)
}

// takeForeign offers a segment addressed to another host, while an unmatched-flow hook is
// installed (transparent mode), first to its transport, whose transparent connections
// may hold its 4-tuple (transport.TransparentHandler: an established forwarded flow is
// demultiplexed there, once, on the batched path), and then to the hook.
func (s *Stack) takeForeign(proto uint8, src, dst netip.Addr, seg []byte, csumOK bool) bool {
	hp := s.unmatched.Load()
	if hp == nil {
		return false
	}
	if t, ok := s.transports.Load()[proto].(transport.TransparentHandler); ok && t.HandleForeign(src, dst, seg, csumOK) {
		return true
	}
	return (*hp)(proto, src, dst, seg, csumOK)
}

// takeUnmatched offers a segment to the unmatched-flow hook.
func (s *Stack) takeUnmatched(proto uint8, src, dst netip.Addr, seg []byte, csumOK bool) bool {
	if hp := s.unmatched.Load(); hp != nil {
		return (*hp)(proto, src, dst, seg, csumOK)
	}
	return false
}

// deliver hands a local datagram's payload to ICMP or its transport protocol. ip is the
// whole IP packet (header included), quoted by any ICMP error sent in reply.
func (s *Stack) deliver(ifc *Interface, ip []byte, src, dst netip.Addr, proto uint8, payload []byte, csumOK bool) {
	v4 := dst.Is4()
	if v4 {
		s.ip4.InDelivers.Add(1)
	} else {
		s.ip6.InDelivers.Add(1)
	}
	switch {
	case v4 && proto == wire.ProtoICMPv4:
		s.icmp4Input(ifc, ip, src, dst, payload)
		return
	case !v4 && proto == wire.ProtoICMPv6:
		s.icmp6Input(ifc, ip, src, dst, payload)
		return
	}
	h := s.transports.Load()[proto]
	if h == nil {
		// RFC 1122 §3.2.2.1 / RFC 8200 §4: protocol unreachable / unrecognized next header.
		if v4 {
			s.ip4.InUnknownProtos.Add(1)
			s.icmp4Error(ifc, ip, wire.ICMPv4DestUnreachable, wire.ICMPv4CodeProtocolUnreachable, 0)
		} else {
			// RFC 8200 §4: Parameter Problem code 1, pointing at the next-header field
			// that named the unknown protocol.
			s.ip6.InUnknownProtos.Add(1)
			if off := len(ip) - len(payload); off >= wire.IPv6HeaderLen && off <= len(ip) {
				s.icmp6Error(ifc, ip, wire.ICMPv6ParamProblem, wire.ICMPv6CodeUnrecognizedNextHeader,
					nextHeaderField(ip, off))
			}
		}
		return
	}
	var unreachable bool
	if e, ok := h.(transport.ECNHandler); ok {
		unreachable = e.HandleBatchedECN(src, dst, payload, csumOK, ipECN(ip)) // DeliverPackets ends the batch
	} else if b, ok := h.(transport.BatchHandler); ok {
		unreachable = b.HandleBatched(src, dst, payload, csumOK) // DeliverPackets ends the batch
	} else {
		unreachable = h.HandlePacket(src, dst, payload)
	}
	if unreachable && !s.takeUnmatched(proto, src, dst, payload, csumOK) {
		// No socket: port unreachable (RFC 1122 §3.2.2.1; RFC 4443 §3.1 code 4).
		if v4 {
			s.icmp4Error(ifc, ip, wire.ICMPv4DestUnreachable, wire.ICMPv4CodePortUnreachable, 0)
		} else {
			s.icmp6Error(ifc, ip, wire.ICMPv6DestUnreachable, wire.ICMPv6CodePortUnreachable, 0)
		}
	}
}

// forward4 routes a datagram that is not for us (RFC 1812 §5.2), or drops it when
// forwarding is off.
func (s *Stack) forward4(in *Interface, h wire.IPv4, csumOK bool) {
	c := &s.ip4
	if !s.opts.Forwarding {
		c.InAddrErrors.Add(1)
		return
	}
	if csumOK {
		wire.FillTCPChecksum(h) // the link left it to us; the next hop will check it
	}
	dst := h.Dst()
	if h.TTL() <= 1 {
		// RFC 1812 §5.3.1: time exceeded in transit.
		c.InHdrErrors.Add(1)
		s.icmp4Error(in, h, wire.ICMPv4TimeExceeded, wire.ICMPv4CodeTTLExceeded, 0)
		return
	}
	ifc, _, err := s.resolve(dst)
	if err != nil || ifc.loopback {
		c.OutNoRoutes.Add(1)
		s.icmp4Error(in, h, wire.ICMPv4DestUnreachable, wire.ICMPv4CodeNetUnreachable, 0)
		return
	}
	// Copy: the link's buffer is only lent to us, and the TTL is rewritten.
	bp := getBuf(len(h) + wire.NetworkHeadroom)
	defer putBuf(bp)
	out := (*bp)[wire.NetworkHeadroom : wire.NetworkHeadroom+len(h)]
	copy(out, h)
	oh := wire.IPv4(out)
	oh.SetTTL(h.TTL() - 1)
	c.ForwDatagrams.Add(1)
	if len(out) <= ifc.mtu {
		_ = s.transmit(ifc, out)
		return
	}
	if h.DontFragment() {
		// RFC 1191 §4 / RFC 1812 §5.2.7.1: fragmentation needed, with the next-hop MTU.
		c.FragFails.Add(1)
		s.icmp4Error(in, h, wire.ICMPv4DestUnreachable, wire.ICMPv4CodeFragNeeded, ifc.mtu)
		return
	}
	if len(h.Options()) != 0 || h.IsFragment() {
		// Refragmenting fragments and copying options is not implemented.
		c.FragFails.Add(1)
		return
	}
	_ = s.fragment4(ifc, h.Src(), dst, h.Protocol(), h.ID(), h.TTL()-1, h.TOS(), h.Payload())
}

// martian6 reports address pairs no IPv6 packet from a link may carry, as Linux's
// ip6_rcv_core refuses them:
//   - RFC 4291 §2.5.2-3: the unspecified address is never a destination, and ::1 never
//     crosses a link;
//   - RFC 4291 §2.7: a multicast source is invalid; scope 0 is reserved, and
//     interface-local (scope 1) multicast never leaves its node;
//   - RFC 4291 §2.5.5.2, RFC 4942 §2.1.4: IPv4-mapped addresses name IPv4 nodes inside
//     an IPv6 API and never appear on the wire (they would also make one packet look
//     like IPv4 to every later layer).
func martian6(ifc *Interface, src, dst netip.Addr) bool {
	if src.IsMulticast() || src.Is4In6() || dst.Is4In6() || dst.IsUnspecified() {
		return true
	}
	if !ifc.loopback && (src.IsLoopback() || dst.IsLoopback() || dst.IsInterfaceLocalMulticast()) {
		return true
	}
	if dst.IsMulticast() && dst.As16()[1]&0x0f == 0 {
		return true
	}
	return false
}

// input6 validates the fixed header, walks the extension headers (RFC 8200 §4.1) and
// delivers the upper-layer payload.
func (s *Stack) input6(ifc *Interface, p []byte, csumOK bool) {
	c := &s.ip6
	c.InReceives.Add(1)
	h, err := wire.ParseIPv6(p)
	if err != nil {
		if errors.Is(err, errTooShort) || errors.Is(err, errBadLength) {
			c.InTruncatedPkts.Add(1)
		}
		c.InHdrErrors.Add(1)
		return
	}
	src, dst := h.Src(), h.Dst()
	if martian6(ifc, src, dst) {
		c.InAddrErrors.Add(1)
		return
	}
	t := s.tab.Load()
	if _, ok := t.local[dst]; !ok {
		if dst.IsMulticast() {
			// No multicast listeners (and no NDP: berth's links carry bare IP packets).
			c.InAddrErrors.Add(1)
			return
		}
		proto, off, frag, ok := walk6(h)
		if ok && frag >= 0 && s.unmatched.Load() != nil {
			// As for IPv4: reassemble (RFC 8200 §4.5) for the hook, wherever the Fragment
			// header sits in the chain.
			fh := h[frag : frag+8]
			if binary.BigEndian.Uint16(fh[2:])&^6 != 0 {
				s.reasm.add6(ifc, h, frag, true)
				return
			}
			// RFC 6946: an atomic fragment is processed as is, through the headers
			// after its Fragment header.
			proto, off, frag, ok = walk6From(h, fh[0], frag+8)
			ok = ok && frag < 0
		}
		if !ok || proto == wire.ProtoFragment || !s.takeForeign(proto, src, dst, h[off:], csumOK) {
			s.forward6(ifc, h, csumOK)
		}
		return
	}
	s.local6(ifc, h, csumOK)
}

// local6 processes the extension headers of a packet addressed to us (RFC 8200 §4) and
// delivers its upper-layer payload: hop-by-hop and destination options are interpreted
// (§4.2: an unrecognized option is skipped or refused as its action bits say), a
// Fragment header sends the packet to reassembly, which brings the whole datagram back
// here to walk the headers that follow it, and an atomic fragment (RFC 6946) goes on
// through the headers after its Fragment header.
func (s *Stack) local6(ifc *Interface, h wire.IPv6, csumOK bool) {
	c := &s.ip6
	it := h.Extensions()
	for it.Next() {
		e := it.Header()
		switch e.Type {
		case wire.ProtoHopByHop, wire.ProtoDestOpts:
			if act, at := wire.UnrecognizedIPv6Option(e.Bytes); at >= 0 {
				c.InHdrErrors.Add(1)
				// RFC 8200 §4.2: action 10 answers even a multicast destination, 11
				// only a unicast one (RFC 4443 §2.4(e.3)); 01 discards silently.
				if act == wire.IPv6OptActionICMP || (act == wire.IPv6OptActionICMPUnicast && !h.Dst().IsMulticast()) {
					s.icmp6Error(ifc, h, wire.ICMPv6ParamProblem, wire.ICMPv6CodeUnrecognizedOption, e.Offset+at)
				}
				return
			}
		case wire.ProtoRouting:
			if e.Bytes[3] != 0 {
				// RFC 8200 §4.4: berth routes no source routes; with segments left the
				// packet is not finished here.
				c.InHdrErrors.Add(1)
				return
			}
		case wire.ProtoFragment:
			fh := wire.IPv6Fragment(e.Bytes)
			if fh.IsAtomic() {
				continue
			}
			if fh.Offset() == 0 && incompleteChain(h, fh.NextHeader(), e.Offset+8) {
				// RFC 8200 §4.5, RFC 7112 §5: a first fragment must hold every header
				// through the upper-layer one (else a filter cannot see the ports);
				// discard it with Parameter Problem code 3, pointer 0 (Linux counts
				// it in InUnknownProtos).
				c.InUnknownProtos.Add(1)
				s.icmp6Error(ifc, h, wire.ICMPv6ParamProblem, wire.ICMPv6CodeIncompleteChain, 0)
				return
			}
			s.reasm.add6(ifc, h, e.Offset, false)
			return
		}
	}
	if it.Err() != nil {
		c.InHdrErrors.Add(1)
		return
	}
	proto, off := it.Upper()
	s.deliver(ifc, h, h.Src(), h.Dst(), proto, h[off:], csumOK)
}

// incompleteChain reports whether the headers of a first fragment, from the one of type nh
// at off, run past its end before the upper-layer header and its fixed part
// (wire.UpperHeaderMin). A chain that is malformed rather than cut short is left to the
// walk after reassembly to refuse.
func incompleteChain(h wire.IPv6, nh uint8, off int) bool {
	for range 16 {
		switch nh {
		case wire.ProtoHopByHop, wire.ProtoRouting, wire.ProtoDestOpts:
			if len(h)-off < 8 || len(h)-off < (int(h[off+1])+1)*8 {
				return true
			}
			nh, off = h[off], off+(int(h[off+1])+1)*8
		case wire.ProtoFragment:
			return false
		default:
			return len(h)-off < wire.UpperHeaderMin(nh)
		}
	}
	return false
}

// walk6 skips hop-by-hop, routing and destination options headers and finds either the
// upper-layer header (proto, off) or a fragment header (frag is its offset, else -1).
// Options inside are not interpreted; a routing header with segments left is refused
// (RFC 8200 §4.4; berth is not a router of source routes).
func walk6(h wire.IPv6) (proto uint8, off int, frag int, ok bool) {
	return walk6From(h, h.NextHeader(), wire.IPv6HeaderLen)
}

// walk6From is walk6 from the header of type nh at off (after an atomic fragment's
// Fragment header, say, or from the fragmentable part of a reassembled packet).
func walk6From(h wire.IPv6, nh uint8, off int) (proto uint8, _ int, frag int, ok bool) {
	first := off == wire.IPv6HeaderLen
	for i := 0; i < 16; i++ {
		switch nh {
		case wire.ProtoHopByHop, wire.ProtoRouting, wire.ProtoDestOpts:
			if nh == wire.ProtoHopByHop && (i != 0 || !first) {
				return 0, 0, -1, false // RFC 8200 §4.1: hop-by-hop only right after the header
			}
			if len(h)-off < 8 {
				return 0, 0, -1, false
			}
			l := (int(h[off+1]) + 1) * 8
			if len(h)-off < l {
				return 0, 0, -1, false
			}
			if nh == wire.ProtoRouting && h[off+3] != 0 {
				return 0, 0, -1, false
			}
			nh = h[off]
			off += l
		case wire.ProtoFragment:
			if len(h)-off < 8 {
				return 0, 0, -1, false
			}
			return wire.ProtoFragment, off, off, true
		default:
			return nh, off, -1, true
		}
	}
	return 0, 0, -1, false
}

// forward6 routes a packet that is not for us (RFC 8200 §3: hop limit), or drops it.
// IPv6 routers never fragment: too big means Packet Too Big (RFC 8201 §4, RFC 4443 §3.2).
func (s *Stack) forward6(in *Interface, h wire.IPv6, csumOK bool) {
	c := &s.ip6
	if !s.opts.Forwarding {
		c.InAddrErrors.Add(1)
		return
	}
	if csumOK {
		wire.FillTCPChecksum(h) // the link left it to us; the next hop will check it
	}
	if h.Src().IsLinkLocalUnicast() || h.Dst().IsLinkLocalUnicast() {
		c.InAddrErrors.Add(1) // RFC 4291 §2.5.6: link-local is never forwarded
		return
	}
	if h.HopLimit() <= 1 {
		c.InHdrErrors.Add(1)
		s.icmp6Error(in, h, wire.ICMPv6TimeExceeded, wire.ICMPv6CodeHopLimitExceeded, 0)
		return
	}
	ifc, _, err := s.resolve(h.Dst())
	if err != nil || ifc.loopback {
		c.InNoRoutes.Add(1)
		s.icmp6Error(in, h, wire.ICMPv6DestUnreachable, wire.ICMPv6CodeNoRoute, 0)
		return
	}
	if len(h) > ifc.mtu {
		c.InTooBigErrors.Add(1)
		s.icmp6Error(in, h, wire.ICMPv6PacketTooBig, 0, ifc.mtu)
		return
	}
	bp := getBuf(len(h))
	defer putBuf(bp)
	out := (*bp)[:len(h)]
	copy(out, h)
	wire.IPv6(out).SetHopLimit(h.HopLimit() - 1)
	c.ForwDatagrams.Add(1)
	_ = s.transmit(ifc, out)
}

// ipECN is the ECN field of the IP header ip (RFC 3168 §5): the low two bits of IPv4's
// TOS byte, of IPv6's traffic class.
func ipECN(ip []byte) transport.ECN {
	if len(ip) < 2 {
		return transport.NotECT
	}
	if ip[0]>>4 == 4 {
		return transport.ECN(ip[1] & 3)
	}
	return transport.ECN(ip[1]>>4) & 3 // traffic class: the low nibble of byte 0, the high of byte 1
}
