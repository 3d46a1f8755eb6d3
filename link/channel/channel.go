// Package channel is a link endpoint for applications that move packets themselves: a
// VPN that carries them in its own tunnel, a proxy, a test that plays a peer. The stack
// writes outbound IP packets into a bounded queue that the application drains with
// ReadPackets; the application hands inbound IP packets to the stack with InjectPackets.
//
// Order of use:
//
//	ep := channel.New(channel.Config{MTU: 1420})
//	s.AddInterface("tun0", ep)            // attaches the stack to ep
//	s.AddAddress("tun0", prefix)          // the stack now owns its address
//	go pump(ep)                           // ReadPackets / InjectPackets from here on
//
// InjectPackets before AddInterface (or after the stack detached) delivers nothing and
// returns ErrNotAttached, so that the caller knows the packets are gone; a packet injected
// before the address is added reaches the stack and is dropped there as not addressed to
// it, as on any host.
package channel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/berthnet/berth/link"
)

// DefaultQueuePackets is the outbound queue's bound when Config.QueuePackets is zero.
const DefaultQueuePackets = 1024

// The MTUs New accepts: from IPv4's smallest datagram that every host must take without
// fragments (RFC 791 §3.2) to the largest the total-length field can describe.
const (
	MinMTU = 68
	MaxMTU = 65535
)

// ErrNotAttached is returned by InjectPackets when no stack is attached to the endpoint:
// the packets were not delivered.
var ErrNotAttached = errors.New("channel: no stack attached (AddInterface first)")

// Config sets up an Endpoint.
type Config struct {
	// MTU is the largest IP packet the link carries, MinMTU..MaxMTU; required.
	MTU int
	// QueuePackets bounds the outbound queue (packets the stack wrote and the application
	// has not read); when it is full further packets are dropped and counted, as a NIC's
	// full ring drops them. Zero means DefaultQueuePackets.
	QueuePackets int
}

// Stats counts an endpoint's traffic. Out is stack → application (WritePackets then
// ReadPackets), In is application → stack (InjectPackets).
type Stats struct {
	OutPackets, OutBytes uint64 // queued for the application
	InPackets, InBytes   uint64 // delivered to the stack
	DropQueueFull        uint64 // outbound packets dropped on a full queue
	DropTooBig           uint64 // packets longer than the MTU, either way (EMSGSIZE)
	DropClosed           uint64 // outbound packets still queued when the endpoint closed
}

// Endpoint is a link.Endpoint whose other side is the application. Its methods are safe
// for concurrent use.
type Endpoint struct {
	mtu  int
	wake chan struct{} // capacity 1: "the queue may be non-empty"
	done chan struct{} // closed by Close

	disp atomic.Pointer[dispatcherBox]
	inMu sync.Mutex // one injected batch reaches the stack at a time

	mu     sync.Mutex
	closed bool
	ring   [][]byte // outbound packets, fixed capacity QueuePackets
	head   int
	count  int
	free   [][]byte // buffers of packets already read, for reuse

	outPackets, outBytes, inPackets, inBytes atomic.Uint64
	dropFull, dropBig, dropClosed            atomic.Uint64
}

var _ link.Endpoint = (*Endpoint)(nil)

type dispatcherBox struct{ d link.Dispatcher }

// New returns an endpoint. It panics if cfg.MTU is outside MinMTU..MaxMTU (a programming
// error).
func New(cfg Config) *Endpoint {
	if cfg.MTU < MinMTU || cfg.MTU > MaxMTU {
		panic(fmt.Sprintf("channel: MTU %d outside %d..%d", cfg.MTU, MinMTU, MaxMTU))
	}
	if cfg.QueuePackets <= 0 {
		cfg.QueuePackets = DefaultQueuePackets
	}
	return &Endpoint{
		mtu:  cfg.MTU,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
		ring: make([][]byte, cfg.QueuePackets),
	}
}

// MTU implements link.Endpoint.
func (e *Endpoint) MTU() int { return e.mtu }

// Attach implements link.Endpoint: the stack's AddInterface calls it. nil detaches.
func (e *Endpoint) Attach(d link.Dispatcher) {
	var box *dispatcherBox
	if d != nil {
		box = &dispatcherBox{d}
	}
	e.disp.Store(box)
}

// WritePackets implements link.Endpoint (the stack's side): it copies pkts into the
// outbound queue and returns at once. A packet longer than the MTU ends the call with
// syscall.EMSGSIZE (n is the number taken before it); packets taken while the queue is
// full are dropped and counted. After Close it returns net.ErrClosed.
func (e *Endpoint) WritePackets(pkts [][]byte) (int, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, net.ErrClosed
	}
	queued := false
	n := 0
	var err error
	for _, p := range pkts {
		if len(p) > e.mtu {
			e.dropBig.Add(1)
			err = syscall.EMSGSIZE
			break
		}
		n++
		if e.count == len(e.ring) {
			e.dropFull.Add(1)
			continue
		}
		var b []byte
		if k := len(e.free); k > 0 {
			b, e.free = e.free[k-1][:0], e.free[:k-1]
		} else {
			b = make([]byte, 0, e.mtu)
		}
		e.ring[(e.head+e.count)%len(e.ring)] = append(b, p...)
		e.count++
		queued = true
		e.outPackets.Add(1)
		e.outBytes.Add(uint64(len(p)))
	}
	e.mu.Unlock()
	if queued {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
	return n, err
}

// ReadPackets waits until the stack has written at least one packet, then copies up to
// len(bufs) queued packets, oldest first, into bufs and their lengths into sizes (which
// must be at least as long as bufs), and returns how many. Buffers of MTU bytes always
// suffice; a packet that does not fit its buffer stays queued and ends the batch, and if
// it is the first, ReadPackets fails with io.ErrShortBuffer. It returns ctx's error when
// ctx ends first, and net.ErrClosed once the endpoint is closed. It does not allocate.
func (e *Endpoint) ReadPackets(ctx context.Context, bufs [][]byte, sizes []int) (int, error) {
	if len(sizes) < len(bufs) {
		return 0, io.ErrShortBuffer
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return 0, net.ErrClosed
		}
		n := 0
		for n < len(bufs) && e.count > 0 {
			p := e.ring[e.head]
			if len(p) > len(bufs[n]) {
				break
			}
			sizes[n] = copy(bufs[n], p)
			e.ring[e.head] = nil
			e.free = append(e.free, p)
			e.head = (e.head + 1) % len(e.ring)
			e.count--
			n++
		}
		more := e.count > 0
		e.mu.Unlock()
		if more {
			// Another reader may take the rest.
			select {
			case e.wake <- struct{}{}:
			default:
			}
		}
		if n > 0 {
			return n, nil
		}
		if more {
			return 0, io.ErrShortBuffer
		}
		select {
		case <-e.wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-e.done:
			return 0, net.ErrClosed
		}
	}
}

// InjectPackets hands inbound IP packets to the attached stack, which processes them on
// the caller's goroutine before InjectPackets returns; pkts are not retained. Batches from
// concurrent callers are delivered one at a time. A packet longer than the MTU is not
// delivered and ends the call with syscall.EMSGSIZE, after the packets before it. Without
// an attached stack nothing is delivered and the error is ErrNotAttached; after Close it
// is net.ErrClosed. It must not be called from the stack's own goroutines (a Dispatcher
// or WritePackets).
func (e *Endpoint) InjectPackets(pkts [][]byte) error {
	select {
	case <-e.done:
		return net.ErrClosed
	default:
	}
	box := e.disp.Load()
	if box == nil {
		return ErrNotAttached
	}
	var err error
	for i, p := range pkts {
		if len(p) > e.mtu {
			e.dropBig.Add(1)
			pkts, err = pkts[:i], syscall.EMSGSIZE
			break
		}
	}
	if len(pkts) == 0 {
		return err
	}
	e.inMu.Lock()
	box.d.DeliverPackets(pkts)
	e.inMu.Unlock()
	e.inPackets.Add(uint64(len(pkts)))
	for _, p := range pkts {
		e.inBytes.Add(uint64(len(p)))
	}
	return err
}

// Close implements link.Endpoint: blocked ReadPackets calls return net.ErrClosed, queued
// packets are dropped and counted, and later writes and injections fail with
// net.ErrClosed. Closing twice returns net.ErrClosed.
func (e *Endpoint) Close() error {
	defer e.disp.Store(nil)
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		e.closed = true
		e.dropClosed.Add(uint64(e.count))
		e.ring, e.free, e.count = nil, nil, 0
		close(e.done)
		return nil
	}
	return net.ErrClosed
}

// Stats returns a snapshot of the endpoint's counters.
func (e *Endpoint) Stats() Stats {
	return Stats{
		OutPackets: e.outPackets.Load(), OutBytes: e.outBytes.Load(),
		InPackets: e.inPackets.Load(), InBytes: e.inBytes.Load(),
		DropQueueFull: e.dropFull.Load(), DropTooBig: e.dropBig.Load(), DropClosed: e.dropClosed.Load(),
	}
}
