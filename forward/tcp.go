package forward

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/berthnet/berth/tcp"
	"github.com/berthnet/berth/wire"
)

// handleTCP takes the TCP segments for a non-local destination that no connection of
// berth's took (TCP demultiplexes those of its connections itself: tcp.HandleForeign). A
// new SYN starts the host connect; the namespace's SYN is answered only when that
// succeeds, so a refused or unreachable host port looks the same inside the namespace
// (RST, or ICMP unreachable) as it does on the host. Retransmitted SYNs meanwhile are
// dropped. Anything else goes to TCP, which answers RST (no connection), or takes the
// segment of a connection that appeared since (AcceptTransparent runs on another
// goroutine).
func (f *Forwarder) handleTCP(src, dst netip.Addr, seg []byte, csumOK bool) bool {
	f.c.tcpHooked.Add(1)
	h, err := wire.ParseTCP(seg)
	if err != nil {
		return true
	}
	local := netip.AddrPortFrom(dst, h.DstPort())
	remote := netip.AddrPortFrom(src, h.SrcPort())
	const syn, ack, rst = wire.TCPFlagSYN, wire.TCPFlagACK, wire.TCPFlagRST
	if h.Flags()&(syn|ack|rst) != syn || f.tcp.HasConn(local, remote) {
		if !f.tcp.HandleTransparent(src, dst, seg, csumOK) {
			return true
		}
		// The SYN ended berth's TIME-WAIT for this 4-tuple: a new flow.
	}
	if !csumOK && !h.VerifyChecksum(src, dst) {
		return true
	}
	k := flowKey{remote, local}
	f.mu.Lock()
	if _, dup := f.pending[k]; dup || f.closed {
		f.mu.Unlock()
		return true
	}
	f.mu.Unlock()
	target, ok := f.hostTarget(local)
	if !ok {
		if dst == f.cfg.Gateway4 || dst == f.cfg.Gateway6 || dst == f.cfg.DNS4 || dst == f.cfg.DNS6 {
			f.c.tcpRefused.Add(1)
			f.tcp.RejectTransparent(src, dst, seg)
		} else {
			f.c.tcpUnreach.Add(1)
			f.sendICMPUnreachable(src, dst, wire.ProtoTCP, seg, wire.ICMPv4CodeNetUnreachable)
		}
		return true
	}
	// Over MaxTCPFlows, or its destination's backlog, the SYN is dropped, not refused:
	// the namespace retransmits it, as it would to a Linux listener whose SYN queue is
	// full, and connects once there is room.
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return true
	}
	if f.tcpFlows >= f.cfg.MaxTCPFlows {
		f.c.flowDrops.Add(1)
		return true
	}
	synSeg := slices.Clone(seg)
	if csumOK {
		wire.SetTCPChecksum(synSeg, src, dst) // the link left it to us; AcceptTransparent checks it
	}
	f.queueSYNLocked(&pendingSYN{k: k, src: src, dst: dst, syn: synSeg, target: target, at: time.Now()})
	return true
}

// outboundTCP connects to the host target of p, one of q's SYNs, and then accepts the
// namespace's connection.
func (f *Forwarder) outboundTCP(q *destQueue, p *pendingSYN) {
	defer f.wg.Done()
	src, dst, syn := p.src, p.dst, p.syn
	ctx, cancel := context.WithTimeout(f.ctx, f.cfg.DialTimeout)
	hc, err := f.cfg.Dialer.DialContext(ctx, "tcp", p.target.String())
	cancel()
	var c *tcp.Conn
	if err == nil {
		c, err = f.tcp.AcceptTransparent(src, dst, syn)
		if err != nil {
			hc.Close()
		}
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		// RFC 9293 §3.10.7.1: what a closed port answers.
		f.c.tcpRefused.Add(1)
		f.tcp.RejectTransparent(src, dst, syn)
	} else {
		f.c.tcpUnreach.Add(1)
		f.sendICMPUnreachable(src, dst, wire.ProtoTCP, syn, unreachableCode(err))
	}
	f.mu.Lock()
	f.connectDoneLocked(q, p)
	if err != nil {
		f.tcpFlows--
	}
	f.mu.Unlock()
	if err != nil {
		return
	}
	f.c.tcpOut.Add(1)
	f.splice(c, hc)
}

// spliced is a namespace connection joined to a host connection.
type spliced struct {
	ns   *tcp.Conn
	host net.Conn
	once sync.Once
}

// abort resets both sides (RST propagation, and Close of the Forwarder).
func (sp *spliced) abort() {
	sp.once.Do(func() {
		sp.ns.Abort()
		if tc, ok := sp.host.(*net.TCPConn); ok {
			tc.SetLinger(0) // close with RST
		}
		sp.host.Close()
	})
}

var (
	bufPool    = sync.Pool{New: func() any { b := make([]byte, spliceBuf); return &b }}
	bigBufPool = sync.Pool{New: func() any { b := make([]byte, spliceBufMax); return &b }}
)

// splice copies both ways until both directions end, then ends the flow (MaxTCPFlows).
// A FIN is passed on as a FIN (half-close), a reset or an error as a RST; blocking writes
// give backpressure in both directions.
func (f *Forwarder) splice(c *tcp.Conn, hc net.Conn) {
	defer f.endTCPFlow()
	sp := &spliced{ns: c, host: hc}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		sp.abort()
		return
	}
	f.active[sp] = struct{}{}
	f.wg.Add(1)
	f.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer f.wg.Done()
		defer close(done)
		f.toHost(sp)
	}()
	f.toNS(sp)
	<-done
	c.Close()
	hc.Close()
	f.mu.Lock()
	delete(f.active, sp)
	f.mu.Unlock()
}

// closeWrite passes r's EOF on as a FIN; a failure aborts both sides.
func (sp *spliced) closeWrite(w any) {
	cw, ok := w.(interface{ CloseWrite() error })
	if ok && cw.CloseWrite() != nil {
		sp.abort()
	}
}

// toHost copies the namespace connection to the host socket. It takes a buffer only once
// the connection has something to read (tcp.Conn.WaitRead) and gives it back as soon as
// the connection has nothing more, so an idle flow holds none; a flow whose reads keep
// filling the buffer (a bulk transfer) takes the larger one where MaxBuffered has room.
func (f *Forwarder) toHost(sp *spliced) {
	c := sp.ns
	var w io.Writer = sp.host
	if fw, err := newFDWriter(sp.host); err == nil {
		w = fw // a kernel socket: raw writes (fdread_linux.go)
	}
	fills := 0
	for {
		if err := c.WaitRead(); err != nil {
			sp.abort()
			return
		}
		size, pool := int64(spliceBuf), &bufPool
		if fills >= 4 && f.buf.tryTake(spliceBufMax) {
			size, pool = spliceBufMax, &bigBufPool
		} else if !f.buf.take(spliceBuf) {
			sp.abort()
			return
		}
		bp := pool.Get().(*[]byte)
		b := *bp
		var err error
		for {
			var n int
			n, err = c.Read(b)
			if n > 0 {
				if _, werr := w.Write(b[:n]); werr != nil {
					err = werr
					break
				}
				f.c.toHost.Add(uint64(n))
			}
			if n == len(b) {
				fills++
			}
			if err != nil || c.Buffered() == 0 {
				break
			}
		}
		pool.Put(bp)
		f.buf.give(size)
		if err == io.EOF {
			sp.closeWrite(sp.host)
			return
		}
		if err != nil {
			sp.abort()
			return
		}
	}
}

// toNS copies the host socket to the namespace connection, straight into the
// connection's send buffer (tcp.Conn.ReadFrom), with no copy of our own. ReadFrom makes
// room in that buffer before it reads, so it is called only once the host socket is
// readable, with a reader that never blocks and says how much it has (Len): a flow's send
// buffer grows only as far as what the host sent it needs.
func (f *Forwarder) toNS(sp *spliced) {
	c := sp.ns
	r, err := newFDReader(sp.host, true)
	if err != nil {
		// Not a socket of the kernel's (tests): the blocking copy.
		if _, err := c.ReadFrom(countingReader{sp.host, &f.c.toNS}); err != nil {
			sp.abort()
			return
		}
		sp.closeWrite(c)
		return
	}
	r.count = &f.c.toNS
	// Corked while the host socket has more to read: a read ends where the host's
	// segment did (64 KiB on loopback), not on our MSS, and each read's tail sent on its
	// own would be a small segment, a TAP write and a pass through the namespace's TCP
	// for a few bytes (MTU 65520: 1.55 segments per read). With TCP_CORK only full
	// segments go out; the tail joins the next read's data, and the cork comes off before
	// the copy waits for the host (fdReader.idle), so nothing is held while nothing more
	// is coming.
	corked := false
	r.idle = func() {
		if corked {
			corked = false
			c.SetCork(false)
		}
	}
	for {
		if err := r.wait(); err != nil {
			sp.abort()
			return
		}
		if !corked {
			corked = true
			c.SetCork(true)
		}
		_, err := c.ReadFrom(r)
		switch {
		case err == errWouldBlock:
		case err != nil:
			sp.abort()
			return
		default: // the host's EOF
			sp.closeWrite(c)
			return
		}
	}
}

// countingReader counts what passes through it.
type countingReader struct {
	r io.Reader
	n interface{ Add(uint64) uint64 }
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(uint64(k))
	return k, err
}
