package ether

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/berthnet/berth/wire"
)

// txScratch is one WritePackets call's frames: buffers reused from call to call, so the
// write path allocates nothing once warm.
type txScratch struct {
	bufs   [][]byte
	frames [][]byte
	idx    []int // idx[k]: the index in pkts of frames[k]
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

// resolve returns the destination MAC for pkt, or queues a copy of it on its next hop's
// INCOMPLETE entry (ok false, and a solicitation goes out), or drops it (counted).
func (e *Endpoint) resolve(pkt []byte, gso int, now *time.Time, lastNH *netip.Addr, lastMAC *wire.MAC) (wire.MAC, bool) {
	mac, direct, nh, ok := e.nextHop(pkt)
	if !ok {
		e.ctr.etherOutNoRoutes.Add(1)
		return mac, false
	}
	if direct {
		return mac, true
	}
	if nh == *lastNH {
		return *lastMAC, true
	}
	if now.IsZero() {
		*now = e.clk.Now()
	}
	e.mu.Lock()
	if e.closed.Load() {
		e.mu.Unlock()
		return mac, false
	}
	mac, ok, n, sol := e.lookupLocked(nh, *now)
	if !ok && n != nil {
		e.enqueueLocked(n, pkt, gso)
	} else if !ok {
		e.ctr.neighUnresolvedDiscards.Add(1)
	}
	e.mu.Unlock()
	if sol {
		e.solicit(nh, wire.MAC{})
	}
	if ok {
		*lastNH, *lastMAC = nh, mac
	}
	return mac, ok
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
	frames, idx := sc.frames[:0], sc.idx[:0]
	var (
		now     time.Time
		lastNH  netip.Addr
		lastMAC wire.MAC
		tooBig  = -1
	)
	for i, p := range pkts {
		if len(p) > e.mtu {
			tooBig = i
			break
		}
		mac, ok := e.resolve(p, 0, &now, &lastNH, &lastMAC)
		if !ok {
			continue
		}
		f := sc.frame(len(frames), wire.EthernetHeaderLen+len(p))
		(&wire.EthernetFields{Dst: mac, Src: e.mac, EtherType: etherTypeOf(p)}).Encode(f)
		copy(f[wire.EthernetHeaderLen:], p)
		frames = append(frames, f)
		idx = append(idx, i)
	}
	sc.frames, sc.idx = frames, idx
	var err error
	n := len(pkts)
	if tooBig >= 0 {
		n, err = tooBig, syscall.EMSGSIZE
	}
	if len(frames) > 0 {
		m, werr := e.dev.WritePackets(frames)
		e.ctr.etherOutFrames.Add(uint64(m))
		if werr != nil {
			e.ctr.etherOutErrors.Add(1)
			n, err = idx[m], werr
		}
	}
	clear(frames)
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
	var (
		now     time.Time
		lastNH  netip.Addr
		lastMAC wire.MAC
	)
	mac, ok := e.resolve(pkt, mss, &now, &lastNH, &lastMAC)
	if !ok {
		return nil
	}
	sc := e.tx.get()
	defer e.tx.put(sc)
	f := sc.frame(0, wire.EthernetHeaderLen+len(pkt))
	(&wire.EthernetFields{Dst: mac, Src: e.mac, EtherType: etherTypeOf(pkt)}).Encode(f)
	copy(f[wire.EthernetHeaderLen:], pkt)
	err := e.gso.WriteGSO(f, mss)
	if err != nil {
		e.ctr.etherOutErrors.Add(1)
	} else {
		e.ctr.etherOutFrames.Add(1)
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
			e.ctr.etherOutFrames.Add(uint64(m))
			batch = batch[:0]
		}
	}
	for _, p := range q {
		if p.gso > 0 && e.gso != nil {
			flush()
			if e.gso.WriteGSO(p.frame, p.gso) == nil {
				e.ctr.etherOutFrames.Add(1)
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
		e.ctr.etherOutFrames.Add(1)
	}
	c.v[0] = nil
	e.ctl.put(c)
}
