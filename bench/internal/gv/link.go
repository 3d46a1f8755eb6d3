// Package gv builds the gVisor side of the comparison: two gVisor netstacks joined by an
// in-memory link that works like berth's link/pipe, with gonet for the socket API.
package gv

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Queue sizes and batch length, the same as berth's link/pipe defaults, so both stacks run
// over the same kind of link: a bounded asynchronous queue per direction (drop when full,
// never block), one delivery goroutine per direction, batches of up to 64 packets, one copy
// of each packet's bytes (a wire), no offloads (each stack computes and verifies checksums).
const (
	queuePackets = 1024
	queueBytes   = 4 << 20
	batchSize    = 64
)

// Link is one end of an in-memory pipe between two gVisor stacks. It implements
// stack.LinkEndpoint for IPv4 packets without a link-layer header.
type Link struct {
	mtu  uint32
	peer *Link
	out  *direction
	disp atomic.Pointer[dispatcherBox]
	sh   *shared

	// Drops counts packets this end's queue rejected (full or closed).
	Drops atomic.Uint64
}

type dispatcherBox struct{ d stack.NetworkDispatcher }

type shared struct {
	once sync.Once
	done chan struct{}
	wg   sync.WaitGroup
}

var _ stack.LinkEndpoint = (*Link)(nil)

// NewLinkPair returns the two ends of a pipe carrying IP packets up to mtu bytes.
func NewLinkPair(mtu int) (a, b *Link) {
	sh := &shared{done: make(chan struct{})}
	a = &Link{mtu: uint32(mtu), sh: sh}
	b = &Link{mtu: uint32(mtu), sh: sh}
	a.peer, b.peer = b, a
	a.out = newDirection(a, b)
	b.out = newDirection(b, a)
	sh.wg.Add(2)
	go a.out.run(sh)
	go b.out.run(sh)
	return a, b
}

// Shutdown stops both delivery goroutines and drops what is queued. The stacks' own Close
// calls Close, which is a no-op: the pipe belongs to the pair that made it.
func (l *Link) Shutdown() {
	l.sh.once.Do(func() {
		l.out.close()
		l.peer.out.close()
		close(l.sh.done)
	})
	l.sh.wg.Wait()
}

// MTU implements stack.LinkEndpoint.
func (l *Link) MTU() uint32 { return l.mtu }

// SetMTU implements stack.LinkEndpoint.
func (l *Link) SetMTU(uint32) {}

// MaxHeaderLength implements stack.LinkEndpoint: no link-layer header.
func (l *Link) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint.
func (l *Link) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (l *Link) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint: none (no checksum offload, no GSO), like
// berth's pipe.
func (l *Link) Capabilities() stack.LinkEndpointCapabilities { return 0 }

// Attach implements stack.LinkEndpoint.
func (l *Link) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		l.disp.Store(nil)
		return
	}
	l.disp.Store(&dispatcherBox{d})
}

// IsAttached implements stack.LinkEndpoint.
func (l *Link) IsAttached() bool { return l.disp.Load() != nil }

// Wait implements stack.LinkEndpoint.
func (l *Link) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (l *Link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (l *Link) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (l *Link) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint.
func (l *Link) Close() {}

// SetOnCloseAction implements stack.LinkEndpoint.
func (l *Link) SetOnCloseAction(func()) {}

// WritePackets implements stack.LinkEndpoint: each packet is copied once into a pooled
// gVisor view (buffer chunks come from gVisor's pools) and queued towards the peer.
func (l *Link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if uint32(pkt.Size()) > l.mtu {
			return n, &tcpip.ErrMessageTooLong{}
		}
		l.out.write(pkt.ToView())
		n++
	}
	l.out.signal()
	return n, nil
}

type direction struct {
	from, to *Link
	wake     chan struct{}

	mu     sync.Mutex
	closed bool
	ring   []*buffer.View
	head   int
	count  int
	bytes  int
	batch  []*buffer.View
}

func newDirection(from, to *Link) *direction {
	return &direction{
		from: from, to: to,
		wake:  make(chan struct{}, 1),
		ring:  make([]*buffer.View, queuePackets),
		batch: make([]*buffer.View, 0, batchSize),
	}
}

func (d *direction) write(v *buffer.View) {
	d.mu.Lock()
	if d.closed || d.to.disp.Load() == nil || d.count == len(d.ring) || d.bytes+v.Size() > queueBytes {
		d.mu.Unlock()
		v.Release()
		d.from.Drops.Add(1)
		return
	}
	d.ring[(d.head+d.count)%len(d.ring)] = v
	d.count++
	d.bytes += v.Size()
	d.mu.Unlock()
}

func (d *direction) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *direction) close() {
	d.mu.Lock()
	d.closed = true
	for d.count > 0 {
		v := d.ring[d.head]
		d.ring[d.head] = nil
		d.head = (d.head + 1) % len(d.ring)
		d.count--
		d.bytes -= v.Size()
		v.Release()
	}
	d.mu.Unlock()
}

func (d *direction) run(sh *shared) {
	defer sh.wg.Done()
	for {
		select {
		case <-sh.done:
			return
		case <-d.wake:
		}
		for d.deliverBatch() {
			select {
			case <-sh.done:
				return
			default:
			}
		}
	}
}

func (d *direction) deliverBatch() bool {
	d.mu.Lock()
	batch := d.batch[:0]
	for d.count > 0 && len(batch) < batchSize {
		v := d.ring[d.head]
		d.ring[d.head] = nil
		d.head = (d.head + 1) % len(d.ring)
		d.count--
		d.bytes -= v.Size()
		batch = append(batch, v)
	}
	d.mu.Unlock()
	if len(batch) == 0 {
		return false
	}
	box := d.to.disp.Load()
	for i, v := range batch {
		batch[i] = nil
		if box == nil {
			v.Release()
			continue
		}
		// The new packet owns v and releases it when its last reference goes.
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
		box.d.DeliverNetworkPacket(ipv4.ProtocolNumber, pkt)
		pkt.DecRef()
	}
	d.batch = batch[:0]
	return true
}
