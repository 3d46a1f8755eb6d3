package stack

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/wire"
)

// reassembler puts IPv4 (RFC 791 §3.2, RFC 815) and IPv6 (RFC 8200 §4.5) fragments back
// together. Each family has its own table and memory budget, as Linux has
// net.ipv4.ipfrag_* and net.ipv6.ip6frag_*, so a flood of one cannot starve the other.
// Memory is bounded and the table keeps serving during a flood of fragments that never
// complete: when a table holds more than FragHighThresh bytes, the least recently used
// datagrams are evicted until it holds FragLowThresh (the evictor Linux had before 4.17; a
// table that only refuses new datagrams when full is blocked for FragTimeout by a few
// thousand spoofed fragments). One source (an IPv4 address, an IPv6 /64, the unit an
// attacker owns) holds at most a quarter of the budget: over that its own least recently
// used datagrams go first, so it cannot push everyone else's out. Each datagram has
// FragTimeout to complete. A fragment that overlaps one already received discards the whole
// datagram and any later fragments of it (RFC 5722; Linux applies the same rule to IPv4);
// exact duplicates are ignored.
type reassembler struct {
	s      *Stack
	v4, v6 fragTable
	c4, c6 reasmCounters
}

// fragTable is one family's datagrams being reassembled.
type fragTable struct {
	mu    sync.Mutex
	m     map[fragKey]*reasm
	srcs  map[netip.Prefix]*fragSource
	bytes int
	// lru lists every datagram, least recently used (by fragment arrival) first.
	lru  reasmList
	shut bool
}

// fragSource is what one source holds in a table.
type fragSource struct {
	key   netip.Prefix
	bytes int
	lru   reasmList
}

// reasmList is an intrusive doubly linked list of datagrams; which links it uses is
// chosen by the table (global) or source (per-source) list.
type reasmList struct{ head, tail *reasm }

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8 // IPv4: part of the key (RFC 791); IPv6: zero
}

// Memory charged beyond the fragment data: the datagram's bookkeeping (this struct, its
// map entries and timer), and each fragment's. Linux charges skb truesize likewise.
const (
	reasmCost = 512
	pieceCost = 64
)

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
	pieces  []piece // received fragments, sorted by offset, never overlapping
	have    int     // payload bytes received
	total   int     // payload length, -1 until the last fragment arrives
	mem     int
	timer   clock.Timer
	src     *fragSource

	prev, next   *reasm // in the table's lru
	sprev, snext *reasm // in the source's lru
}

// piece is one fragment's payload, copied out of the link's buffer: small fragments into
// pooled buffers (so a flood churns the pool, not the heap).
type piece struct {
	off, end int
	b        *[]byte
}

func (r *reassembler) init(s *Stack) {
	r.s = s
	r.c4 = reasmCounters{s.ip4.ReasmFails, s.ip4.ReasmOKs, s.ip4.ReasmTimeout, s.ip4.ReasmOverlaps, s.ip4.ReasmEvictions}
	r.c6 = reasmCounters{s.ip6.ReasmFails, s.ip6.ReasmOKs, s.ip6.ReasmTimeout, s.ip6.ReasmOverlaps, s.ip6.ReasmEvictions}
	for _, t := range []*fragTable{&r.v4, &r.v6} {
		t.m = map[fragKey]*reasm{}
		t.srcs = map[netip.Prefix]*fragSource{}
	}
}

func (r *reassembler) close() {
	for _, t := range []*fragTable{&r.v4, &r.v6} {
		t.mu.Lock()
		t.shut = true
		for _, d := range t.m {
			d.timer.Stop()
			t.remove(d)
			d.release()
		}
		t.mu.Unlock()
	}
}

// sourceKey is the unit a per-source limit counts: an IPv4 address, or an IPv6 /64 (one
// host's SLAAC prefix: an attacker picks any interface identifier in it).
func sourceKey(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

func (t *fragTable) charge(d *reasm, n int) {
	d.mem += n
	t.bytes += n
	d.src.bytes += n
}

// push adds d at the most recently used end of both lists.
func (t *fragTable) push(d *reasm) {
	d.prev, d.next = t.lru.tail, nil
	if t.lru.tail != nil {
		t.lru.tail.next = d
	} else {
		t.lru.head = d
	}
	t.lru.tail = d
	l := &d.src.lru
	d.sprev, d.snext = l.tail, nil
	if l.tail != nil {
		l.tail.snext = d
	} else {
		l.head = d
	}
	l.tail = d
}

// unlink takes d off both lists.
func (t *fragTable) unlink(d *reasm) {
	if d.prev != nil {
		d.prev.next = d.next
	} else {
		t.lru.head = d.next
	}
	if d.next != nil {
		d.next.prev = d.prev
	} else {
		t.lru.tail = d.prev
	}
	l := &d.src.lru
	if d.sprev != nil {
		d.sprev.snext = d.snext
	} else {
		l.head = d.snext
	}
	if d.snext != nil {
		d.snext.sprev = d.sprev
	} else {
		l.tail = d.sprev
	}
	d.prev, d.next, d.sprev, d.snext = nil, nil, nil, nil
}

// touch marks d most recently used.
func (t *fragTable) touch(d *reasm) {
	if t.lru.tail != d || d.src.lru.tail != d {
		t.unlink(d)
		t.push(d)
	}
}

// remove takes d out of the table and uncharges it; its pieces stay with d (see release).
func (t *fragTable) remove(d *reasm) {
	delete(t.m, d.key)
	t.unlink(d)
	t.bytes -= d.mem
	d.src.bytes -= d.mem
	d.mem = 0
	if d.src.lru.head == nil {
		delete(t.srcs, d.src.key)
	}
}

// release returns d's fragment buffers to the pool.
func (d *reasm) release() {
	for _, p := range d.pieces {
		putBuf(p.b)
	}
	d.pieces = nil
}

// kill gives d up (an overlap, an impossible length): its data is dropped but the entry
// stays, charged only its bookkeeping, to swallow later fragments until the timer.
func (t *fragTable) kill(d *reasm) {
	d.dead = true
	n := d.mem - reasmCost
	t.bytes -= n
	d.src.bytes -= n
	d.mem = reasmCost
	d.release()
	d.first, d.hdr = nil, nil
}

func (r *reassembler) table(v6 bool) (*fragTable, *reasmCounters) {
	if v6 {
		return &r.v6, &r.c6
	}
	return &r.v4, &r.c4
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

// reasmCounters are one family's reassembly counters.
type reasmCounters struct {
	Fails, OKs, Timeout, Overlaps, Evictions *atomic.Uint64
}

func (r *reassembler) add(ifc *Interface, k fragKey, v6, transit bool, pkt, hdr []byte, proto uint8, off int, pl []byte, more bool) {
	t, c := r.table(v6)
	t.mu.Lock()
	if t.shut {
		t.mu.Unlock()
		return
	}
	d := t.m[k]
	if d == nil {
		sk := sourceKey(k.src)
		src := t.srcs[sk]
		if src == nil {
			src = &fragSource{key: sk}
			t.srcs[sk] = src
		}
		d = &reasm{key: k, ifc: ifc, v6: v6, transit: transit, total: -1, src: src}
		t.m[k] = d
		t.push(d)
		t.charge(d, reasmCost)
		d.timer = r.s.clk.AfterFunc(r.s.opts.FragTimeout, func() { r.expire(k, d) })
	} else {
		t.touch(d)
	}
	if d.dead {
		t.mu.Unlock()
		return
	}
	end := off + len(pl)
	fail := func() {
		t.kill(d)
		t.mu.Unlock()
		c.Fails.Add(1)
	}
	if !more {
		if (d.total >= 0 && d.total != end) || (len(d.pieces) > 0 && d.pieces[len(d.pieces)-1].end > end) {
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
	for i < len(d.pieces) && d.pieces[i].end <= off {
		i++
	}
	if i < len(d.pieces) && d.pieces[i].off < end {
		if d.pieces[i].off == off && d.pieces[i].end == end {
			t.mu.Unlock()
			return
		}
		c.Overlaps.Add(1)
		fail()
		return
	}
	if off == 0 {
		t.charge(d, -len(d.first)-len(d.hdr))
		d.first = append(d.first[:0], pkt[:min(len(pkt), len(hdr)+8+8)]...)
		d.hdr = append(d.hdr[:0], hdr...)
		d.proto = proto
		t.charge(d, len(d.first)+len(d.hdr))
	}
	var b *[]byte
	if len(pl) <= smallBuf {
		b = getBuf(len(pl))
	} else {
		nb := make([]byte, len(pl))
		b = &nb
	}
	copy(*b, pl)
	d.pieces = append(d.pieces, piece{})
	copy(d.pieces[i+1:], d.pieces[i:])
	d.pieces[i] = piece{off, end, b}
	d.have += len(pl)
	t.charge(d, cap(*b)+pieceCost)
	if d.total >= 0 && d.have == d.total && d.hdr != nil {
		// Non-overlapping pieces inside [0, total) that add up to total cover it.
		t.remove(d)
		d.timer.Stop()
		t.mu.Unlock()
		c.OKs.Add(1)
		r.deliver(d)
		return
	}
	r.prune(t, c, d.src)
	t.mu.Unlock()
}

// prune enforces the per-source share and the table's thresholds, evicting least recently
// used datagrams first.
func (r *reassembler) prune(t *fragTable, c *reasmCounters, src *fragSource) {
	high := r.s.opts.FragHighThresh
	for src.bytes > high/4 && src.lru.head != nil {
		t.evict(src.lru.head, c)
	}
	if t.bytes <= high {
		return
	}
	low := r.s.opts.FragLowThresh
	for t.bytes > low && t.lru.head != nil {
		t.evict(t.lru.head, c)
	}
}

// evict drops d to make room; no ICMP is sent (the datagram did not time out).
func (t *fragTable) evict(d *reasm, c *reasmCounters) {
	d.timer.Stop()
	t.remove(d)
	d.release()
	c.Evictions.Add(1)
	if !d.dead {
		c.Fails.Add(1) // a dead datagram was counted when it died
	}
}

// deliver rebuilds a whole packet (header + payload) and hands it to the local delivery
// path, as if it had arrived unfragmented; a transit datagram goes to the unmatched-flow
// hook instead.
func (r *reassembler) deliver(d *reasm) {
	n := len(d.hdr) + d.total
	buf := make([]byte, n)
	copy(buf, d.hdr)
	for _, p := range d.pieces {
		copy(buf[len(d.hdr)+p.off:], (*p.b)[:p.end-p.off])
	}
	d.release()
	if !d.v6 {
		h := wire.IPv4(buf)
		binary.BigEndian.PutUint16(buf[2:], uint16(n))
		binary.BigEndian.PutUint16(buf[6:], 0)
		buf[10], buf[11] = 0, 0
		binary.BigEndian.PutUint16(buf[10:], ^wire.Checksum(buf[:h.HeaderLen()], 0))
		if d.transit {
			r.transit(d, d.proto, h.Payload())
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
		// As for a whole packet (input6): the hook gets the upper layer, past any
		// destination options of the fragmentable part.
		proto, off, frag, ok := walk6From(buf, d.proto, len(d.hdr))
		if !ok || frag >= 0 {
			r.s.ip6.InHdrErrors.Add(1)
			return
		}
		r.transit(d, proto, buf[off:])
		return
	}
	// RFC 8200 §4.5: the reassembled packet is processed from the headers of the
	// fragmentable part on (destination options, say), as if it had come whole.
	r.s.local6(d.ifc, buf, false)
}

// transit offers a reassembled datagram for another host to its transport and the
// unmatched-flow hook (takeForeign). One neither takes (or a hook removed meanwhile) is dropped, never forwarded: a
// router forwards fragments as they came (RFC 1812 §5.2.6, RFC 8200 §4.5), and a whole
// datagram may not fit the next hop's MTU. It counts as InDiscards (RFC 4293: discarded
// though no problem was found in it).
func (r *reassembler) transit(d *reasm, proto uint8, seg []byte) {
	if r.s.takeForeign(proto, d.key.src, d.key.dst, seg, false) {
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
	t, c := r.table(d.v6)
	t.mu.Lock()
	if t.m[k] != d {
		t.mu.Unlock()
		return
	}
	t.remove(d)
	first, dead := d.first, d.dead
	d.first = nil
	d.release()
	t.mu.Unlock()
	if dead {
		return
	}
	c.Timeout.Add(1)
	c.Fails.Add(1)
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

// PendingReassembly reports how many datagrams (IPv4 and IPv6) wait for fragments and the
// bytes charged for them: fragment buffers and bookkeeping. Each family's share stays
// within Options.FragHighThresh.
func (s *Stack) PendingReassembly() (datagrams, bytes int) {
	for _, t := range []*fragTable{&s.reasm.v4, &s.reasm.v6} {
		t.mu.Lock()
		datagrams += len(t.m)
		bytes += t.bytes
		t.mu.Unlock()
	}
	return datagrams, bytes
}
