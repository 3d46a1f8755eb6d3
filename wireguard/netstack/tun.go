package netstack

import (
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link"
	"golang.zx2c4.com/wireguard/tun"
)

// batchSize is the device's BatchSize: how many packets one Read or Write moves at most.
// It matches wireguard-go's conn.IdealBatchSize, so a device reads as many packets from the
// stack per call as its UDP bind sends per sendmmsg.
const batchSize = 128

// queueLimit bounds the packets the stack may have waiting for the device's reader. A full
// queue drops, as link.Endpoint requires: the stack and wireguard-go answer each other, so
// neither may block the other.
const queueLimit = 1024

// tunDevice is both halves of the join between wireguard-go and a berth stack: a tun.Device
// for wireguard-go (Read gives it the stack's outbound packets to encrypt, Write hands it
// decrypted inbound ones) and a link.Endpoint for the stack.
//
// Copies. Inbound, Write passes wireguard-go's buffers to the stack as they are (the stack
// copies only what it keeps, such as TCP payload into a receive buffer). Outbound, the
// stack's buffers are not ours after WritePackets returns, so each packet is copied once:
// straight into the buffers of a Read that is waiting, or, when the reader is busy
// encrypting, into a queue buffer that the next Read copies out in a batch.
type tunDevice struct {
	mtu    int
	events chan tun.Event
	disp   atomic.Pointer[dispatcherBox]

	mu     sync.Mutex
	cond   sync.Cond // signalled when packets are queued, a parked read is filled, or on close
	closed bool
	down   atomic.Bool // closed, for Write, which does not take mu
	// A Read that found the queue empty parks its buffers here so that WritePackets fills
	// them directly; only one reader parks at a time (wireguard-go runs one).
	parked bool
	slot   readSlot
	// queue is a ring of packets waiting for Read; free holds released buffers for reuse.
	queue      [queueLimit][]byte
	head, qlen int
	free       [][]byte

	drops     atomic.Uint64 // outbound packets dropped on a full queue or too big for the reader
	noDisp    atomic.Uint64 // inbound packets dropped before the stack attached
	inPool    sync.Pool     // *[][]byte batches for Write
	closeOnce sync.Once
	stack     *berth.Stack // closed by Close
}

type readSlot struct {
	bufs   [][]byte
	sizes  []int
	offset int
	n      int
}

type dispatcherBox struct{ d link.Dispatcher }

var (
	_ tun.Device    = (*tunDevice)(nil)
	_ link.Endpoint = endpoint{}
)

func newDevice(mtu int) *tunDevice {
	d := &tunDevice{mtu: mtu, events: make(chan tun.Event, 4)}
	d.cond.L = &d.mu
	d.inPool.New = func() any { b := make([][]byte, 0, batchSize); return &b }
	// wireguard-go brings its device up when the TUN reports it is up.
	d.events <- tun.EventUp
	return d
}

// --- the stack's side (see endpoint) ---

func (d *tunDevice) attach(disp link.Dispatcher) {
	var box *dispatcherBox // nil detaches: Write then drops and counts
	if disp != nil {
		box = &dispatcherBox{disp}
	}
	d.disp.Store(box)
}

// writePackets takes the stack's outbound packets for wireguard-go to encrypt.
func (d *tunDevice) writePackets(pkts [][]byte) (int, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return 0, net.ErrClosed
	}
	taken, i := 0, 0
	wake := false
	if d.parked {
		s := &d.slot
		for ; i < len(pkts) && s.n < len(s.bufs); i++ {
			p := pkts[i]
			dst := s.bufs[s.n][s.offset:]
			if len(p) > len(dst) {
				d.drops.Add(1)
				continue
			}
			s.sizes[s.n] = copy(dst, p)
			s.n++
			taken++
		}
		if s.n > 0 {
			d.parked = false
			wake = true
		}
	}
	for ; i < len(pkts); i++ {
		p := pkts[i]
		if len(p) > d.mtu || d.qlen == queueLimit {
			d.drops.Add(1)
			continue
		}
		var b []byte
		if n := len(d.free); n > 0 {
			b = d.free[n-1]
			d.free = d.free[:n-1]
		} else {
			b = make([]byte, 0, d.mtu)
		}
		d.queue[(d.head+d.qlen)%queueLimit] = append(b[:0], p...)
		d.qlen++
		taken++
		wake = true
	}
	d.mu.Unlock()
	if wake {
		d.cond.Broadcast()
	}
	return taken, nil
}

// --- tun.Device: wireguard-go's side ---

// Read implements tun.Device: it blocks until the stack has sent at least one packet and
// returns as many as are waiting, up to len(bufs), each at bufs[i][offset:].
func (d *tunDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		if d.closed {
			return 0, os.ErrClosed
		}
		if d.qlen > 0 {
			return d.drainLocked(bufs, sizes, offset), nil
		}
		if d.parked {
			// Another reader holds the slot; wait for packets or for the slot.
			d.cond.Wait()
			continue
		}
		d.slot = readSlot{bufs: bufs, sizes: sizes, offset: offset}
		d.parked = true
		for d.parked && !d.closed {
			d.cond.Wait()
		}
		n := d.slot.n
		d.slot = readSlot{}
		if n > 0 {
			// Wake any reader that waited for the slot.
			d.cond.Broadcast()
			return n, nil
		}
		d.parked = false
	}
}

// drainLocked copies queued packets into bufs and releases their buffers.
func (d *tunDevice) drainLocked(bufs [][]byte, sizes []int, offset int) int {
	n := 0
	for d.qlen > 0 && n < len(bufs) {
		p := d.queue[d.head]
		d.queue[d.head] = nil
		d.head = (d.head + 1) % queueLimit
		d.qlen--
		d.free = append(d.free, p)
		dst := bufs[n][offset:]
		if len(p) > len(dst) {
			d.drops.Add(1)
			continue
		}
		sizes[n] = copy(dst, p)
		n++
	}
	return n
}

// Write implements tun.Device: it delivers decrypted packets at bufs[i][offset:] to the
// stack in one batch, without copying them.
func (d *tunDevice) Write(bufs [][]byte, offset int) (int, error) {
	// An atomic flag, not d.mu: the inbound path should not contend with the stack's
	// writers for the queue's lock.
	if d.down.Load() {
		return 0, os.ErrClosed
	}
	box := d.disp.Load()
	if box == nil {
		d.noDisp.Add(uint64(len(bufs)))
		return len(bufs), nil
	}
	bp := d.inPool.Get().(*[][]byte)
	batch := (*bp)[:0]
	for _, b := range bufs {
		if len(b) <= offset {
			continue
		}
		batch = append(batch, b[offset:])
	}
	if len(batch) > 0 {
		box.d.DeliverPackets(batch)
	}
	clear(batch)
	*bp = batch[:0]
	d.inPool.Put(bp)
	return len(bufs), nil
}

// File implements tun.Device; there is no file descriptor behind a berth stack.
func (d *tunDevice) File() *os.File { return nil }

// Name implements tun.Device.
func (d *tunDevice) Name() (string, error) { return "berth", nil }

// Events implements tun.Device.
func (d *tunDevice) Events() <-chan tun.Event { return d.events }

// BatchSize implements tun.Device.
func (d *tunDevice) BatchSize() int { return batchSize }

// Close implements tun.Device: wireguard-go closes its TUN when the device closes, and
// that closes the berth stack behind it (every socket, then the link).
func (d *tunDevice) Close() error {
	d.shutdown()
	if d.stack != nil {
		d.stack.Close()
	}
	return nil
}

// shutdown stops the device once: a blocked Read returns os.ErrClosed, later writes fail,
// queued packets are dropped and the events channel is closed.
func (d *tunDevice) shutdown() {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.down.Store(true)
		for d.qlen > 0 {
			d.queue[d.head] = nil
			d.head = (d.head + 1) % queueLimit
			d.qlen--
		}
		d.free = nil
		d.mu.Unlock()
		d.cond.Broadcast()
		close(d.events)
	})
}

// MTU implements tun.Device.
func (d *tunDevice) MTU() (int, error) { return d.mtu, nil }

// endpoint is the device as the stack sees it: a link.Endpoint. (tun.Device and
// link.Endpoint both name a method MTU, with different results, so one type cannot be
// both.)
type endpoint struct{ d *tunDevice }

// MTU implements link.Endpoint.
func (e endpoint) MTU() int { return e.d.mtu }

// Attach implements link.Endpoint.
func (e endpoint) Attach(disp link.Dispatcher) { e.d.attach(disp) }

// WritePackets implements link.Endpoint.
func (e endpoint) WritePackets(pkts [][]byte) (int, error) { return e.d.writePackets(pkts) }

// Close implements link.Endpoint; the stack calls it when it closes.
func (e endpoint) Close() error { e.d.shutdown(); return nil }
