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
	if !f.reserve(2 * spliceBuf) {
		f.tcp.RejectTransparent(src, dst, seg)
		return true
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		f.unreserve(2 * spliceBuf)
		return true
	}
	f.pending[k] = struct{}{}
	f.wg.Add(1)
	f.mu.Unlock()
	synSeg := slices.Clone(seg)
	if csumOK {
		wire.SetTCPChecksum(synSeg, src, dst) // the link left it to us; AcceptTransparent checks it
	}
	go f.outboundTCP(k, src, dst, synSeg, target)
	return true
}

// outboundTCP connects to the host target and then accepts the namespace's connection.
func (f *Forwarder) outboundTCP(k flowKey, src, dst netip.Addr, syn []byte, target netip.AddrPort) {
	defer f.wg.Done()
	ctx, cancel := context.WithTimeout(f.ctx, f.cfg.DialTimeout)
	hc, err := f.cfg.Dialer.DialContext(ctx, "tcp", target.String())
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
	delete(f.pending, k)
	f.mu.Unlock()
	if err != nil {
		f.unreserve(2 * spliceBuf)
		return
	}
	f.c.tcpOut.Add(1)
	f.splice(c, hc, 2*spliceBuf)
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

// splice copies both ways until both directions end; buf is what was reserved for it.
// A FIN is passed on as a FIN (half-close), a reset or an error as a RST; blocking writes
// give backpressure in both directions.
func (f *Forwarder) splice(c *tcp.Conn, hc net.Conn, buf int64) {
	sp := &spliced{ns: c, host: hc}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		sp.abort()
		f.unreserve(buf)
		return
	}
	f.active[sp] = struct{}{}
	f.wg.Add(1)
	f.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer f.wg.Done()
		defer close(done)
		f.pipe(sp, hc, c, &f.c.toHost, func() error {
			if cw, ok := hc.(interface{ CloseWrite() error }); ok {
				return cw.CloseWrite()
			}
			return nil
		})
	}()
	f.pipe(sp, c, hc, &f.c.toNS, c.CloseWrite)
	<-done
	c.Close()
	hc.Close()
	f.mu.Lock()
	delete(f.active, sp)
	f.mu.Unlock()
	f.unreserve(buf)
}

// pipe copies from r to w; at r's EOF it calls closeWrite, on any error it aborts both.
func (f *Forwarder) pipe(sp *spliced, w io.Writer, r io.Reader, count interface{ Add(uint64) uint64 }, closeWrite func() error) {
	if c, ok := w.(*tcp.Conn); ok {
		// Into the namespace: straight from the host socket into the connection's send
		// buffer, no copy of our own.
		if _, err := c.ReadFrom(countingReader{r, count}); err != nil {
			sp.abort()
			return
		}
		if closeWrite() != nil {
			sp.abort()
		}
		return
	}
	bp := bufPool.Get().(*[]byte)
	big := false
	defer func() {
		if big {
			bigBufPool.Put(bp)
			f.shrink(spliceBufMax - spliceBuf)
		} else {
			bufPool.Put(bp)
		}
	}()
	b := *bp
	fills := 0
	for {
		n, err := r.Read(b)
		if n > 0 {
			if _, werr := w.Write(b[:n]); werr != nil {
				sp.abort()
				return
			}
			count.Add(uint64(n))
		}
		if n == len(b) && !big {
			// A bulk transfer: a larger buffer, if MaxBuffered has room for it.
			if fills++; fills >= 4 && f.grow(spliceBufMax-spliceBuf) {
				bufPool.Put(bp)
				bp, big = bigBufPool.Get().(*[]byte), true
				b = *bp
			}
		}
		if err == io.EOF {
			if closeWrite() != nil {
				sp.abort()
			}
			return
		}
		if err != nil {
			sp.abort()
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
