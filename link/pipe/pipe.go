// Package pipe joins two link endpoints in memory, like a cable between two NICs. Each
// direction has a bounded queue (by packets and by bytes) and a delivery goroutine that
// hands batches to the receiving endpoint's Dispatcher, so a stack's output never runs the
// peer's input on its own goroutine (architecture.md: links deliver asynchronously).
package pipe

import (
	"fmt"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/berthnet/berth/link"
)

// Defaults for Config fields left zero.
const (
	DefaultQueuePackets = 1024
	DefaultQueueBytes   = 4 << 20
	DefaultBatch        = 64
	// MinMTU is the smallest MTU accepted: IPv4's minimum datagram every host must take
	// without fragmenting (RFC 791 §3.2: 68).
	MinMTU = 68
	// MaxMTU is the largest IP packet (the IPv4 total-length field).
	MaxMTU = 65535
)

// Config tunes a pipe. Zero fields take the defaults above.
type Config struct {
	MTU          int // MinMTU..MaxMTU; required
	QueuePackets int // per direction: packets waiting for delivery
	QueueBytes   int // per direction: bytes waiting for delivery
	Batch        int // most packets handed to a Dispatcher in one call
	// HeaderLen is a link-layer header each packet carries on top of its MTU-sized
	// payload: 14 (wire.EthernetHeaderLen) makes the pipe a frame device (package link) whose
	// WritePackets takes frames up to MTU+14 bytes while MTU() still reports the IP MTU.
	// Zero for a pipe of bare IP packets.
	HeaderLen int
}

// Stats counts what one endpoint sent and received. Tx counts packets queued towards the
// peer; Rx counts packets handed to this endpoint's Dispatcher.
type Stats struct {
	TxPackets, TxBytes uint64 // packets and bytes queued towards the peer
	RxPackets, RxBytes uint64 // packets and bytes handed to this end's Dispatcher
	// Drops by reason, counted on the sending endpoint.
	DropQueueFull   uint64 // the direction's queue was full (packets or bytes)
	DropTooBig      uint64 // longer than the MTU: WritePackets returned EMSGSIZE
	DropNotAttached uint64 // the peer had no Dispatcher (before Attach, or detached)
	DropClosed      uint64 // still queued when the pipe closed
}

// Endpoint is one end of a pipe. It implements link.Endpoint.
type Endpoint struct {
	mtu    int
	maxLen int        // mtu + Config.HeaderLen: the longest packet WritePackets takes
	out    *direction // packets this endpoint writes, delivered to peer
	peer   *Endpoint
	disp   atomic.Pointer[dispatcherBox]
	pipe   *shared
	stats  counters
}

var (
	_ link.Endpoint    = (*Endpoint)(nil)
	_ link.FrameWriter = (*Endpoint)(nil)
)

// dispatcherBox lets a Dispatcher interface value live in an atomic.Pointer.
type dispatcherBox struct{ d link.Dispatcher }

type counters struct {
	txPackets, txBytes, rxPackets, rxBytes                   atomic.Uint64
	dropQueueFull, dropTooBig, dropNotAttached, dropClosedCt atomic.Uint64
}

// shared is the state both ends see: closing either end closes the whole pipe.
type shared struct {
	once sync.Once
	done chan struct{}
	wg   sync.WaitGroup
}

// New returns the two ends of a pipe carrying IP packets up to mtu bytes, with default
// queue sizes. It panics if mtu is outside MinMTU..MaxMTU (a programming error).
func New(mtu int) (a, b *Endpoint) { return NewConfig(Config{MTU: mtu}) }

// NewEthernet returns the two ends of a pipe carrying Ethernet II frames (a frame device,
// package link) of IP payloads up to mtu bytes: frames up to mtu+14 bytes, with default queue
// sizes.
func NewEthernet(mtu int) (a, b *Endpoint) {
	return NewConfig(Config{MTU: mtu, HeaderLen: ethernetHeaderLen})
}

// ethernetHeaderLen is wire.EthernetHeaderLen (link packages do not import wire).
const ethernetHeaderLen = 14

// NewConfig is New with explicit queue sizes.
func NewConfig(cfg Config) (a, b *Endpoint) {
	if cfg.MTU < MinMTU || cfg.MTU > MaxMTU {
		panic(fmt.Sprintf("pipe: MTU %d outside %d..%d", cfg.MTU, MinMTU, MaxMTU))
	}
	if cfg.QueuePackets <= 0 {
		cfg.QueuePackets = DefaultQueuePackets
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	if cfg.HeaderLen < 0 {
		cfg.HeaderLen = 0
	}
	if cfg.QueueBytes < cfg.MTU+cfg.HeaderLen {
		// A queue that cannot hold one full-size packet would drop every one of them.
		cfg.QueueBytes = cfg.MTU + cfg.HeaderLen
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	s := &shared{done: make(chan struct{})}
	a = &Endpoint{mtu: cfg.MTU, maxLen: cfg.MTU + cfg.HeaderLen, pipe: s}
	b = &Endpoint{mtu: cfg.MTU, maxLen: cfg.MTU + cfg.HeaderLen, pipe: s}
	a.peer, b.peer = b, a
	a.out = newDirection(cfg, a, b)
	b.out = newDirection(cfg, b, a)
	s.wg.Add(2)
	go a.out.run(s)
	go b.out.run(s)
	return a, b
}

// MTU reports the largest packet the pipe carries (without Config.HeaderLen).
func (e *Endpoint) MTU() int { return e.mtu }

// Attach sets the Dispatcher that receives the packets the peer writes; nil detaches.
func (e *Endpoint) Attach(d link.Dispatcher) {
	if d == nil {
		e.disp.Store(nil)
		return
	}
	e.disp.Store(&dispatcherBox{d})
}

func (e *Endpoint) dispatcher() link.Dispatcher {
	if b := e.disp.Load(); b != nil {
		return b.d
	}
	return nil
}

// WritePackets copies pkts into the queue towards the peer and returns at once; it never
// blocks on the peer. Like sendmmsg(2) it stops at the first packet it rejects: a packet
// longer than the MTU (plus Config.HeaderLen) ends the call with syscall.EMSGSIZE and n is the number taken before
// it. Packets taken but dropped (queue full, peer not attached) are counted in Stats, as a
// real link loses packets silently. After Close it returns net.ErrClosed.
func (e *Endpoint) WritePackets(pkts [][]byte) (int, error) {
	return e.out.write(nil, pkts)
}

// WriteFrames implements link.FrameWriter: it is WritePackets of packets each made of
// hdrs[i] and pkts[i], joined in the one copy into the queue.
func (e *Endpoint) WriteFrames(hdrs, pkts [][]byte) (int, error) {
	if len(hdrs) != len(pkts) {
		return 0, syscall.EINVAL
	}
	return e.out.write(hdrs, pkts)
}

// Close closes both ends of the pipe: the delivery goroutines end (Close waits for them,
// so it must not be called from inside a Dispatcher of this pipe), packets still queued
// are dropped and counted, and later writes on either end return net.ErrClosed.
func (e *Endpoint) Close() error {
	s := e.pipe
	first := false
	s.once.Do(func() {
		first = true
		e.out.close()
		e.peer.out.close()
		close(s.done)
	})
	s.wg.Wait()
	if !first {
		return net.ErrClosed
	}
	return nil
}

// Stats returns a snapshot of the endpoint's counters.
func (e *Endpoint) Stats() Stats {
	c := &e.stats
	return Stats{
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(),
		RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(),
		DropQueueFull: c.dropQueueFull.Load(), DropTooBig: c.dropTooBig.Load(),
		DropNotAttached: c.dropNotAttached.Load(), DropClosed: c.dropClosedCt.Load(),
	}
}

// Buffers come in power-of-two size classes from 2 KiB to 128 KiB (a frame of a 65535-byte
// packet and its link header is just over 64 KiB), so a small packet does
// not pin an MTU-sized buffer, and each class keeps a free list: in steady state a packet
// reuses a buffer a previous one released, and nothing is allocated.
const (
	minClassShift = 11
	maxClassShift = 17
	numClasses    = maxClassShift - minClassShift + 1
)

func sizeClass(n int) int {
	s := bits.Len(uint(n - 1))
	if n <= 1 || s < minClassShift {
		return 0
	}
	return s - minClassShift
}

// direction is one way through the pipe: a ring of queued packets, free lists, and the
// goroutine that delivers to the receiver.
type direction struct {
	from, to  *Endpoint
	batchSize int
	maxBytes  int
	wake      chan struct{} // capacity 1: "there is something queued"

	mu     sync.Mutex
	closed bool
	ring   [][]byte // fixed capacity QueuePackets
	head   int
	count  int
	bytes  int
	free   [numClasses][][]byte
	batch  [][]byte // owned by run; kept here so its backing array is reused
}

func newDirection(cfg Config, from, to *Endpoint) *direction {
	return &direction{
		from: from, to: to,
		batchSize: cfg.Batch,
		maxBytes:  cfg.QueueBytes,
		wake:      make(chan struct{}, 1),
		ring:      make([][]byte, cfg.QueuePackets),
		batch:     make([][]byte, 0, cfg.Batch),
	}
}

// getBuf returns a pooled buffer of length n. Called with d.mu held.
func (d *direction) getBuf(n int) []byte {
	c := sizeClass(n)
	if l := d.free[c]; len(l) > 0 {
		b := l[len(l)-1]
		l[len(l)-1] = nil
		d.free[c] = l[:len(l)-1]
		return b[:n]
	}
	return make([]byte, n, 1<<(c+minClassShift))
}

// putBuf returns a buffer to its free list. Called with d.mu held.
func (d *direction) putBuf(b []byte) {
	c := sizeClass(cap(b))
	d.free[c] = append(d.free[c], b[:0])
}

// write queues pkts, each behind hdrs[i] when hdrs is not nil (WriteFrames).
func (d *direction) write(hdrs, pkts [][]byte) (int, error) {
	st := &d.from.stats
	notAttached := d.to.dispatcher() == nil
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return 0, net.ErrClosed
	}
	queued := 0
	for i, p := range pkts {
		var h []byte
		if hdrs != nil {
			h = hdrs[i]
		}
		n := len(h) + len(p)
		if n > d.from.maxLen {
			d.mu.Unlock()
			st.dropTooBig.Add(1)
			d.signal(queued)
			return i, syscall.EMSGSIZE
		}
		switch {
		case notAttached:
			st.dropNotAttached.Add(1)
		case d.count == len(d.ring) || d.bytes+n > d.maxBytes:
			st.dropQueueFull.Add(1)
		default:
			b := d.getBuf(n)
			copy(b[copy(b, h):], p)
			d.ring[(d.head+d.count)%len(d.ring)] = b
			d.count++
			d.bytes += n
			queued++
			st.txPackets.Add(1)
			st.txBytes.Add(uint64(n))
		}
	}
	d.mu.Unlock()
	d.signal(queued)
	return len(pkts), nil
}

// signal wakes the delivery goroutine if anything was queued, without blocking: a pending
// wake-up already covers the new packets.
func (d *direction) signal(queued int) {
	if queued == 0 {
		return
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// close marks the direction closed and drops (and counts) what is still queued.
func (d *direction) close() {
	d.mu.Lock()
	d.closed = true
	for d.count > 0 {
		b := d.ring[d.head]
		d.ring[d.head] = nil
		d.head = (d.head + 1) % len(d.ring)
		d.count--
		d.bytes -= len(b)
		d.from.stats.dropClosedCt.Add(1)
	}
	d.mu.Unlock()
}

// run delivers queued packets in batches until the pipe closes.
func (d *direction) run(s *shared) {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case <-d.wake:
		}
		for d.deliverBatch() {
			// Stop between batches once closed rather than draining a long queue.
			select {
			case <-s.done:
				return
			default:
			}
		}
	}
}

// deliverBatch takes up to batchSize queued packets, hands them to the receiver's
// Dispatcher and recycles their buffers. It reports whether it delivered anything.
func (d *direction) deliverBatch() bool {
	d.mu.Lock()
	batch := d.batch[:0]
	for d.count > 0 && len(batch) < d.batchSize {
		b := d.ring[d.head]
		d.ring[d.head] = nil
		d.head = (d.head + 1) % len(d.ring)
		d.count--
		d.bytes -= len(b)
		batch = append(batch, b)
	}
	d.mu.Unlock()
	if len(batch) == 0 {
		return false
	}
	if disp := d.to.dispatcher(); disp != nil {
		var n uint64
		for _, b := range batch {
			n += uint64(len(b))
		}
		// Counted before the call, so a Dispatcher that has seen a packet also sees it
		// in Stats.
		d.to.stats.rxPackets.Add(uint64(len(batch)))
		d.to.stats.rxBytes.Add(n)
		disp.DeliverPackets(batch)
	} else {
		// Detached while the packets were queued.
		d.from.stats.dropNotAttached.Add(uint64(len(batch)))
	}
	d.mu.Lock()
	for i, b := range batch {
		d.putBuf(b)
		batch[i] = nil
	}
	d.batch = batch[:0]
	d.mu.Unlock()
	return true
}
