package forward

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

// The stack reassembles only datagrams addressed to itself; fragments for other
// destinations are routed (or dropped), never offered to the unmatched-flow hook. The
// Forwarder terminates flows to every destination, so the namespace's link is wrapped:
// fragments for non-local destinations are reassembled here (RFC 791 §3.2, RFC 8200
// §4.5) and the whole datagram is delivered to the stack, which then passes it to the
// hook like any other.

const (
	defragTimeout = 30 * time.Second // net.ipv4.ipfrag_time
	defragMaxMem  = 4 << 20          // net.ipv4.ipfrag_high_thresh
)

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8
}

type fragPart struct {
	off  int
	data []byte
}

type fragBuf struct {
	start   time.Time
	parts   []fragPart
	total   int // payload length, once the last fragment is seen; -1 before
	bytes   int
	ttl     uint8
	proto   uint8 // IPv6: the fragmentable part's next header (from the offset-0 fragment)
	hasHead bool
}

// defragEndpoint wraps the namespace's link endpoint.
type defragEndpoint struct {
	link.Endpoint
	isLocal func(netip.Addr) bool
	d       atomic.Pointer[link.Dispatcher]

	mu    sync.Mutex
	bufs  map[fragKey]*fragBuf
	bytes int
}

func newDefrag(ep link.Endpoint, isLocal func(netip.Addr) bool) *defragEndpoint {
	return &defragEndpoint{Endpoint: ep, isLocal: isLocal, bufs: map[fragKey]*fragBuf{}}
}

// Attach puts the wrapper between the endpoint and d.
func (e *defragEndpoint) Attach(d link.Dispatcher) {
	if d == nil {
		e.d.Store(nil)
		e.Endpoint.Attach(nil)
		return
	}
	e.d.Store(&d)
	e.Endpoint.Attach(link.DispatcherFunc(e.deliver))
}

func (e *defragEndpoint) deliver(pkts [][]byte) {
	dp := e.d.Load()
	if dp == nil {
		return
	}
	d := *dp
	start := 0
	for i, p := range pkts {
		whole, isFrag := e.fragment(p)
		if !isFrag {
			continue
		}
		// Deliver what came before in order, then the reassembled datagram, if complete.
		if start < i {
			d.DeliverPackets(pkts[start:i])
		}
		start = i + 1
		if whole != nil {
			d.DeliverPackets([][]byte{whole})
		}
	}
	if start < len(pkts) {
		d.DeliverPackets(pkts[start:])
	}
}

// fragment takes p if it is a fragment for a non-local destination, and returns the
// whole datagram when p completes one.
func (e *defragEndpoint) fragment(p []byte) (whole []byte, isFrag bool) {
	if len(p) == 0 {
		return nil, false
	}
	switch p[0] >> 4 {
	case 4:
		h, err := wire.ParseIPv4(p)
		if err != nil || !h.IsFragment() || e.isLocal(h.Dst()) {
			return nil, false
		}
		k := fragKey{h.Src(), h.Dst(), uint32(h.ID()), h.Protocol()}
		return e.add(k, h.FragmentOffset(), h.MoreFragments(), h.Payload(), h.TTL(), h.Protocol()), true
	case 6:
		h, err := wire.ParseIPv6(p)
		// Only the common layout: the fragment header right after the fixed header.
		if err != nil || h.NextHeader() != wire.ProtoFragment || e.isLocal(h.Dst()) || len(h) < wire.IPv6HeaderLen+8 {
			return nil, false
		}
		fh := h[wire.IPv6HeaderLen:]
		fo := binary.BigEndian.Uint16(fh[2:])
		if fo&^7 == 0 && fo&1 == 0 {
			// RFC 6946: an atomic fragment is processed as is (the stack does).
			return nil, false
		}
		k := fragKey{h.Src(), h.Dst(), binary.BigEndian.Uint32(fh[4:]), 0}
		return e.add(k, int(fo&^7), fo&1 != 0, fh[8:], h.HopLimit(), fh[0]), true
	}
	return nil, false
}

// add records one fragment and returns the datagram (with a fresh IP header) when whole.
func (e *defragEndpoint) add(k fragKey, off int, more bool, data []byte, ttl, proto uint8) []byte {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	b := e.bufs[k]
	if b == nil {
		e.expireLocked(now)
		b = &fragBuf{start: now, total: -1}
		e.bufs[k] = b
	}
	end := off + len(data)
	if end > 0xffff || e.bytes+len(data) > defragMaxMem || (more && len(data)%8 != 0) {
		e.dropLocked(k, b) // RFC 791: too big, or out of memory
		return nil
	}
	if !more {
		if b.total >= 0 && b.total != end {
			e.dropLocked(k, b)
			return nil
		}
		b.total = end
	}
	if off == 0 {
		b.hasHead, b.ttl, b.proto = true, ttl, proto
	}
	b.parts = append(b.parts, fragPart{off, slices.Clone(data)})
	b.bytes += len(data)
	e.bytes += len(data)
	if b.total < 0 || !b.hasHead {
		return nil
	}
	slices.SortFunc(b.parts, func(x, y fragPart) int { return x.off - y.off })
	covered := 0
	for _, fp := range b.parts {
		if fp.off > covered {
			return nil // a hole
		}
		covered = max(covered, fp.off+len(fp.data))
	}
	if covered < b.total {
		return nil
	}
	e.dropLocked(k, b)
	v4 := k.src.Is4()
	hl := wire.IPv6HeaderLen
	if v4 {
		hl = wire.IPv4MinHeaderLen
	}
	if hl+b.total > 0xffff && v4 {
		return nil
	}
	out := make([]byte, hl+b.total)
	for _, fp := range b.parts {
		// Overlaps (RFC 5722 forbids them in IPv6) resolve to the later copy.
		copy(out[hl+fp.off:], fp.data)
	}
	if v4 {
		(&wire.IPv4Fields{TotalLen: len(out), ID: uint16(k.id), TTL: b.ttl, Protocol: k.proto, Src: k.src, Dst: k.dst}).Encode(out)
	} else {
		(&wire.IPv6Fields{PayloadLen: b.total, NextHeader: b.proto, HopLimit: b.ttl, Src: k.src, Dst: k.dst}).Encode(out)
	}
	return out
}

func (e *defragEndpoint) dropLocked(k fragKey, b *fragBuf) {
	delete(e.bufs, k)
	e.bytes -= b.bytes
}

// expireLocked drops datagrams that waited too long for their missing fragments
// (RFC 791 §3.2: the reassembly timer; RFC 8200 §4.5: 60 s, Linux uses ipfrag_time).
func (e *defragEndpoint) expireLocked(now time.Time) {
	for k, b := range e.bufs {
		if now.Sub(b.start) > defragTimeout {
			e.dropLocked(k, b)
		}
	}
}
