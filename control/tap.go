package control

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/pcap"
	"github.com/berthnet/berth/wire"
)

// Tap records the packets of the links it wraps while captures run. With no capture
// running it costs one atomic load per batch: wrap a host's links at start-up so that
// captures can start at any time.
type Tap struct {
	mu       sync.Mutex                 // serialises changes to sessions
	sessions atomic.Pointer[[]*session] // running captures, replaced on change
	// SinkBytes bounds the bytes buffered for one capture's reader (0: 4 MiB). A capture
	// whose reader falls behind loses records rather than slowing the links down.
	SinkBytes int
	// Ethernet says the wrapped links are frame devices (a TAP device, link/vmsock):
	// their packets are Ethernet II frames, and captures are LINKTYPE_ETHERNET, so ARP
	// and neighbour discovery are recorded too. Set it before the first Wrap.
	Ethernet bool
}

// ethHdrLen is the Ethernet II header of a frame device's packets.
const ethHdrLen = 14

// fillTCPChecksum completes the TCP checksum of p, an IP packet or, on a frame device, an
// Ethernet frame that carries one.
func (t *Tap) fillTCPChecksum(p []byte) {
	if !t.Ethernet {
		wire.FillTCPChecksum(p)
		return
	}
	if len(p) > ethHdrLen {
		switch uint16(p[12])<<8 | uint16(p[13]) {
		case 0x0800, 0x86dd: // IPv4, IPv6
			wire.FillTCPChecksum(p[ethHdrLen:])
		}
	}
}

// Wrap returns ep with its outbound and inbound packets recorded by t's captures.
// Closing the returned endpoint closes ep.
func (t *Tap) Wrap(ep link.Endpoint) link.Endpoint {
	e := &tapEndpoint{inner: ep, t: t}
	if g, ok := ep.(link.GSOEndpoint); ok {
		return &gsoTapEndpoint{tapEndpoint: e, g: g}
	}
	return e
}

// Capture implements Capturer: it writes a pcap stream (LINKTYPE_RAW, or
// LINKTYPE_ETHERNET when t.Ethernet) of the packets of every wrapped link to w.
func (t *Tap) Capture(ctx context.Context, w io.Writer, count int) error {
	max := t.SinkBytes
	if max <= 0 {
		max = 4 << 20
	}
	s := &session{count: int64(count), done: make(chan struct{}), sink: &sink{max: max, wake: make(chan struct{}, 1)}}
	var pw *pcap.Writer
	var err error
	if t.Ethernet {
		// A super-segment of 65535 IP bytes is recorded whole, with its header.
		pw, err = pcap.NewWriter(s.sink, pcap.DefaultSnapLen+ethHdrLen, pcap.WithLinkType(pcap.LinkTypeEthernet))
	} else {
		pw, err = pcap.NewWriter(s.sink, 0)
	}
	if err != nil {
		return err
	}
	s.w = pw
	t.add(s)
	defer t.remove(s)
	var werr error
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		werr = s.sink.drain(w, s.done)
		s.finish() // a failed reader ends the capture
	}()
	select {
	case <-ctx.Done():
		s.finish()
	case <-s.done:
	}
	t.remove(s) // no more records; drain writes what is buffered
	<-flushed
	return werr
}

func (t *Tap) add(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var cur []*session
	if p := t.sessions.Load(); p != nil {
		cur = *p
	}
	next := append(slices.Clone(cur), s)
	t.sessions.Store(&next)
}

func (t *Tap) remove(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.sessions.Load()
	if p == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*p), func(x *session) bool { return x == s })
	t.sessions.Store(&next)
}

// active reports whether a capture is running.
func (t *Tap) active() bool {
	p := t.sessions.Load()
	return p != nil && len(*p) > 0
}

// record gives pkts to every running capture.
func (t *Tap) record(pkts [][]byte, mtu int) {
	p := t.sessions.Load()
	if p == nil || len(*p) == 0 {
		return
	}
	now := time.Now()
	for _, s := range *p {
		for _, pkt := range pkts {
			if mtu > 0 && len(pkt) > mtu {
				break // the link rejects it and stops the batch there
			}
			if !s.record(now, pkt) {
				break
			}
		}
	}
}

// session is one running capture.
type session struct {
	count int64 // packets wanted; 0: no limit
	n     atomic.Int64
	w     *pcap.Writer
	sink  *sink
	once  sync.Once
	done  chan struct{} // closed when the capture has all it wants, or failed
}

func (s *session) finish() { s.once.Do(func() { close(s.done) }) }

// record writes one packet unless the session is complete; false when it is.
func (s *session) record(now time.Time, pkt []byte) bool {
	n := s.n.Add(1)
	if s.count > 0 && n > s.count {
		return false
	}
	if s.w.WritePacket(now, pkt) != nil || n == s.count {
		s.finish()
		return false
	}
	return true
}

// sink buffers a capture between the links' goroutines, which must never block, and the
// capture's reader. pcap.Writer writes each record with one Write, so dropping a Write
// drops a whole record.
type sink struct {
	mu      sync.Mutex
	buf     []byte
	spare   []byte
	max     int
	dropped uint64
	failed  bool
	wake    chan struct{}
}

func (k *sink) Write(p []byte) (int, error) {
	k.mu.Lock()
	if k.failed {
		k.mu.Unlock()
		return 0, errSinkFailed
	}
	if len(k.buf)+len(p) > k.max {
		k.dropped++
	} else {
		k.buf = append(k.buf, p...)
	}
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

var errSinkFailed = errors.New("capture reader failed")

// drain copies buffered bytes to w until done is closed and the buffer is empty, or a
// write fails.
func (k *sink) drain(w io.Writer, done <-chan struct{}) error {
	finishing := false
	for {
		k.mu.Lock()
		b := k.buf
		k.buf, k.spare = k.spare[:0], nil
		k.mu.Unlock()
		if len(b) > 0 {
			if _, err := w.Write(b); err != nil {
				k.mu.Lock()
				k.failed = true
				k.mu.Unlock()
				return err
			}
		}
		k.mu.Lock()
		k.spare = b[:0]
		empty := len(k.buf) == 0
		k.mu.Unlock()
		if finishing && empty {
			return nil
		}
		if !empty {
			continue
		}
		select {
		case <-k.wake:
		case <-done:
			finishing = true
		}
	}
}

type tapEndpoint struct {
	inner link.Endpoint
	t     *Tap
}

func (e *tapEndpoint) MTU() int     { return e.inner.MTU() }
func (e *tapEndpoint) Close() error { return e.inner.Close() }

func (e *tapEndpoint) Attach(d link.Dispatcher) {
	if d == nil {
		e.inner.Attach(nil)
		return
	}
	e.inner.Attach(&tapDispatcher{t: e.t, d: d})
}

// tapDispatcher records inbound packets while captures run. It passes verified batches
// (link.VerifiedDispatcher) on as such, completing their TCP checksums only for a running
// capture, or when the receiver cannot take them otherwise.
type tapDispatcher struct {
	t *Tap
	d link.Dispatcher
}

func (td *tapDispatcher) DeliverPackets(pkts [][]byte) {
	td.t.record(pkts, 0)
	td.d.DeliverPackets(pkts)
}

func (td *tapDispatcher) DeliverVerified(pkts [][]byte) {
	vd, ok := td.d.(link.VerifiedDispatcher)
	if !ok || td.t.active() {
		for _, p := range pkts {
			td.t.fillTCPChecksum(p)
		}
	}
	td.t.record(pkts, 0)
	if ok {
		vd.DeliverVerified(pkts)
	} else {
		td.d.DeliverPackets(pkts)
	}
}

func (e *tapEndpoint) WritePackets(pkts [][]byte) (int, error) {
	// Recorded before the write, so that the peer's answer cannot be recorded first.
	max := e.inner.MTU()
	if e.t.Ethernet {
		max += ethHdrLen
	}
	e.t.record(pkts, max)
	return e.inner.WritePackets(pkts)
}

type gsoTapEndpoint struct {
	*tapEndpoint
	g link.GSOEndpoint
}

func (e *gsoTapEndpoint) GSOMaxSize() int { return e.g.GSOMaxSize() }

func (e *gsoTapEndpoint) WriteGSO(pkt []byte, mss int) error {
	// The sender left the checksum to the link (link.GSOEndpoint): complete it for the
	// capture, only while one is running.
	if e.t.active() {
		e.t.fillTCPChecksum(pkt)
	}
	e.t.record([][]byte{pkt}, 0)
	return e.g.WriteGSO(pkt, mss)
}
