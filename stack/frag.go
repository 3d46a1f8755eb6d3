package stack

import (
	"encoding/binary"
	"net/netip"
	"sync"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/wire"
)

// reassembler puts IPv4 (RFC 791 §3.2, RFC 815) and IPv6 (RFC 8200 §4.5) fragments back
// together. Memory is capped (FragHighThresh: new datagrams are refused while the cap is
// reached) and each datagram has FragTimeout to complete. A fragment that overlaps one
// already received discards the whole datagram and any later fragments of it (RFC 5722;
// Linux applies the same rule to IPv4); exact duplicates are ignored.
type reassembler struct {
	s     *Stack
	mu    sync.Mutex
	m     map[fragKey]*reasm
	bytes int
	shut  bool
}

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8 // IPv4: part of the key (RFC 791); IPv6: zero
}

type reasm struct {
	key fragKey
	ifc *Interface
	v6  bool
	// transit: the destination is not ours; the datagram is reassembled only to offer it
	// whole to the unmatched-flow hook (see input4/input6).
	transit bool
	dead    bool   // overlapped or failed: swallow further fragments until the timer
	first   []byte // the first fragment's packet start (for the ICMP time-exceeded quote)
	hdr     []byte // header to deliver with: IPv4 header or IPv6 unfragmentable part
	proto   uint8
	data    []byte
	spans   []span // received payload ranges, sorted
	total   int    // payload length, -1 until the last fragment arrives
	mem     int
	timer   clock.Timer
}

type span struct{ lo, hi int }

func (r *reassembler) init(s *Stack) {
	r.s = s
	r.m = map[fragKey]*reasm{}
}

func (r *reassembler) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shut = true
	for k, d := range r.m {
		d.timer.Stop()
		delete(r.m, k)
	}
	r.bytes = 0
}

// add4 takes an IPv4 fragment. transit is set for a fragment to a non-local destination
// (reassembled for the unmatched-flow hook rather than local delivery).
func (r *reassembler) add4(ifc *Interface, h wire.IPv4, transit bool) {
	c := &r.s.ip4
	c.ReasmReqds.Add(1)
	off, pl := h.FragmentOffset(), h.Payload()
	more := h.MoreFragments()
	if (more && len(pl)%8 != 0) || off+len(pl) > 0xffff-h.HeaderLen() || (more && len(pl) == 0) {
		c.ReasmFails.Add(1)
		return
	}
	k := fragKey{src: h.Src(), dst: h.Dst(), id: uint32(h.ID()), proto: h.Protocol()}
	hdr := h[:h.HeaderLen()]
	r.add(ifc, k, false, transit, h, hdr, h.Protocol(), off, pl, more)
}

// add6 takes an IPv6 fragment; frag is the offset of its Fragment header in h. transit
// is as for add4.
func (r *reassembler) add6(ifc *Interface, h wire.IPv6, frag int, transit bool) {
	c := &r.s.ip6
	c.ReasmReqds.Add(1)
	fh := h[frag : frag+8]
	w := binary.BigEndian.Uint16(fh[2:])
	off, more := int(w&^7), w&1 != 0
	pl := h[frag+8:]
	// RFC 8200 §4.5: non-final fragments are multiples of 8; the reassembled payload may not
	// exceed 65535 bytes.
	if (more && len(pl)%8 != 0) || (more && len(pl) == 0) || frag-wire.IPv6HeaderLen+off+len(pl) > 0xffff {
		c.ReasmFails.Add(1)
		c.InHdrErrors.Add(1)
		return
	}
	k := fragKey{src: h.Src(), dst: h.Dst(), id: binary.BigEndian.Uint32(fh[4:])}
	r.add(ifc, k, true, transit, h, h[:frag], fh[0], off, pl, more)
}

func (r *reassembler) counters(v6 bool) (reqFails, oks, timeouts, overlaps interface{ Add(uint64) uint64 }) {
	if v6 {
		c := &r.s.ip6
		return c.ReasmFails, c.ReasmOKs, c.ReasmTimeout, c.ReasmOverlaps
	}
	c := &r.s.ip4
	return c.ReasmFails, c.ReasmOKs, c.ReasmTimeout, c.ReasmOverlaps
}

func (r *reassembler) add(ifc *Interface, k fragKey, v6, transit bool, pkt, hdr []byte, proto uint8, off int, pl []byte, more bool) {
	fails, oks, _, overlaps := r.counters(v6)
	r.mu.Lock()
	if r.shut {
		r.mu.Unlock()
		return
	}
	d := r.m[k]
	if d == nil {
		cost := len(pkt) + 256
		if r.bytes+cost > r.s.opts.FragHighThresh {
			// ipfrag_high_thresh reached: refuse new datagrams until some complete or time out.
			r.mu.Unlock()
			fails.Add(1)
			return
		}
		d = &reasm{key: k, ifc: ifc, v6: v6, transit: transit, total: -1}
		r.m[k] = d
		d.timer = r.s.clk.AfterFunc(r.s.opts.FragTimeout, func() { r.expire(k, d) })
	}
	if d.dead {
		r.mu.Unlock()
		return
	}
	end := off + len(pl)
	fail := func() {
		d.dead = true
		r.bytes -= d.mem
		d.mem, d.data, d.spans, d.first, d.hdr = 0, nil, nil, nil, nil
		r.mu.Unlock()
		fails.Add(1)
	}
	if !more {
		if (d.total >= 0 && d.total != end) || (len(d.spans) > 0 && d.spans[len(d.spans)-1].hi > end) {
			fail() // two different ends, or data beyond the end
			return
		}
		d.total = end
	} else if d.total >= 0 && end > d.total {
		fail()
		return
	}
	// Find the insertion point; an exact duplicate is ignored, any other overlap is fatal.
	i := 0
	for i < len(d.spans) && d.spans[i].hi <= off {
		i++
	}
	if i < len(d.spans) && d.spans[i].lo < end {
		if d.spans[i].lo == off && d.spans[i].hi == end {
			r.mu.Unlock()
			return
		}
		overlaps.Add(1)
		fail()
		return
	}
	if off == 0 {
		d.first = append(d.first[:0], pkt[:min(len(pkt), len(hdr)+8+8)]...)
		d.hdr = append(d.hdr[:0], hdr...)
		d.proto = proto
	}
	if end > len(d.data) {
		if end > cap(d.data) {
			nc := max(end, min(2*cap(d.data), 0xffff))
			if r.bytes+nc-cap(d.data) > r.s.opts.FragHighThresh {
				fail() // over ipfrag_high_thresh: give this datagram up
				return
			}
			nd := make([]byte, end, nc)
			copy(nd, d.data)
			r.bytes += cap(nd) - cap(d.data)
			d.mem += cap(nd) - cap(d.data)
			d.data = nd
		}
		d.data = d.data[:end]
	}
	copy(d.data[off:end], pl)
	d.spans = append(d.spans, span{})
	copy(d.spans[i+1:], d.spans[i:])
	d.spans[i] = span{off, end}
	// Merge neighbours so the list stays short.
	d.spans = mergeSpans(d.spans)
	complete := d.total >= 0 && len(d.spans) == 1 && d.spans[0].lo == 0 && d.spans[0].hi == d.total && d.hdr != nil
	if !complete {
		r.mu.Unlock()
		return
	}
	delete(r.m, k)
	r.bytes -= d.mem
	d.timer.Stop()
	r.mu.Unlock()
	oks.Add(1)
	r.deliver(d)
}

func mergeSpans(s []span) []span {
	out := s[:1]
	for _, x := range s[1:] {
		if last := &out[len(out)-1]; last.hi == x.lo {
			last.hi = x.hi
		} else {
			out = append(out, x)
		}
	}
	return out
}

// deliver rebuilds a whole packet (header + payload) and hands it to the local delivery
// path, as if it had arrived unfragmented; a transit datagram goes to the unmatched-flow
// hook instead.
func (r *reassembler) deliver(d *reasm) {
	n := len(d.hdr) + d.total
	buf := make([]byte, n)
	copy(buf, d.hdr)
	copy(buf[len(d.hdr):], d.data[:d.total])
	if !d.v6 {
		h := wire.IPv4(buf)
		binary.BigEndian.PutUint16(buf[2:], uint16(n))
		binary.BigEndian.PutUint16(buf[6:], 0)
		buf[10], buf[11] = 0, 0
		binary.BigEndian.PutUint16(buf[10:], ^wire.Checksum(buf[:h.HeaderLen()], 0))
		if d.transit {
			r.transit(d, h.Payload())
			return
		}
		r.s.deliver(d.ifc, h, d.key.src, d.key.dst, d.proto, h.Payload(), false)
		return
	}
	// The unfragmentable part ended with a header whose next-header field named the
	// Fragment header; point it at the upper layer instead.
	binary.BigEndian.PutUint16(buf[4:], uint16(n-wire.IPv6HeaderLen))
	setLastNextHeader(buf, len(d.hdr), d.proto)
	if d.transit {
		r.transit(d, buf[len(d.hdr):])
		return
	}
	r.s.deliver(d.ifc, buf, d.key.src, d.key.dst, d.proto, buf[len(d.hdr):], false)
}

// transit offers a reassembled datagram for another host to its transport and the
// unmatched-flow hook (takeForeign). One neither takes (or a hook removed meanwhile) is dropped, never forwarded: a
// router forwards fragments as they came (RFC 1812 §5.2.6, RFC 8200 §4.5), and a whole
// datagram may not fit the next hop's MTU. It counts as InDiscards (RFC 4293: discarded
// though no problem was found in it).
func (r *reassembler) transit(d *reasm, seg []byte) {
	if r.s.takeForeign(d.proto, d.key.src, d.key.dst, seg, false) {
		return
	}
	if d.v6 {
		r.s.ip6.InDiscards.Add(1)
	} else {
		r.s.ip4.InDiscards.Add(1)
	}
}

// setLastNextHeader rewrites the next-header field that precedes offset end in an IPv6
// header chain (the fixed header's, or the last extension header's).
func setLastNextHeader(b []byte, end int, proto uint8) {
	b[nextHeaderField(b, end)] = proto
}

// nextHeaderField returns the offset of the next-header field that names the header
// starting at end in an IPv6 header chain (walked by walk6 already, so lengths are sane).
func nextHeaderField(b []byte, end int) int {
	at, nh, off := 6, b[6], wire.IPv6HeaderLen
	for off < end && off+1 < len(b) {
		at = off
		l := 8 // a Fragment header's second byte is reserved, not a length
		if nh != wire.ProtoFragment {
			l = (int(b[off+1]) + 1) * 8
		}
		nh = b[off]
		off += l
	}
	return at
}

// expire runs FragTimeout after a datagram's first fragment: RFC 792 / RFC 8200 §4.5 send
// "fragment reassembly time exceeded" if the first fragment had arrived.
func (r *reassembler) expire(k fragKey, d *reasm) {
	fails, _, timeouts, _ := r.counters(d.v6)
	r.mu.Lock()
	if r.m[k] != d {
		r.mu.Unlock()
		return
	}
	delete(r.m, k)
	r.bytes -= d.mem
	first, dead := d.first, d.dead
	r.mu.Unlock()
	if dead {
		return
	}
	timeouts.Add(1)
	fails.Add(1)
	if first == nil || d.transit {
		// RFC 792 and RFC 8200 §4.5 leave the error to the destination; for a transit
		// datagram it would come from one of our addresses, which the sender never
		// addressed (Linux's netfilter defragmentation sends none either).
		return
	}
	if d.v6 {
		r.s.icmp6Error(d.ifc, first, wire.ICMPv6TimeExceeded, wire.ICMPv6CodeReassemblyExceeded, 0)
	} else {
		r.s.icmp4Error(d.ifc, first, wire.ICMPv4TimeExceeded, wire.ICMPv4CodeReassemblyExceeded, 0)
	}
}

// PendingReassembly reports how many datagrams wait for fragments and the bytes they hold.
func (s *Stack) PendingReassembly() (datagrams, bytes int) {
	s.reasm.mu.Lock()
	defer s.reasm.mu.Unlock()
	return len(s.reasm.m), s.reasm.bytes
}
