package forward

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berthnet/berth/wire"
)

// udpFlow is one UDP association. Outbound (the namespace's), conn is a connected host
// socket; inbound (a port forward's), pc is the forward's host socket and client the real
// client. nsSide is the namespace's endpoint, peer the address the namespace talks to.
type udpFlow struct {
	f            *Forwarder
	nsSide, peer netip.AddrPort
	conn         net.Conn
	pc           net.PacketConn
	client       net.Addr
	owner        *portForward // inbound only
	last         atomic.Int64 // unix nanoseconds of the last datagram either way
	replied      atomic.Bool  // the far side has answered: the longer timeout applies
	once         sync.Once
}

func (u *udpFlow) touch() { u.last.Store(time.Now().UnixNano()) }

func (u *udpFlow) close() {
	u.once.Do(func() {
		if u.conn != nil {
			u.conn.Close()
		}
	})
}

// handleUDP takes UDP datagrams from the namespace for destinations that are not the
// stack's (and for its own addresses where no socket is bound).
func (f *Forwarder) handleUDP(src, dst netip.Addr, seg []byte) bool {
	h, err := wire.ParseUDP(seg)
	if err != nil || !h.VerifyChecksum(src, dst) {
		return true // RFC 1122 §4.1.3.4: silently discard
	}
	payload := h.Payload()
	k := flowKey{netip.AddrPortFrom(src, h.SrcPort()), netip.AddrPortFrom(dst, h.DstPort())}
	f.mu.Lock()
	if u := f.udpRev[k]; u != nil {
		f.mu.Unlock()
		u.touch()
		u.replied.Store(true)
		if _, err := u.pc.WriteTo(payload, u.client); err == nil {
			f.c.toHost.Add(uint64(len(payload)))
		}
		return true
	}
	u := f.udp[k]
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return true
	}
	if u == nil {
		target, ok := f.hostTarget(k.dst)
		if !ok {
			code := wire.ICMPv4CodeNetUnreachable
			if dst == f.cfg.Gateway4 || dst == f.cfg.Gateway6 || dst == f.cfg.DNS4 || dst == f.cfg.DNS6 {
				code = wire.ICMPv4CodePortUnreachable
			}
			f.sendICMPUnreachable(src, dst, wire.ProtoUDP, seg, code)
			return true
		}
		conn, err := f.cfg.Dialer.Dial("udp", target.String())
		if err != nil {
			f.sendICMPUnreachable(src, dst, wire.ProtoUDP, seg, unreachableCode(err))
			return true
		}
		u = &udpFlow{f: f, nsSide: k.src, peer: k.dst, conn: conn}
		u.touch()
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			conn.Close()
			return true
		}
		victim := f.udpRoomLocked()
		f.udp[k] = u
		f.wg.Add(1)
		f.mu.Unlock()
		f.evicted(victim)
		f.c.udpOut.Add(1)
		go u.readHost(slices.Clone(seg[:wire.UDPHeaderLen]))
	}
	u.touch()
	if _, err := u.conn.Write(payload); err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			f.sendICMPUnreachable(src, dst, wire.ProtoUDP, seg, wire.ICMPv4CodePortUnreachable)
		}
		return true
	}
	f.c.toHost.Add(uint64(len(payload)))
	return true
}

// udpRoomLocked makes room for a new UDP flow when MaxUDPFlows are open: it removes an
// idle flow, which the caller passes to evicted once f.mu is released. Like conntrack's
// early drop it prefers a flow that never saw a reply (a flood of new flows is all such
// flows, the namespace's working ones have replies), then the least recently used, among
// a sample of the table: a scan of the whole table per new flow would make a flood cost
// time proportional to the table.
func (f *Forwarder) udpRoomLocked() *udpFlow {
	if len(f.udp)+len(f.udpRev) < f.cfg.MaxUDPFlows {
		return nil
	}
	const sample = 16
	var victim *udpFlow
	var vk flowKey
	var vm map[flowKey]*udpFlow
	n := 0
	for _, m := range []map[flowKey]*udpFlow{f.udp, f.udpRev} {
		for k, u := range m {
			if victim == nil || udpEvictsBefore(u, victim) {
				victim, vk, vm = u, k, m
			}
			if n++; n >= sample {
				break
			}
		}
	}
	if victim == nil {
		return nil
	}
	delete(vm, vk)
	if victim.owner != nil {
		victim.owner.dropClient(victim)
	}
	return victim
}

// udpEvictsBefore: a is a better victim than b (no reply yet, then idle for longer).
func udpEvictsBefore(a, b *udpFlow) bool {
	if ar, br := a.replied.Load(), b.replied.Load(); ar != br {
		return !ar
	}
	return a.last.Load() < b.last.Load()
}

// evicted ends a flow udpRoomLocked removed (nil: none).
func (f *Forwarder) evicted(u *udpFlow) {
	if u != nil {
		u.close()
		f.c.udpEvicted.Add(1)
	}
}

// udpPayloadOff is where a datagram's payload starts in a udpPool buffer.
const udpPayloadOff = wire.NetworkHeadroom + wire.UDPHeaderLen

var udpPool = sync.Pool{New: func() any {
	b := make([]byte, udpPayloadOff+65535)
	return &b
}}

const udpBufSize = udpPayloadOff + 65535 // what a udpPool buffer counts against MaxBuffered

// readHost passes the host socket's datagrams, and the ICMP errors it reports
// (ECONNREFUSED and the like on a connected socket), back into the namespace. hdr is
// the first datagram's UDP header, quoted in those errors. It waits for the socket to be
// readable before it takes a buffer (MaxBuffered), so an idle flow holds none, and reads
// each datagram where sendUDP would have copied it.
func (u *udpFlow) readHost(hdr []byte) {
	f := u.f
	defer f.wg.Done()
	quote := hdr
	r, rerr := newFDReader(u.conn, false)
	for {
		var err error
		if rerr == nil {
			err = r.wait()
		}
		if err == nil {
			if !f.buf.take(udpBufSize) {
				return
			}
			bp := udpPool.Get().(*[]byte)
			p := (*bp)[udpPayloadOff:]
			var n int
			if rerr == nil {
				n, err = r.Read(p)
			} else {
				n, err = u.conn.Read(p)
			}
			if err == nil {
				u.touch()
				u.replied.Store(true)
				if f.emitUDP(u.peer, u.nsSide, *bp, n) == nil {
					f.c.toNS.Add(uint64(n))
				}
			}
			udpPool.Put(bp)
			f.buf.give(udpBufSize)
			if err == nil || err == errWouldBlock {
				continue
			}
		}
		var errno syscall.Errno
		if errors.As(err, &errno) && (errno == syscall.ECONNREFUSED || errno == syscall.EHOSTUNREACH ||
			errno == syscall.ENETUNREACH) {
			f.sendICMPUnreachable(u.nsSide.Addr(), u.peer.Addr(), wire.ProtoUDP, quote, unreachableCode(err))
			continue
		}
		return
	}
}

// sendUDP sends a datagram into the namespace from src (any address) to dst.
func (f *Forwarder) sendUDP(src, dst netip.AddrPort, payload []byte) error {
	if len(payload) > 65535-wire.UDPHeaderLen {
		return syscall.EMSGSIZE
	}
	bp := udpPool.Get().(*[]byte)
	defer udpPool.Put(bp)
	copy((*bp)[udpPayloadOff:], payload)
	return f.emitUDP(src, dst, *bp, len(payload))
}

// emitUDP sends the n-byte payload at b[udpPayloadOff:] into the namespace.
func (f *Forwarder) emitUDP(src, dst netip.AddrPort, b []byte, n int) error {
	if n > 65535-wire.UDPHeaderLen {
		return syscall.EMSGSIZE
	}
	b = b[:udpPayloadOff+n]
	d := b[wire.NetworkHeadroom:]
	(&wire.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: len(d)}).Encode(d)
	wire.SetUDPChecksum(d, src.Addr(), dst.Addr())
	return f.output(src.Addr(), dst.Addr(), wire.ProtoUDP, b)
}

// expireUDP ends flows idle for longer than their timeout (RFC 4787 REQ-5: at least two
// minutes for established ones; conntrack uses 30 s before a reply, 180 s after).
func (f *Forwarder) expireUDP(now time.Time) {
	var dead []*udpFlow
	f.mu.Lock()
	for _, m := range []map[flowKey]*udpFlow{f.udp, f.udpRev} {
		for k, u := range m {
			timeout := f.cfg.UDPTimeout
			if u.replied.Load() {
				timeout = f.cfg.UDPStreamTimeout
			}
			if now.Sub(time.Unix(0, u.last.Load())) > timeout {
				delete(m, k)
				if u.owner != nil {
					u.owner.dropClient(u)
				}
				dead = append(dead, u)
			}
		}
	}
	f.mu.Unlock()
	for _, u := range dead {
		u.close()
		f.c.udpExpired.Add(1)
	}
}
