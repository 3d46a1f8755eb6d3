//go:build linux

// Package vmsock is a frame device over a UNIX socket, the way QEMU hands a virtual
// machine's NIC to a user-mode network helper (passt, gvisor-tap-vsock): Ethernet II
// frames (no FCS), either on a stream socket, each frame preceded by its length as 4
// bytes big-endian (QEMU's `-netdev stream`, and the older `-netdev socket`), or on a
// datagram socket, one frame per datagram (`-netdev dgram`).
//
// An Endpoint is a link.Endpoint whose packets are Ethernet frames (the frame-device
// contract of link/ether): MTU is the largest IP packet, frames are up to MTU+14 bytes.
// It has no offloads: QEMU's socket backends carry no virtio-net header, so every frame
// is complete (checksums included) and at most the MTU.
//
// The peer is a virtual machine, so it is not trusted. Outbound frames wait in a bounded
// buffer when the peer reads slowly, and are dropped (counted) when it is full: a guest
// that stops reading costs a fixed amount of memory, never a blocked stack. On a stream,
// a length field over the largest frame (or a frame that cannot be an Ethernet frame
// because it is longer than the buffer) ends the connection, as QEMU does: framing is
// lost and resynchronising on a byte stream is guesswork. Runt frames (under 14 bytes)
// are skipped and counted.
package vmsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/link"
)

const (
	// EthHdrLen is the Ethernet II header (IEEE 802.3 §3.1.1) before every frame's
	// payload; frames are MTU+EthHdrLen bytes at most.
	EthHdrLen = 14
	// vlanTagLen: a frame with one IEEE 802.1Q tag is this much longer; it is accepted,
	// for the Ethernet layer to count and drop.
	vlanTagLen = 4
	// lenPrefix is the stream framing's length field.
	lenPrefix = 4
	// DefaultMTU is the MTU used when Options.MTU is 0: the largest that passt gives a
	// guest (65520, as berth run's TUN device), so that the guest's TCP sends
	// large segments and the socket carries few frames.
	DefaultMTU = 65520
	// MaxMTU is the largest MTU: a frame's IP packet fits the IPv4 total length.
	MaxMTU = 65535
	// MinMTU is IPv4's minimum (RFC 791 §3.2).
	MinMTU = 68
	// DefaultTxBuffer is Options.TxBuffer's default: outbound bytes held for a stream
	// peer that reads slowly, 4 MiB (the same as a link/pipe direction).
	DefaultTxBuffer = 4 << 20
	batchSize       = 64
)

// Options configure an Endpoint. Zero fields take the defaults.
type Options struct {
	// MTU is the largest IP packet (frames are up to MTU+14): MinMTU..MaxMTU, 0 for
	// DefaultMTU. It must match the guest's (set it with DHCP option 26 or a router
	// advertisement's MTU option, or on the guest's interface).
	MTU int
	// TxBuffer bounds the outbound bytes (frames and their length fields) waiting for a
	// stream peer to read; 0 means DefaultTxBuffer. It is raised to hold at least two
	// of the largest frames.
	TxBuffer int
}

func (o Options) norm() (Options, error) {
	if o.MTU == 0 {
		o.MTU = DefaultMTU
	}
	if o.MTU < MinMTU || o.MTU > MaxMTU {
		return o, fmt.Errorf("vmsock: MTU %d out of range %d..%d", o.MTU, MinMTU, MaxMTU)
	}
	if o.TxBuffer <= 0 {
		o.TxBuffer = DefaultTxBuffer
	}
	if min := 2 * (lenPrefix + o.MTU + EthHdrLen + vlanTagLen); o.TxBuffer < min {
		o.TxBuffer = min
	}
	return o, nil
}

// Stats counts an Endpoint's traffic.
type Stats struct {
	RxFrames, RxBytes uint64 // frames handed to the Dispatcher, and their bytes
	RxDropped         uint64 // no Dispatcher attached, or a runt or over-long frame
	RxRunt            uint64 // shorter than an Ethernet header (also in RxDropped)
	RxTooLong         uint64 // datagram over MTU+18 (also in RxDropped)
	RxBadLength       uint64 // stream: a length field over the largest frame; the connection was closed
	TxFrames, TxBytes uint64 // frames written or queued for the peer, and their bytes
	TxDropped         uint64 // the outbound buffer was full, or no peer connected
	Conns             uint64 // stream connections served (Listen) or 1
}

type dispatcherBox struct{ d link.Dispatcher }

// Endpoint is a frame device over a UNIX socket. It implements link.Endpoint.
type Endpoint struct {
	mtu      int
	maxFrame int // MTU+14+4: the longest frame accepted
	txBuf    int
	dgram    bool
	disp     atomic.Pointer[dispatcherBox]

	mu     sync.Mutex // the current connection and the endpoint's closed state
	cur    *conn      // nil between connections
	closed bool
	ln     net.Listener
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup
	once   sync.Once
	err    atomic.Pointer[error]

	// dgram: where frames go (the peer's bound address); learned from received
	// datagrams when not given.
	peer      atomic.Pointer[unix.SockaddrUnix]
	fixedPeer bool

	rxFrames, rxBytes, rxDropped, rxRunt, rxTooLong, rxBadLength atomic.Uint64
	txFrames, txBytes, txDropped, conns                          atomic.Uint64
}

var _ link.Endpoint = (*Endpoint)(nil)

func newEndpoint(opts Options, dgram bool) (*Endpoint, error) {
	o, err := opts.norm()
	if err != nil {
		return nil, err
	}
	return &Endpoint{mtu: o.MTU, maxFrame: o.MTU + EthHdrLen + vlanTagLen, txBuf: o.TxBuffer,
		dgram: dgram, done: make(chan struct{})}, nil
}

// NewStream serves one connected stream socket (a *net.UnixConn, or any net.Conn with a
// descriptor: QEMU's stream backend also speaks TCP) with the 4-byte length framing. The
// Endpoint owns c and closes it on Close; when the peer hangs up the Endpoint stays, and
// drops what is written (Connected reports the end of the connection).
func NewStream(c net.Conn, opts Options) (*Endpoint, error) {
	e, err := newEndpoint(opts, false)
	if err != nil {
		return nil, err
	}
	if err := e.serveOne(c); err != nil {
		return nil, err
	}
	return e, nil
}

// ListenStream serves the connections of ln one at a time, as passt does for QEMU: the
// next connection is accepted when the current one ends (a restarted VM connects again).
// The Endpoint owns ln and closes it on Close. Frames written while no peer is connected
// are dropped (counted in TxDropped).
func ListenStream(ln net.Listener, opts Options) (*Endpoint, error) {
	e, err := newEndpoint(opts, false)
	if err != nil {
		return nil, err
	}
	e.ln = ln
	e.wg.Add(1)
	go e.acceptLoop()
	return e, nil
}

// NewDgram serves a bound UNIX datagram socket: one frame per datagram, to peer (QEMU's
// `-netdev dgram` local address), or, when peer is nil, to the address of the latest
// datagram received. The Endpoint owns c and closes it on Close.
func NewDgram(c *net.UnixConn, peer *net.UnixAddr, opts Options) (*Endpoint, error) {
	e, err := newEndpoint(opts, true)
	if err != nil {
		return nil, err
	}
	if peer != nil {
		e.peer.Store(&unix.SockaddrUnix{Name: peer.Name})
		e.fixedPeer = true
	}
	if err := e.serveOne(c); err != nil {
		return nil, err
	}
	return e, nil
}

// serveOne serves c, the endpoint's only connection (NewStream, NewDgram), on a
// goroutine of its own.
func (e *Endpoint) serveOne(c net.Conn) error {
	k, err := e.newConn(c)
	if err != nil {
		return err
	}
	e.conns.Add(1)
	e.mu.Lock()
	e.cur = k
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.serve(k)
	}()
	return nil
}

// MTU is the largest IP packet; frames are up to MTU()+14 bytes.
func (e *Endpoint) MTU() int { return e.mtu }

// Attach sets where inbound frames go; nil detaches (frames are then dropped).
func (e *Endpoint) Attach(d link.Dispatcher) {
	var b *dispatcherBox // nil detaches
	if d != nil {
		b = &dispatcherBox{d}
	}
	e.disp.Store(b)
}

// Err reports why the last connection ended, if not by Close or the peer's hang-up
// (a bad length field, a socket error); nil otherwise.
func (e *Endpoint) Err() error {
	if p := e.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Connected reports whether a peer is connected now (always true for a datagram socket
// until Close).
func (e *Endpoint) Connected() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cur != nil
}

// Stats returns a snapshot of the counters.
func (e *Endpoint) Stats() Stats {
	return Stats{
		RxFrames: e.rxFrames.Load(), RxBytes: e.rxBytes.Load(), RxDropped: e.rxDropped.Load(),
		RxRunt: e.rxRunt.Load(), RxTooLong: e.rxTooLong.Load(), RxBadLength: e.rxBadLength.Load(),
		TxFrames: e.txFrames.Load(), TxBytes: e.txBytes.Load(), TxDropped: e.txDropped.Load(),
		Conns: e.conns.Load(),
	}
}

// Close closes the socket (and the listener), ends the goroutines and waits for them.
// Later writes fail with net.ErrClosed.
func (e *Endpoint) Close() error {
	err := net.ErrClosed
	e.once.Do(func() {
		err = nil
		e.mu.Lock()
		e.closed = true
		k := e.cur
		e.mu.Unlock()
		close(e.done)
		if e.ln != nil {
			err = e.ln.Close()
		}
		if k != nil {
			k.shutdown()
		}
		e.wg.Wait()
	})
	return err
}

// WritePackets sends a batch of frames. Frames longer than MTU+14 (+4 for a VLAN tag)
// stop the batch with EMSGSIZE, shorter than 14 with EINVAL; frames that do not fit the
// outbound buffer, or find no peer, are dropped and counted. After Close, net.ErrClosed.
func (e *Endpoint) WritePackets(frames [][]byte) (int, error) { return e.writeFrames(nil, frames) }

// WriteFrames implements link.FrameWriter: frame i is hdrs[i] (its Ethernet header) and
// pkts[i] behind it, written with one writev(2) on the stream socket (on a datagram
// socket they are joined in a buffer of the endpoint's), so link/ether does not copy the
// packet behind its header. Limits, drops and errors are WritePackets'.
func (e *Endpoint) WriteFrames(hdrs, pkts [][]byte) (int, error) { return e.writeFrames(hdrs, pkts) }

var _ link.FrameWriter = (*Endpoint)(nil)

// writeFrames writes frames hdrs[i]+pkts[i] (hdrs nil: the frames are pkts).
func (e *Endpoint) writeFrames(hdrs, pkts [][]byte) (int, error) {
	e.mu.Lock()
	k, closed := e.cur, e.closed
	e.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	for i, f := range pkts {
		var h []byte
		if hdrs != nil {
			h = hdrs[i]
		}
		n := len(h) + len(f)
		if n > e.maxFrame {
			return i, syscall.EMSGSIZE
		}
		if n < EthHdrLen {
			return i, syscall.EINVAL
		}
		if k == nil || !k.send(h, f) {
			e.txDropped.Add(1)
			continue
		}
		e.txFrames.Add(1)
		e.txBytes.Add(uint64(n))
	}
	return len(pkts), nil
}

func (e *Endpoint) acceptLoop() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			select {
			case <-e.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				continue // transient: the next Accept may succeed
			}
			e.setErr(err)
			return
		}
		k, err := e.newConn(c)
		if err != nil {
			c.Close()
			e.setErr(err)
			continue
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			c.Close()
			return
		}
		e.cur = k
		e.mu.Unlock()
		e.conns.Add(1)
		e.serve(k)
	}
}

func (e *Endpoint) setErr(err error) { e.err.Store(&err) }

// conn is one connection (or the datagram socket): its descriptor, the outbound buffer
// and the writer that drains it.
type conn struct {
	e  *Endpoint
	c  net.Conn
	rc syscall.RawConn
	fd int

	mu     sync.Mutex
	dead   bool   // shut down: no more writes to fd
	pend   []byte // stream: outbound bytes not yet written, pend[head:]
	join   []byte // dgram: a frame written as header and packet, joined (under mu)
	head   int
	wake   chan struct{}
	ended  chan struct{}
	closer sync.Once
}

func (e *Endpoint) newConn(c net.Conn) (*conn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("vmsock: %T has no descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("vmsock: %w", err)
	}
	k := &conn{e: e, c: c, rc: rc, fd: -1, wake: make(chan struct{}, 1), ended: make(chan struct{})}
	if err := rc.Control(func(fd uintptr) { k.fd = int(fd) }); err != nil {
		return nil, fmt.Errorf("vmsock: %w", err)
	}
	if !e.dgram {
		k.pend = make([]byte, 0, e.txBuf)
	}
	return k, nil
}

// shutdown closes the connection once: no write reaches the descriptor after it.
func (k *conn) shutdown() {
	k.closer.Do(func() {
		k.mu.Lock()
		k.dead = true
		k.mu.Unlock()
		k.c.Close()
		close(k.ended)
	})
}

// serve runs the connection's writer and reads until the connection ends.
func (e *Endpoint) serve(k *conn) {
	var wg sync.WaitGroup
	if !e.dgram {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.writer()
		}()
	}
	var err error
	if e.dgram {
		err = k.readDgrams()
	} else {
		err = k.readStream()
	}
	select {
	case <-e.done:
	default:
		if err != nil {
			e.setErr(err)
		}
	}
	// Recorded before the peer can see the hang-up.
	e.mu.Lock()
	if e.cur == k {
		e.cur = nil
	}
	e.mu.Unlock()
	k.shutdown()
	wg.Wait()
}

// send queues or writes one frame, h followed by f (h may be empty); false: dropped.
func (k *conn) send(h, f []byte) bool {
	if k.e.dgram {
		return k.sendDgram(h, f)
	}
	var prefix [lenPrefix]byte
	binary.BigEndian.PutUint32(prefix[:], uint32(len(h)+len(f)))
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return false
	}
	pieces := [3][]byte{prefix[:], h, f}
	if len(k.pend) == k.head {
		// Nothing waits: write at once, without the writer goroutine. A partial write
		// leaves the rest of this frame to the writer (the stream must never carry half
		// a frame followed by another).
		n, err := writev(k.fd, pieces[:])
		total := lenPrefix + len(h) + len(f)
		switch {
		case err == nil && n == total:
			return true
		case err != nil && err != unix.EAGAIN:
			return false // the reader sees the error and ends the connection
		}
		k.pend, k.head = k.pend[:0], 0
		for _, p := range pieces {
			skip := min(n, len(p))
			n -= skip
			k.pend = append(k.pend, p[skip:]...)
		}
		k.kick()
		return true
	}
	need := lenPrefix + len(h) + len(f)
	if len(k.pend)-k.head+need > cap(k.pend) {
		return false // the peer is not reading: drop rather than grow
	}
	if len(k.pend)+need > cap(k.pend) {
		// Move what waits to the front of the buffer to make room at the end.
		n := copy(k.pend[:cap(k.pend)], k.pend[k.head:])
		k.pend, k.head = k.pend[:n], 0
	}
	for _, p := range pieces {
		k.pend = append(k.pend, p...)
	}
	return true
}

func (k *conn) kick() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// writer drains the outbound buffer whenever send left bytes in it, waiting in the
// runtime poller for the socket to take more.
func (k *conn) writer() {
	var werr error
	flush := func(fd uintptr) bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		for k.head < len(k.pend) && !k.dead {
			n, err := unix.Write(int(fd), k.pend[k.head:])
			if err == unix.EAGAIN {
				return false
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			k.head += n
		}
		k.pend, k.head = k.pend[:0], 0
		return true
	}
	for {
		select {
		case <-k.ended:
			return
		case <-k.wake:
		}
		if err := k.rc.Write(flush); err != nil {
			return // closed
		}
		if werr != nil {
			k.e.setErr(&net.OpError{Op: "write", Net: "unix", Err: os.NewSyscallError("write", werr)})
			k.shutdown()
			return
		}
	}
}

// writev writes the pieces (at most 3) in one system call without blocking (the
// descriptor is non-blocking); it returns the bytes written. It calls writev(2) directly
// with the iovecs on the stack: unix.Writev allocates them.
func writev(fd int, pieces [][]byte) (int, error) {
	var vec [3]unix.Iovec
	for i, p := range pieces {
		vec[i].Base = unsafe.SliceData(p)
		vec[i].SetLen(len(p))
	}
	for {
		n, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&vec[0])), uintptr(len(pieces)))
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// readStream reads length-prefixed frames until the connection ends, handing them over
// in batches that point into its buffer.
func (k *conn) readStream() error {
	e := k.e
	size := 256 << 10
	if min := 2 * (lenPrefix + e.maxFrame); size < min {
		size = min
	}
	buf := make([]byte, size)
	have := 0
	var rerr error
	eof := false
	fill := func(fd uintptr) bool {
		for have < len(buf) {
			n, err := unix.Read(int(fd), buf[have:])
			if err == unix.EAGAIN {
				return false
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				rerr = err
				return true
			}
			if n == 0 {
				eof = true
				return true
			}
			have += n
			return true
		}
		return true
	}
	var p streamParser
	p.maxFrame = e.maxFrame
	batch := make([][]byte, 0, batchSize)
	for {
		if err := k.rc.Read(fill); err != nil {
			return nil // closed
		}
		off := 0
		for {
			batch = batch[:0]
			n, err := p.parse(buf[off:have], &batch, batchSize)
			off += n
			e.deliver(batch)
			if p.runts > 0 {
				e.rxRunt.Add(p.runts)
				e.rxDropped.Add(p.runts)
				p.runts = 0
			}
			if err != nil {
				e.rxBadLength.Add(1)
				return err
			}
			if len(batch) < batchSize {
				break
			}
		}
		have = copy(buf, buf[off:have])
		if rerr != nil {
			return &net.OpError{Op: "read", Net: "unix", Err: os.NewSyscallError("read", rerr)}
		}
		if eof {
			return nil
		}
	}
}

// deliver hands a batch of frames to the dispatcher.
func (e *Endpoint) deliver(batch [][]byte) {
	if len(batch) == 0 {
		return
	}
	box := e.disp.Load()
	if box == nil {
		e.rxDropped.Add(uint64(len(batch)))
		return
	}
	for _, f := range batch {
		e.rxBytes.Add(uint64(len(f)))
	}
	e.rxFrames.Add(uint64(len(batch)))
	box.d.DeliverPackets(batch)
}

// ErrBadLength is the error a stream connection ends with when a frame's length field is
// more than the largest frame (MTU+18): the peer does not speak the framing, or is
// hostile.
var ErrBadLength = errors.New("vmsock: frame length field over the largest frame")

// streamParser cuts QEMU's stream framing: a 4-byte big-endian length, then that many
// bytes of frame.
type streamParser struct {
	maxFrame int
	runts    uint64 // frames shorter than an Ethernet header, skipped
}

// parse appends to batch (up to max frames) the complete frames at the start of b, and
// returns how many bytes they took. A length over maxFrame is ErrBadLength (the bytes
// before it are consumed and their frames returned).
func (p *streamParser) parse(b []byte, batch *[][]byte, max int) (int, error) {
	off := 0
	for len(*batch) < max && len(b)-off >= lenPrefix {
		n := binary.BigEndian.Uint32(b[off:])
		if n > uint32(p.maxFrame) {
			return off, fmt.Errorf("%w: %d bytes (largest %d)", ErrBadLength, n, p.maxFrame)
		}
		end := off + lenPrefix + int(n)
		if end > len(b) {
			break
		}
		if n < EthHdrLen {
			p.runts++
		} else {
			*batch = append(*batch, b[off+lenPrefix:end])
		}
		off = end
	}
	return off, nil
}
