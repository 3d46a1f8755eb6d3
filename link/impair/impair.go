// Package impair wraps a link.Endpoint and makes it a bad network on purpose: loss,
// duplication, bit corruption, delay with jitter, and reordering, drawn from a seeded random
// stream so a run repeats exactly.
//
// Impairments apply to outbound packets (WritePackets). With Config.Inbound set, the same
// impairments also apply, with their own random stream and counters, to packets the inner
// endpoint delivers.
//
// Held packets (delay, jitter, reordering) are copies kept in one heap per direction and
// released by a single reusable clock timer — no goroutine or timer per packet, and no
// goroutine of its own at all. Under a clock.Manual the release runs inside Advance, so a
// test sees exactly the same packets in exactly the same order every time.
package impair

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link"
)

// DefaultLimit is the most packets a direction holds (delayed or reordered) when
// Config.Limit is zero; more are dropped and counted, never blocking the writer.
const DefaultLimit = 10000

// DefaultReorderDelay is how long a reordered packet is held back when
// Config.ReorderDelay is zero.
const DefaultReorderDelay = 10 * time.Millisecond

// Config says how bad the link is. Probabilities are 0..1, drawn per packet.
type Config struct {
	Seed int64 // the same seed and the same input order give the same output

	Loss      float64 // drop the packet
	Duplicate float64 // send the packet twice (the copy right after it)
	// Corrupt flips one random bit past the IP header (the fixed 20+options or 40 bytes),
	// so the IP header still parses and the transport checksum catches the damage. A packet
	// with nothing past its header gets the bit flipped anywhere.
	Corrupt float64
	// Reorder holds the packet back ReorderDelay longer than the rest, so packets written
	// after it overtake it.
	Reorder      float64
	ReorderDelay time.Duration

	// Delay holds every packet this long; Jitter adds a uniform ±Jitter to each. Jitter
	// alone never reorders: a packet is not released before the one written ahead of it
	// (reordering is Reorder's job, so its rate is exactly what is configured).
	Delay, Jitter time.Duration

	Limit   int         // packets held per direction (0: DefaultLimit)
	Inbound bool        // also impair packets inner delivers
	Clock   clock.Clock // nil: clock.Real
}

// Stats counts what one direction did.
type Stats struct {
	Packets     uint64 // packets offered
	Lost        uint64
	Duplicated  uint64
	Corrupted   uint64
	Reordered   uint64
	Delayed     uint64 // held by Delay/Jitter (reordered packets are counted there only)
	DropLimit   uint64 // dropped because Limit packets were already held
	DropTooBig  uint64 // longer than the MTU: WritePackets returned EMSGSIZE
	Released    uint64 // packets passed on (immediately or after holding), duplicates included
	WriteErrors uint64 // the inner endpoint refused a held packet when it was released
}

// Endpoint is an impaired link.Endpoint.
type Endpoint struct {
	inner link.Endpoint
	out   *direction
	in    *direction // nil unless cfg.Inbound
	disp  atomic.Pointer[dispatcherBox]
}

var _ link.Endpoint = (*Endpoint)(nil)

type dispatcherBox struct{ d link.Dispatcher }

// New wraps inner.
func New(inner link.Endpoint, cfg Config) *Endpoint {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Limit <= 0 {
		cfg.Limit = DefaultLimit
	}
	if cfg.ReorderDelay <= 0 {
		cfg.ReorderDelay = DefaultReorderDelay
	}
	e := &Endpoint{inner: inner}
	e.out = newDirection(cfg, uint64(cfg.Seed), func(p [][]byte) error {
		_, err := inner.WritePackets(p)
		return err
	})
	if cfg.Inbound {
		// An independent stream, so outbound traffic does not shift inbound outcomes.
		e.in = newDirection(cfg, uint64(cfg.Seed)^0x9e3779b97f4a7c15, func(p [][]byte) error {
			if b := e.disp.Load(); b != nil {
				b.d.DeliverPackets(p)
			}
			return nil
		})
	}
	return e
}

// MTU is the inner endpoint's.
func (e *Endpoint) MTU() int { return e.inner.MTU() }

// Attach sets where inbound packets go; nil detaches.
func (e *Endpoint) Attach(d link.Dispatcher) {
	if d == nil {
		e.disp.Store(nil)
		e.inner.Attach(nil)
		return
	}
	e.disp.Store(&dispatcherBox{d})
	if e.in == nil {
		e.inner.Attach(d)
		return
	}
	e.inner.Attach(link.DispatcherFunc(func(pkts [][]byte) { e.in.process(pkts, 1<<30) }))
}

// WritePackets impairs pkts and passes them on; it never blocks on held packets. It
// returns len(pkts) (lost packets count as sent, as on a real network) unless a packet is
// longer than the MTU: then it stops there with syscall.EMSGSIZE. After Close it returns
// net.ErrClosed.
func (e *Endpoint) WritePackets(pkts [][]byte) (int, error) {
	return e.out.process(pkts, e.inner.MTU())
}

// Close stops the release timers (held packets are discarded) and closes inner.
func (e *Endpoint) Close() error {
	e.out.close()
	if e.in != nil {
		e.in.close()
	}
	return e.inner.Close()
}

// Stats returns the outbound counters.
func (e *Endpoint) Stats() Stats { return e.out.stats() }

// InboundStats returns the inbound counters (zero unless Config.Inbound).
func (e *Endpoint) InboundStats() Stats {
	if e.in == nil {
		return Stats{}
	}
	return e.in.stats()
}

type held struct {
	at  time.Time
	seq uint64
	buf []byte
	// fifo packets keep their order among themselves; reordered ones do not count.
	fifo bool
}

// heldHeap is a min-heap by (at, seq). Typed rather than container/heap, whose any
// arguments would box — and allocate — every held packet.
type heldHeap []held

func (h heldHeap) less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}

func (h *heldHeap) push(x held) {
	*h = append(*h, x)
	a := *h
	for i := len(a) - 1; i > 0; {
		parent := (i - 1) / 2
		if !a.less(i, parent) {
			break
		}
		a[i], a[parent] = a[parent], a[i]
		i = parent
	}
}

func (h *heldHeap) pop() held {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a[last] = held{}
	a = a[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(a) && a.less(l, m) {
			m = l
		}
		if r < len(a) && a.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}

// direction applies the impairments to one flow of packets. All of its state is guarded
// by mu, and output is called with mu held, so released and immediate packets leave in
// one well-defined order. (output never blocks: link writes and Dispatchers do not.)
type direction struct {
	cfg    Config
	output func([][]byte) error

	mu       sync.Mutex
	closed   bool
	rng      *rand.Rand
	heap     heldHeap
	seq      uint64
	fifoHeld int       // held packets that later fifo packets must not overtake
	lastFIFO time.Time // release time of the last fifo packet held
	timer    clock.Timer
	timerAt  time.Time // when timer fires; zero when not armed
	scratch  [][]byte  // the batch passed to output
	copies   [][]byte  // pooled buffers in scratch, recycled after output
	free     [][]byte
	st       counters // atomic: Stats may be called from inside output (a Dispatcher)
}

func newDirection(cfg Config, seed uint64, output func([][]byte) error) *direction {
	return &direction{cfg: cfg, output: output, rng: rand.New(rand.NewPCG(seed, 0x62657274))}
}

func (d *direction) getBuf(p []byte) []byte {
	for len(d.free) > 0 {
		b := d.free[len(d.free)-1]
		d.free[len(d.free)-1] = nil
		d.free = d.free[:len(d.free)-1]
		if cap(b) >= len(p) {
			b = b[:len(p)]
			copy(b, p)
			return b
		}
	}
	b := make([]byte, len(p), max(len(p), 2048))
	copy(b, p)
	return b
}

func (d *direction) putBuf(b []byte) {
	if len(d.free) < d.cfg.Limit {
		d.free = append(d.free, b)
	}
}

func (d *direction) process(pkts [][]byte, mtu int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, net.ErrClosed
	}
	now := d.cfg.Clock.Now()
	n, err := len(pkts), error(nil)
	for i, p := range pkts {
		if len(p) > mtu {
			d.st.DropTooBig.Add(1)
			n, err = i, syscall.EMSGSIZE
			break
		}
		d.impair(p, now)
	}
	d.flushScratch()
	return n, err
}

// impair decides one packet's fate. Every packet draws the same six numbers whatever
// happens to it, so the stream stays aligned with the input.
func (d *direction) impair(p []byte, now time.Time) {
	r := d.rng
	lose, dup, corrupt, reorder, jitter := r.Float64(), r.Float64(), r.Float64(), r.Float64(), r.Float64()
	where := r.Uint64()
	d.st.Packets.Add(1)
	if lose < d.cfg.Loss {
		d.st.Lost.Add(1)
		return
	}
	copies := 1
	if dup < d.cfg.Duplicate {
		d.st.Duplicated.Add(1)
		copies = 2
	}
	isReordered := reorder < d.cfg.Reorder
	at := now
	if d.cfg.Delay > 0 || d.cfg.Jitter > 0 {
		at = now.Add(d.cfg.Delay + time.Duration((2*jitter-1)*float64(d.cfg.Jitter)))
		if at.Before(now) {
			at = now
		}
	}
	if isReordered {
		at = at.Add(d.cfg.ReorderDelay)
	} else if d.fifoHeld > 0 && at.Before(d.lastFIFO) {
		at = d.lastFIFO
	}
	hold := isReordered || at.After(now) || (d.fifoHeld > 0)
	var buf []byte
	if corrupt < d.cfg.Corrupt || hold {
		buf = d.getBuf(p)
	}
	if corrupt < d.cfg.Corrupt {
		d.st.Corrupted.Add(1)
		flipBit(buf, where)
	}
	if !hold {
		for range copies {
			if buf != nil {
				d.scratch = append(d.scratch, buf)
			} else {
				d.scratch = append(d.scratch, p)
			}
		}
		if buf != nil {
			d.copies = append(d.copies, buf)
		}
		return
	}
	if isReordered {
		d.st.Reordered.Add(1)
	} else {
		d.st.Delayed.Add(1)
	}
	for c := range copies {
		if len(d.heap) >= d.cfg.Limit {
			d.st.DropLimit.Add(1)
			if c == 0 {
				d.putBuf(buf)
			}
			return
		}
		b := buf
		if c == 1 {
			b = d.getBuf(buf)
		}
		d.seq++
		d.heap.push(held{at: at, seq: d.seq, buf: b, fifo: !isReordered})
		if !isReordered {
			d.fifoHeld++
			d.lastFIFO = at
		}
	}
	d.arm(now)
}

// flipBit flips one bit chosen by r, past the IP header when there is anything there.
func flipBit(b []byte, r uint64) {
	if len(b) == 0 {
		return
	}
	hl := 0
	switch b[0] >> 4 {
	case 4:
		hl = int(b[0]&0x0f) * 4
	case 6:
		hl = 40
	}
	if hl >= len(b) {
		hl = 0
	}
	span := uint64(len(b)-hl) * 8
	bit := r % span
	b[hl+int(bit/8)] ^= 1 << (bit % 8)
}

// arm makes sure the timer fires when the earliest held packet is due.
func (d *direction) arm(now time.Time) {
	if len(d.heap) == 0 {
		return
	}
	next := d.heap[0].at
	if !d.timerAt.IsZero() && !next.Before(d.timerAt) {
		return
	}
	d.timerAt = next
	wait := max(next.Sub(now), 0)
	if d.timer == nil {
		d.timer = d.cfg.Clock.AfterFunc(wait, d.release)
	} else {
		d.timer.Reset(wait)
	}
}

// release runs on the timer: it passes on every held packet that is due and re-arms.
func (d *direction) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.timerAt = time.Time{}
	now := d.cfg.Clock.Now()
	for len(d.heap) > 0 && !d.heap[0].at.After(now) {
		h := d.heap.pop()
		if h.fifo {
			d.fifoHeld--
		}
		d.scratch = append(d.scratch, h.buf)
		d.copies = append(d.copies, h.buf)
	}
	if err := d.flushScratch(); err != nil {
		d.st.WriteErrors.Add(1)
	}
	d.arm(now)
}

// flushScratch passes the pending batch to output and recycles the copies.
func (d *direction) flushScratch() error {
	var err error
	if len(d.scratch) > 0 {
		d.st.Released.Add(uint64(len(d.scratch)))
		err = d.output(d.scratch)
	}
	for i := range d.scratch {
		d.scratch[i] = nil
	}
	d.scratch = d.scratch[:0]
	for i, b := range d.copies {
		d.putBuf(b)
		d.copies[i] = nil
	}
	d.copies = d.copies[:0]
	return err
}

func (d *direction) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.heap = nil
	d.fifoHeld = 0
}

type counters struct {
	Packets, Lost, Duplicated, Corrupted, Reordered, Delayed atomic.Uint64
	DropLimit, DropTooBig, Released, WriteErrors             atomic.Uint64
}

func (d *direction) stats() Stats {
	c := &d.st
	return Stats{
		Packets: c.Packets.Load(), Lost: c.Lost.Load(), Duplicated: c.Duplicated.Load(),
		Corrupted: c.Corrupted.Load(), Reordered: c.Reordered.Load(), Delayed: c.Delayed.Load(),
		DropLimit: c.DropLimit.Load(), DropTooBig: c.DropTooBig.Load(),
		Released: c.Released.Load(), WriteErrors: c.WriteErrors.Load(),
	}
}
