package ether

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

// txScratch is one WritePackets call's frames: buffers reused from call to call, so the
// write path allocates nothing once warm.
type txScratch struct {
	bufs   [][]byte
	frames [][]byte
	idx    []int // idx[k]: the index in pkts of frames[k]
	// For a link.FrameWriter: the headers (slices of hdrBuf) and the packets behind them.
	hdrBuf []byte
	hdrs   [][]byte
}

// header returns the k-th reusable 14-byte header buffer; n is the most headers this
// call needs, so the slices handed out earlier stay valid.
func (s *txScratch) header(k, n int) []byte {
	if cap(s.hdrBuf) < n*wire.EthernetHeaderLen {
		s.hdrBuf = make([]byte, n*wire.EthernetHeaderLen)
	}
	return s.hdrBuf[k*wire.EthernetHeaderLen : (k+1)*wire.EthernetHeaderLen : (k+1)*wire.EthernetHeaderLen]
}

// frame returns the k-th reusable buffer with room for an n-byte frame.
func (s *txScratch) frame(k, n int) []byte {
	for len(s.bufs) <= k {
		s.bufs = append(s.bufs, nil)
	}
	if cap(s.bufs[k]) < n {
		s.bufs[k] = make([]byte, n, max(n, 2048))
	}
	return s.bufs[k][:n]
}

// nextHop returns where pkt (an IP packet) goes on the link: the destination MAC when it
// needs no resolution (multicast, broadcast), or the address to resolve.
func (e *Endpoint) nextHop(pkt []byte) (mac wire.MAC, direct bool, nh netip.Addr, ok bool) {
	switch {
	case len(pkt) >= wire.IPv4MinHeaderLen && pkt[0]>>4 == 4:
		d := [4]byte(pkt[16:20])
		dst := netip.AddrFrom4(d)
		if dst.IsMulticast() {
			return wire.IPv4MulticastMAC(d), true, nh, true
		}
		if d == [4]byte{255, 255, 255, 255} || e.isBroadcast4(dst) {
			return wire.BroadcastMAC, true, nh, true
		}
		if e.onLink(dst) {
			return mac, false, dst, true
		}
		if e.cfg.Gateway4.IsValid() {
			return mac, false, e.cfg.Gateway4, true
		}
	case len(pkt) >= wire.IPv6HeaderLen && pkt[0]>>4 == 6:
		d := [16]byte(pkt[24:40])
		dst := netip.AddrFrom16(d)
		if d[0] == 0xff {
			return wire.IPv6MulticastMAC(d), true, nh, true
		}
		if e.onLink(dst) {
			return mac, false, dst, true
		}
		if e.cfg.Gateway6.IsValid() {
			return mac, false, e.cfg.Gateway6, true
		}
	}
	return mac, false, nh, false
}

// isBroadcast4 reports whether a is the directed broadcast address of an on-link subnet
// (RFC 919; not for /31 and /32, RFC 3021).
func (e *Endpoint) isBroadcast4(a netip.Addr) bool {
	for _, p := range e.addrs.Load().nets {
		if p.Addr().Is4() && p.Bits() < 31 && p.Contains(a) {
			b := a.As4()
			host := ^uint32(0) >> p.Bits()
			if binary.BigEndian.Uint32(b[:])&host == host {
				return true
			}
		}
	}
	return false
}

// lastHop remembers, within one write call, the destination of the last packet framed
// and its MAC, so a batch to one host costs one next-hop decision and one lookup.
type lastHop struct {
	dst [16]byte // the IPv4 or IPv6 destination bytes; len 4 or 16 in n
	n   int
	mac wire.MAC
}

// resolve returns the destination MAC for pkt, or queues a copy of it on its next hop's
// INCOMPLETE entry (ok false, and a solicitation goes out), or drops it (counted).
func (e *Endpoint) resolve(pkt []byte, gso int, last *lastHop) (wire.MAC, bool) {
	return e.resolveGather(pkt, nil, nil, gso, last)
}

// resolveGather is resolve of the packet pkt+p1+p2 (its IP header in pkt): a packet that
// waits for resolution is queued joined.
func (e *Endpoint) resolveGather(pkt, p1, p2 []byte, gso int, last *lastHop) (wire.MAC, bool) {
	var d []byte
	switch {
	case len(pkt) >= wire.IPv4MinHeaderLen && pkt[0]>>4 == 4:
		d = pkt[16:20]
	case len(pkt) >= wire.IPv6HeaderLen && pkt[0]>>4 == 6:
		d = pkt[24:40]
	}
	if last.n != 0 && len(d) == last.n && string(d) == string(last.dst[:last.n]) {
		return last.mac, true
	}
	mac, direct, nh, ok := e.nextHop(pkt)
	if !ok {
		e.ctr.EtherOutNoRoutes.Add(1)
		return mac, false
	}
	if !direct {
		e.mu.Lock()
		if e.closed.Load() {
			e.mu.Unlock()
			return mac, false
		}
		var n *neighbor
		var sol bool
		mac, ok, n, sol = e.lookupLocked(nh)
		if !ok && n != nil {
			e.enqueueLocked(n, pkt, p1, p2, gso)
		} else if !ok {
			e.ctr.NeighUnresolvedDiscards.Add(1)
		}
		e.mu.Unlock()
		if sol {
			e.solicit(nh, wire.MAC{})
		}
		if !ok {
			return mac, false
		}
	}
	last.n = copy(last.dst[:], d)
	last.mac = mac
	return mac, true
}

// WritePackets frames pkts (IP packets up to MTU bytes) and writes them to the device.
// Packets whose next hop is not resolved yet wait, a bounded number, in its neighbour
// entry; those with no route (off-link, no gateway) are dropped and counted. Like the
// device it stops at a packet longer than the MTU with syscall.EMSGSIZE. After Close it
// returns net.ErrClosed.
func (e *Endpoint) WritePackets(pkts [][]byte) (int, error) {
	if e.closed.Load() {
		return 0, net.ErrClosed
	}
	sc := e.tx.get()
	defer e.tx.put(sc)
	frames, idx, hdrs := sc.frames[:0], sc.idx[:0], sc.hdrs[:0]
	var (
		last   lastHop
		tooBig = -1
	)
	for i, p := range pkts {
		if len(p) > e.mtu {
			tooBig = i
			break
		}
		mac, ok := e.resolve(p, 0, &last)
		if !ok {
			continue
		}
		hdr := wire.EthernetFields{Dst: mac, Src: e.mac, EtherType: etherTypeOf(p)}
		if e.fw != nil {
			// The device gathers header and packet itself: no copy here.
			h := sc.header(len(hdrs), len(pkts))
			hdr.Encode(h)
			hdrs = append(hdrs, h)
			frames = append(frames, p)
		} else {
			f := sc.frame(len(frames), wire.EthernetHeaderLen+len(p))
			hdr.Encode(f)
			copy(f[wire.EthernetHeaderLen:], p)
			frames = append(frames, f)
		}
		idx = append(idx, i)
	}
	sc.frames, sc.idx, sc.hdrs = frames, idx, hdrs
	var err error
	n := len(pkts)
	if tooBig >= 0 {
		n, err = tooBig, syscall.EMSGSIZE
	}
	if len(frames) > 0 {
		var m int
		var werr error
		if e.fw != nil {
			m, werr = e.fw.WriteFrames(hdrs, frames)
		} else {
			m, werr = e.dev.WritePackets(frames)
		}
		e.ctr.EtherOutFrames.Add(uint64(m))
		if werr != nil {
			e.ctr.EtherOutErrors.Add(1)
			err = werr
			if m < len(idx) {
				n = idx[m]
			}
		}
	}
	clear(frames) // they may be the caller's packets: not kept
	return n, err
}

// WriteGSO frames pkt, a TCP super-segment (link.GSOEndpoint), and hands it to the device
// to segment. It returns syscall.EOPNOTSUPP when the device does not segment.
func (e *Endpoint) WriteGSO(pkt []byte, mss int) error {
	if e.closed.Load() {
		return net.ErrClosed
	}
	if e.gso == nil {
		return syscall.EOPNOTSUPP
	}
	var last lastHop
	mac, ok := e.resolve(pkt, mss, &last)
	if !ok {
		return nil
	}
	sc := e.tx.get()
	defer e.tx.put(sc)
	hdr := wire.EthernetFields{Dst: mac, Src: e.mac, EtherType: etherTypeOf(pkt)}
	var err error
	if e.gfw != nil {
		h := sc.header(0, 1)
		hdr.Encode(h)
		err = e.gfw.WriteGSOFrame(h, pkt, mss)
	} else {
		f := sc.frame(0, wire.EthernetHeaderLen+len(pkt))
		hdr.Encode(f)
		copy(f[wire.EthernetHeaderLen:], pkt)
		err = e.gso.WriteGSO(f, mss)
	}
	if err != nil {
		e.ctr.EtherOutErrors.Add(1)
	} else {
		e.ctr.EtherOutFrames.Add(1)
	}
	return err
}

var _ link.GSOGatherWriter = (*Endpoint)(nil)

// WriteGSOGather implements link.GSOGatherWriter: WriteGSO of the super-segment
// head+p1+p2 (its IP and TCP headers in head), which a device that gathers
// (link.GSOFrameGatherWriter) writes behind the Ethernet header without a copy; for any
// other device the frame is joined here.
func (e *Endpoint) WriteGSOGather(head, p1, p2 []byte, mss int) error {
	if e.closed.Load() {
		return net.ErrClosed
	}
	if e.gso == nil {
		return syscall.EOPNOTSUPP
	}
	var last lastHop
	mac, ok := e.resolveGather(head, p1, p2, mss, &last)
	if !ok {
		return nil
	}
	sc := e.tx.get()
	defer e.tx.put(sc)
	hdr := wire.EthernetFields{Dst: mac, Src: e.mac, EtherType: etherTypeOf(head)}
	var err error
	switch {
	case e.ggw != nil:
		h := sc.header(0, 1)
		hdr.Encode(h)
		err = e.ggw.WriteGSOFrameGather(h, head, p1, p2, mss)
	default:
		n := len(head) + len(p1) + len(p2)
		f := sc.frame(0, wire.EthernetHeaderLen+n)
		hdr.Encode(f)
		k := wire.EthernetHeaderLen + copy(f[wire.EthernetHeaderLen:], head)
		k += copy(f[k:], p1)
		copy(f[k:], p2)
		if e.gfw != nil {
			err = e.gfw.WriteGSOFrame(f[:wire.EthernetHeaderLen], f[wire.EthernetHeaderLen:], mss)
		} else {
			err = e.gso.WriteGSO(f, mss)
		}
	}
	if err != nil {
		e.ctr.EtherOutErrors.Add(1)
	} else {
		e.ctr.EtherOutFrames.Add(1)
	}
	return err
}

// sendQueued writes frames that waited for resolution (headers already filled in).
func (e *Endpoint) sendQueued(q []queued) {
	if len(q) == 0 {
		return
	}
	batch := make([][]byte, 0, len(q))
	flush := func() {
		if len(batch) > 0 {
			m, _ := e.dev.WritePackets(batch)
			e.ctr.EtherOutFrames.Add(uint64(m))
			batch = batch[:0]
		}
	}
	for _, p := range q {
		if p.gso > 0 && e.gso != nil {
			flush()
			if e.gso.WriteGSO(p.frame, p.gso) == nil {
				e.ctr.EtherOutFrames.Add(1)
			}
			continue
		}
		batch = append(batch, p.frame)
	}
	flush()
}

// ctlFrame is a buffer for one control frame (ARP, ND, DHCP) the endpoint originates.
type ctlFrame struct {
	b [1514]byte
	v [1][]byte
}

// sendCtl writes the first n bytes of c to the device and recycles c.
func (e *Endpoint) sendCtl(c *ctlFrame, n int) {
	c.v[0] = c.b[:n]
	if m, _ := e.dev.WritePackets(c.v[:]); m == 1 {
		e.ctr.EtherOutFrames.Add(1)
	}
	c.v[0] = nil
	e.ctl.put(c)
}
