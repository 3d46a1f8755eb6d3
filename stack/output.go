package stack

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"syscall"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// Packet buffers come from two pools, so neither the loopback queue nor fragmentation
// allocates in steady state.
const (
	smallBuf = 2048
	largeBuf = 65536 + wire.NetworkHeadroom
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}
	batchPool = sync.Pool{New: func() any { return new([1][]byte) }}
)

// getBuf returns a pooled buffer of at least n bytes (n <= largeBuf).
func getBuf(n int) *[]byte {
	if n <= smallBuf {
		return smallPool.Get().(*[]byte)
	}
	return largePool.Get().(*[]byte)
}

func putBuf(b *[]byte) {
	switch cap(*b) {
	case smallBuf:
		*b = (*b)[:smallBuf]
		smallPool.Put(b)
	case largeBuf:
		*b = (*b)[:largeBuf]
		largePool.Put(b)
	}
}

// Output sends one transport packet (Network contract): pkt[:wire.NetworkHeadroom] is free
// for the IP header. TCP packets are sent with DF (RFC 1191 path MTU discovery) and fail with
// EMSGSIZE when too big, except, as Linux does, to an IPv4 destination whose path MTU was
// reported below min_pmtu within mtu_expires (its MTU is locked at the floor: see
// pmtuLocks); other protocols are fragmented by the source as needed (RFC 791
// §3.2, RFC 8200 §4.5).
func (s *Stack) Output(src, dst netip.Addr, proto uint8, pkt []byte) error {
	return s.OutputECN(src, dst, proto, pkt, transport.NotECT)
}

// OutputECN is Output with the IP header's ECN field set to ecn, on every fragment too
// (RFC 3168 §5.3): TCP marks its data ECN-capable (transport.ECNNetwork).
func (s *Stack) OutputECN(src, dst netip.Addr, proto uint8, pkt []byte, ecn transport.ECN) error {
	if len(pkt) < wire.NetworkHeadroom {
		return syscall.EINVAL
	}
	if s.closed.Load() {
		return syscall.ENETDOWN
	}
	src, dst = src.Unmap(), dst.Unmap()
	ifc, rsrc, err := s.resolveFrom(src, dst)
	if err != nil {
		if dst.Is4() {
			s.ip4.OutNoRoutes.Add(1)
		} else {
			s.ip6.OutNoRoutes.Add(1)
		}
		return err
	}
	if !src.IsValid() {
		src = rsrc
	}
	if src.Is4() != dst.Is4() {
		return syscall.EAFNOSUPPORT
	}
	// DF unless the path's MTU is locked at min_pmtu (see pmtuLocks).
	df := proto == wire.ProtoTCP && !(dst.Is4() && s.pmtu.locked(dst, s.clk))
	return s.outputIPTOS(ifc, src, dst, proto, pkt, df, s.opts.DefaultTTL, uint8(ecn&3))
}

// GSOMax reports the largest TCP packet (TCP header and payload) that OutputGSO takes
// towards dst: what the route's link segments itself (link.GSOEndpoint), less the IP
// header; 0 when the link cannot (TCP then sends MSS-sized segments). Part of TCP's
// optional GSO contract (transport.GSONetwork).
func (s *Stack) GSOMax(dst netip.Addr) int {
	dst = dst.Unmap()
	ifc, _, err := s.resolve(dst)
	if err != nil || ifc.loopback {
		return 0
	}
	g, ok := ifc.ep.(link.GSOEndpoint)
	if !ok {
		return 0
	}
	hdr := wire.IPv6HeaderLen
	if dst.Is4() {
		hdr = wire.IPv4MinHeaderLen
	}
	return max(min(g.GSOMaxSize(), 0xffff)-hdr, 0)
}

// OutputGSO sends one TCP super-segment (pkt as for Output, with up to GSOMax bytes after
// the headroom) that the link cuts into segments of mss payload bytes, with DF set on
// each (RFC 1191) as Output sets it. Without a GSO link it fails with EMSGSIZE.
func (s *Stack) OutputGSO(src, dst netip.Addr, pkt []byte, mss int) error {
	return s.OutputGSOECN(src, dst, pkt, mss, transport.NotECT)
}

// OutputGSOECN is OutputGSO with the IP header's ECN field set to ecn, which the link
// copies into every segment it cuts (transport.ECNNetwork).
func (s *Stack) OutputGSOECN(src, dst netip.Addr, pkt []byte, mss int, ecn transport.ECN) error {
	g, h, err := s.gsoHeader(src, dst, pkt, 0, ecn, false)
	if err != nil {
		return err
	}
	if err := g.WriteGSO(h, mss); err != nil {
		s.linkTxErrs.Add(1)
		return err
	}
	return nil
}

var _ transport.GSOGatherNetwork = (*Stack)(nil)

// OutputGSOGather implements transport.GSOGatherNetwork: OutputGSOECN of the packet
// head+p1+p2 (head: the headroom, then the TCP header), handed to a link that gathers
// (link.GSOGatherWriter) in its pieces; EOPNOTSUPP, with nothing sent or counted, when
// the route's link does not.
func (s *Stack) OutputGSOGather(src, dst netip.Addr, head, p1, p2 []byte, mss int, ecn transport.ECN) error {
	g, h, err := s.gsoHeader(src, dst, head, len(p1)+len(p2), ecn, true)
	if err != nil {
		return err
	}
	if err := g.(link.GSOGatherWriter).WriteGSOGather(h, p1, p2, mss); err != nil {
		s.linkTxErrs.Add(1)
		return err
	}
	return nil
}

// gsoHeader routes a super-segment and writes its IP header into pkt's headroom: the
// packet is pkt[NetworkHeadroom:] and then extra bytes more (gather: the payload the link
// takes in pieces, which the route's link must then be able to take). It returns the
// link and the IP packet's start.
func (s *Stack) gsoHeader(src, dst netip.Addr, pkt []byte, extra int, ecn transport.ECN, gather bool) (link.GSOEndpoint, []byte, error) {
	if len(pkt) < wire.NetworkHeadroom {
		return nil, nil, syscall.EINVAL
	}
	if s.closed.Load() {
		return nil, nil, syscall.ENETDOWN
	}
	src, dst = src.Unmap(), dst.Unmap()
	ifc, rsrc, err := s.resolveFrom(src, dst)
	if err != nil {
		return nil, nil, err
	}
	g, ok := ifc.ep.(link.GSOEndpoint)
	if ifc.loopback || !ok {
		return nil, nil, syscall.EMSGSIZE
	}
	if gather {
		if _, ok := ifc.ep.(link.GSOGatherWriter); !ok {
			return nil, nil, syscall.EOPNOTSUPP
		}
	}
	if !src.IsValid() {
		src = rsrc
	}
	payload := len(pkt) - wire.NetworkHeadroom + extra
	var h []byte
	if dst.Is4() {
		s.ip4.OutRequests.Add(1)
		total := wire.IPv4MinHeaderLen + payload
		if total > 0xffff {
			return nil, nil, syscall.EMSGSIZE
		}
		h = pkt[wire.NetworkHeadroom-wire.IPv4MinHeaderLen:]
		f := wire.IPv4Fields{TotalLen: total, ID: uint16(s.ipID.Add(1)), TTL: s.opts.DefaultTTL,
			Protocol: wire.ProtoTCP, Src: src, Dst: dst, Flags: wire.IPv4FlagDF, TOS: uint8(ecn & 3)}
		if s.pmtu.locked(dst, s.clk) {
			f.Flags = 0 // the path's MTU is locked at min_pmtu (see pmtuLocks)
		}
		f.Encode(h)
	} else {
		s.ip6.OutRequests.Add(1)
		if payload > 0xffff {
			return nil, nil, syscall.EMSGSIZE
		}
		h = pkt[wire.NetworkHeadroom-wire.IPv6HeaderLen:]
		f := wire.IPv6Fields{PayloadLen: payload, NextHeader: wire.ProtoTCP, HopLimit: s.opts.DefaultTTL, Src: src, Dst: dst, TrafficClass: uint8(ecn & 3)}
		f.Encode(h)
	}
	return g, h, nil
}

// outputIP writes the IP header into pkt's headroom and sends it on ifc, fragmenting when
// allowed. pkt[:NetworkHeadroom] is headroom; the transport packet follows.
func (s *Stack) outputIP(ifc *Interface, src, dst netip.Addr, proto uint8, pkt []byte, df bool, ttl uint8) error {
	return s.outputIPTOS(ifc, src, dst, proto, pkt, df, ttl, 0)
}

// outputIPTOS is outputIP with tos as IPv4's TOS byte or IPv6's traffic class, on every
// fragment too.
func (s *Stack) outputIPTOS(ifc *Interface, src, dst netip.Addr, proto uint8, pkt []byte, df bool, ttl, tos uint8) error {
	payload := len(pkt) - wire.NetworkHeadroom
	if dst.Is4() {
		s.ip4.OutRequests.Add(1)
		total := wire.IPv4MinHeaderLen + payload
		if total > 0xffff {
			s.ip4.OutDiscards.Add(1)
			return syscall.EMSGSIZE
		}
		id := uint16(s.ipID.Add(1))
		if total > ifc.mtu {
			if df {
				s.ip4.FragFails.Add(1)
				return syscall.EMSGSIZE
			}
			return s.fragment4(ifc, src, dst, proto, id, ttl, tos, pkt[wire.NetworkHeadroom:])
		}
		h := pkt[wire.NetworkHeadroom-wire.IPv4MinHeaderLen:]
		f := wire.IPv4Fields{TotalLen: total, ID: id, TTL: ttl, Protocol: proto, Src: src, Dst: dst, TOS: tos}
		if df {
			f.Flags = wire.IPv4FlagDF
		}
		f.Encode(h)
		return s.transmit(ifc, h)
	}
	s.ip6.OutRequests.Add(1)
	if payload > 0xffff {
		s.ip6.OutDiscards.Add(1)
		return syscall.EMSGSIZE
	}
	if wire.IPv6HeaderLen+payload > ifc.mtu {
		if df {
			s.ip6.FragFails.Add(1)
			return syscall.EMSGSIZE
		}
		return s.fragment6(ifc, src, dst, proto, ttl, tos, pkt[wire.NetworkHeadroom:])
	}
	h := pkt[wire.NetworkHeadroom-wire.IPv6HeaderLen:]
	f := wire.IPv6Fields{PayloadLen: payload, NextHeader: proto, HopLimit: ttl, Src: src, Dst: dst, TrafficClass: tos}
	f.Encode(h)
	return s.transmit(ifc, h)
}

// transmit hands one complete IP packet to ifc's link (or the loopback queue).
func (s *Stack) transmit(ifc *Interface, p []byte) error {
	if ifc.loopback {
		s.loop.enqueue(p)
		return nil
	}
	b := batchPool.Get().(*[1][]byte)
	b[0] = p
	_, err := ifc.ep.WritePackets(b[:])
	b[0] = nil
	batchPool.Put(b)
	if err != nil {
		// A full link queue drops without an error (WritePackets took fewer); an error means
		// the link is down or the packet is too big for it.
		s.linkTxErrs.Add(1)
		if err == syscall.EMSGSIZE {
			return err
		}
		return syscall.ENETDOWN
	}
	return nil
}

// fragment4 splits an IPv4 datagram's payload into fragments that fit ifc's MTU
// (RFC 791 §3.2: fragment payloads are multiples of 8 bytes except the last).
func (s *Stack) fragment4(ifc *Interface, src, dst netip.Addr, proto uint8, id uint16, ttl, tos uint8, payload []byte) error {
	per := (ifc.mtu - wire.IPv4MinHeaderLen) &^ 7
	if per < 8 {
		s.ip4.FragFails.Add(1)
		return syscall.EMSGSIZE
	}
	bp := getBuf(wire.IPv4MinHeaderLen + per)
	defer putBuf(bp)
	for off := 0; off < len(payload); off += per {
		end := min(off+per, len(payload))
		f := wire.IPv4Fields{TotalLen: wire.IPv4MinHeaderLen + end - off, ID: id, TTL: ttl,
			Protocol: proto, Src: src, Dst: dst, FragmentOffset: off, TOS: tos}
		if end < len(payload) {
			f.Flags = wire.IPv4FlagMF
		}
		b := (*bp)[:f.TotalLen]
		f.Encode(b)
		copy(b[wire.IPv4MinHeaderLen:], payload[off:end])
		if err := s.transmit(ifc, b); err != nil {
			s.ip4.FragFails.Add(1)
			return err
		}
		s.ip4.FragCreates.Add(1)
	}
	s.ip4.FragOKs.Add(1)
	return nil
}

// fragment6 is source fragmentation for IPv6 (RFC 8200 §4.5): every fragment carries the
// fixed header and a Fragment header; the offset counts 8-octet units.
func (s *Stack) fragment6(ifc *Interface, src, dst netip.Addr, proto uint8, ttl, tos uint8, payload []byte) error {
	const hl = wire.IPv6HeaderLen + 8
	per := (ifc.mtu - hl) &^ 7
	if per < 8 {
		s.ip6.FragFails.Add(1)
		return syscall.EMSGSIZE
	}
	id := s.frag6.Add(1)
	bp := getBuf(hl + per)
	defer putBuf(bp)
	for off := 0; off < len(payload); off += per {
		end := min(off+per, len(payload))
		b := (*bp)[:hl+end-off]
		f := wire.IPv6Fields{PayloadLen: 8 + end - off, NextHeader: wire.ProtoFragment, HopLimit: ttl, Src: src, Dst: dst, TrafficClass: tos}
		f.Encode(b)
		fh := b[wire.IPv6HeaderLen:hl]
		fh[0], fh[1] = proto, 0
		w := uint16(off)
		if end < len(payload) {
			w |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], w)
		binary.BigEndian.PutUint32(fh[4:], id)
		copy(b[hl:], payload[off:end])
		if err := s.transmit(ifc, b); err != nil {
			s.ip6.FragFails.Add(1)
			return err
		}
		s.ip6.FragCreates.Add(1)
	}
	s.ip6.FragOKs.Add(1)
	return nil
}

// loopback is the "lo" device: a bounded queue and one goroutine that feeds packets back into
// the stack, so Output never re-enters a transport protocol on the caller's goroutine.
type loopback struct {
	s    *Stack
	ifc  *Interface
	q    chan loItem
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.RWMutex // excludes enqueue while closing
	shut bool
}

type loItem struct {
	b *[]byte
	n int
}

func newLoopback(s *Stack, ifc *Interface) *loopback {
	l := &loopback{s: s, ifc: ifc, q: make(chan loItem, loopbackQueue), done: make(chan struct{})}
	l.wg.Add(1)
	go l.run()
	return l
}

func (l *loopback) enqueue(p []byte) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.shut {
		return
	}
	b := getBuf(len(p))
	n := copy(*b, p)
	select {
	case l.q <- loItem{b, n}:
	default:
		// Like netdev_max_backlog: a full backlog drops rather than blocks.
		putBuf(b)
		l.s.loDrops.Add(1)
	}
}

func (l *loopback) run() {
	defer l.wg.Done()
	var batch [1][]byte
	for {
		select {
		case it := <-l.q:
			batch[0] = (*it.b)[:it.n]
			l.ifc.DeliverPackets(batch[:])
			batch[0] = nil
			putBuf(it.b)
		case <-l.done:
			return
		}
	}
}

func (l *loopback) close() {
	l.mu.Lock()
	if l.shut {
		l.mu.Unlock()
		return
	}
	l.shut = true
	close(l.done)
	l.mu.Unlock()
	l.wg.Wait()
	for {
		select {
		case it := <-l.q:
			putBuf(it.b)
		default:
			return
		}
	}
}
