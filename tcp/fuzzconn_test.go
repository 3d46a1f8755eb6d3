package tcp

// FuzzConnection: the stateful fuzzer of issue 19's standing bar. Each input is a program
// of operations run against a live, established connection (timestamps and SACK
// negotiated) in the packet-script harness with its manual clock, so a run is
// deterministic: segments from the peer with any flags, sequence and acknowledgment
// numbers around the edges of both windows, options (timestamps, SACK blocks, MSS, window
// scale) and payload; ICMP errors quoting the connection; the application writing,
// reading and shutting down; time passing. After every operation the invariants hold:
//
//   - nothing panics;
//   - what the application read is a prefix of the peer's stream (the peer's payload
//     always comes from one model stream at the offset its sequence number names, so any
//     other byte, or a byte beyond what was injected, is corruption);
//   - what the stack sends is the application's stream at the offsets its sequence
//     numbers name;
//   - the buffers stay within their limits (memory bounded);
//   - at the end, the connection has ended or still works: an in-order segment from the
//     peer is delivered, and time running on ends or keeps it without a panic.

import (
	"encoding/binary"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/wire"
)

// peerByte and appByte are the model streams: byte i of what the peer and the
// application send.
func peerByte(i uint32) byte { return byte(i*7 + i>>9 + 3) }
func appByte(i uint32) byte  { return byte(i*13 + i>>11 + 1) }

// fuzzProg reads the operations' fields from the fuzz input; past its end every field
// is zero.
type fuzzProg struct{ b []byte }

func (p *fuzzProg) u8() uint8 {
	if len(p.b) == 0 {
		return 0
	}
	v := p.b[0]
	p.b = p.b[1:]
	return v
}
func (p *fuzzProg) u16() uint16 { return uint16(p.u8())<<8 | uint16(p.u8()) }

// fuzzConn is one run's state: the scripted peer and what each side has sent and read.
type fuzzConn struct {
	t        *testing.T
	ep       *extPeer
	c        *Conn
	peerBase uint32 // sequence number of the peer's stream byte 0 (its ISN + 1)
	appBase  uint32 // sequence number of the application's stream byte 0
	peerHi   uint32 // offset just past the highest peer byte injected
	written  uint32 // application bytes written
	read     uint32 // application bytes read
	tsval    uint32 // the peer's TSval clock
	closed   bool   // the application called Close
	buf      []byte
}

func FuzzConnection(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 512 {
			prog = prog[:512]
		}
		fc := newFuzzConn(t)
		p := &fuzzProg{b: prog}
		for ops := 0; len(p.b) > 0 && ops < 64; ops++ {
			switch p.u8() % 7 {
			case 0, 1:
				fc.segment(p)
			case 2:
				fc.write(int(p.u16()) % 20000)
			case 3:
				fc.readAll()
			case 4:
				fc.icmp(p)
			case 5:
				fc.advance(p)
			case 6:
				fc.shutdown(p.u8())
			}
			fc.drain()
			fc.check()
		}
		fc.finish()
	})
}

// The fuzzer's model holds on well-formed programs, and its checks see the streams: the
// first seed delivers the peer's data and sends the application's.
func TestFuzzConnectionModel(t *testing.T) {
	fc := newFuzzConn(t)
	p := &fuzzProg{b: fuzzSeeds()[0]}
	for len(p.b) > 0 {
		switch p.u8() % 7 {
		case 0, 1:
			fc.segment(p)
		case 2:
			fc.write(int(p.u16()) % 20000)
		case 3:
			fc.readAll()
		}
		fc.drain()
		fc.check()
	}
	if fc.read != 1000 || fc.written != 3000 || fc.peerHi != 1000 {
		t.Fatalf("read %d written %d injected %d, want 1000, 3000, 1000", fc.read, fc.written, fc.peerHi)
	}
	fc.finish()
	if fc.read != 1010 {
		t.Fatalf("after the final segment read %d, want 1010", fc.read)
	}
}

// Operations of a program, encoded as FuzzConnection decodes them.
func segOp(flags, seqBase, ackBase uint8, dseq int16, dack int8, n, wnd uint16, optBits uint8, optFields ...byte) []byte {
	b := []byte{0, flags, seqBase, ackBase, byte(uint16(dseq) >> 8), byte(dseq), byte(dack), byte(n >> 8), byte(n), byte(wnd >> 8), byte(wnd), optBits}
	return append(b, optFields...)
}
func writeOp(n uint16) []byte        { return []byte{2, byte(n >> 8), byte(n)} }
func readOp() []byte                 { return []byte{3} }
func advanceOp(ms, sec uint8) []byte { return []byte{5, ms, 0x80 | sec} }
func icmpOp(seq uint16, errno uint8, mtu uint16) []byte {
	return []byte{4, 0, byte(seq >> 8), byte(seq), errno, byte(mtu >> 8), byte(mtu)}
}

// fuzzSeeds: in-order data both ways with ACKs; out-of-order data and SACK; a zero
// window; PMTU errors; RST and SYN at the edges; a FIN; time passing with data
// outstanding.
func fuzzSeeds() [][]byte {
	cat := func(ops ...[]byte) []byte {
		var b []byte
		for _, o := range ops {
			b = append(b, o...)
		}
		return b
	}
	const A, PA, F, R, S = wire.TCPFlagACK, wire.TCPFlagACK | wire.TCPFlagPSH, wire.TCPFlagFIN | wire.TCPFlagACK, wire.TCPFlagRST, wire.TCPFlagSYN
	return [][]byte{
		cat(segOp(PA, 0, 0, 0, 0, 1000, 0xffff, 1), readOp(), writeOp(3000), segOp(A, 0, 1, 0, 0, 0, 0xffff, 1), readOp()),
		cat(segOp(A, 0, 0, 1460, 0, 1460, 0xffff, 1), segOp(A, 0, 0, 0, 0, 1460, 0xffff, 1), readOp()),
		cat(writeOp(5000), segOp(A, 0, 0, 0, 0, 0, 0xffff, 1|1<<2, 0, 0, 5, 0xb4), advanceOp(200, 1), segOp(A, 0, 1, 0, 0, 0, 0xffff, 1)),
		cat(writeOp(4000), segOp(A, 0, 0, 0, 0, 0, 0, 1), advanceOp(0, 2), advanceOp(0, 5), segOp(A, 0, 1, 0, 0, 0, 100, 1)),
		cat(writeOp(8000), icmpOp(10, 0, 68), icmpOp(20, 0, 1000), advanceOp(0, 1), segOp(A, 0, 1, 0, 0, 0, 0xffff, 1)),
		cat(segOp(R, 1, 0, -1, 0, 0, 0, 0), segOp(R, 0, 0, 0, 0, 0, 0, 0), readOp()),
		cat(segOp(S|A, 0, 0, 0, 0, 0, 0xffff, 1|0x10|0x20, 0, 40, 14), segOp(F, 0, 0, 0, 0, 10, 0xffff, 1), readOp(), []byte{6, 0}, advanceOp(0, 100)),
	}
}

func newFuzzConn(t *testing.T) *fuzzConn {
	// Small buffers: the window edges are reached sooner, and one operation cannot make
	// the stack send more segments than the script's output queue holds (a window
	// opening releases the whole send buffer, at the MSS floor 32 KiB/36 B = 910
	// segments).
	s := newScript(t, Config{WMem: [3]int{4096, 32 << 10, 32 << 10}, RMem: [3]int{4096, 32 << 10, 32 << 10}})
	s.out = make(chan []byte, 4096)
	ep := dialExtOn(t, s)
	fc := &fuzzConn{t: t, ep: ep, c: ep.c, peerBase: remoteISS + 1, appBase: ep.iss + 1,
		tsval: ep.tsval, buf: make([]byte, 64<<10)}
	t.Cleanup(func() {
		fc.c.Abort()
		fc.ep.p.Close()
	})
	return fc
}

// segment injects one segment from the peer. Its sequence number is relative to one of
// the receive window's edges, its acknowledgment number to one of the send window's;
// its payload is the peer's stream at the offset the sequence number names.
func (fc *fuzzConn) segment(p *fuzzProg) {
	flags := p.u8() & 0x3f
	seqBase, ackBase := p.u8(), p.u8()
	dseq, dack := int32(int16(p.u16())), int32(int8(p.u8()))
	n := int(p.u16()) % 3000
	wnd := p.u16()
	optBits := p.u8()
	c := fc.c
	c.mu.Lock()
	rcvNxt, rcvWnd, una, sndMax, tsRecent := c.rcvNxt, c.rcvWnd(), c.sndUna, c.sndMax, c.tsRecent
	c.mu.Unlock()
	var seq uint32
	switch seqBase % 4 {
	case 0:
		seq = rcvNxt
	case 1:
		seq = rcvNxt + rcvWnd // the right edge
	case 2:
		seq = fc.peerBase
	case 3:
		seq = fc.peerBase + fc.peerHi
	}
	seq += uint32(dseq)
	var ack uint32
	switch ackBase % 4 {
	case 0:
		ack = una
	case 1:
		ack = sndMax
	case 2:
		ack = una + (sndMax-una)/2
	case 3:
		ack = sndMax + 1<<30 // far out of the window
	}
	ack += uint32(dack)
	o := &wire.TCPOptions{}
	if optBits&1 != 0 {
		// The peer's clock runs forward, or (bit 2) replays an old value.
		fc.tsval++
		o.HasTimestamps, o.TSVal, o.TSEcr = true, fc.tsval, fc.ep.tsecr
		if optBits&2 != 0 {
			o.TSVal = tsRecent - uint32(p.u8())<<8
		}
	}
	if k := int(optBits>>2) & 3; k > 0 && k <= 3 {
		for i := range k {
			l := una + uint32(int32(int16(p.u16())))
			r := l + uint32(p.u16())
			o.SACK[i] = wire.SACKBlock{Left: l, Right: r}
		}
		o.NumSACK = k
	}
	if optBits&0x10 != 0 {
		o.HasMSS, o.MSS = true, p.u16()
	}
	if optBits&0x20 != 0 {
		o.HasWindowScale, o.WindowScale = true, p.u8()
	}
	payload := fc.buf[:n]
	off := seq - fc.peerBase
	if flags&wire.TCPFlagSYN != 0 {
		off++ // the SYN takes the first sequence number
	}
	for i := range payload {
		payload[i] = peerByte(off + uint32(i))
	}
	// Only bytes at offsets the peer's stream can have (not before its start) extend
	// what counts as injected; a segment may straddle the start.
	if end := off + uint32(n); n > 0 && int32(end) > 0 && int32(end-fc.peerHi) > 0 {
		fc.peerHi = end
	}
	fc.ep.inject(wire.TCPFields{SrcPort: fc.ep.rport, DstPort: fc.ep.lport, Seq: seq, Ack: ack,
		Flags: flags, Window: wnd, Options: o}, payload)
}

// icmp delivers an ICMP error quoting the connection, at a sequence number around the
// outstanding data.
func (fc *fuzzConn) icmp(p *fuzzProg) {
	c := fc.c
	c.mu.Lock()
	una, sndMax := c.sndUna, c.sndMax
	c.mu.Unlock()
	seq := una + uint32(int32(int8(p.u8())))
	if d := sndMax - una; d > 0 {
		seq = una + uint32(p.u16())%d
	}
	errs := []syscall.Errno{syscall.EMSGSIZE, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ECONNREFUSED, syscall.EPROTO}
	errno := errs[int(p.u8())%len(errs)]
	mtu := int(p.u16()) % 2000
	q := make([]byte, 8)
	binary.BigEndian.PutUint16(q, fc.ep.lport)
	binary.BigEndian.PutUint16(q[2:], fc.ep.rport)
	binary.BigEndian.PutUint32(q[4:], seq)
	fc.ep.p.HandleICMPError(scriptLocal, scriptRemote, q, errno, mtu)
}

// write queues up to n application bytes, no more than the send buffer takes without
// blocking.
func (fc *fuzzConn) write(n int) {
	c := fc.c
	c.mu.Lock()
	space := c.sndBufMax - c.sndBuf.n
	c.mu.Unlock()
	n = min(n, space, len(fc.buf))
	if n <= 0 || fc.closed {
		return
	}
	b := fc.buf[:n]
	for i := range b {
		b[i] = appByte(fc.written + uint32(i))
	}
	k, _ := c.Write(b)
	fc.written += uint32(k)
}

// readAll reads what the connection has for the application, without blocking, and
// checks it against the peer's stream.
func (fc *fuzzConn) readAll() {
	if fc.closed {
		return
	}
	c := fc.c
	for {
		c.mu.Lock()
		ready := c.rcvBuf.n > 0
		c.mu.Unlock()
		if !ready {
			return
		}
		k, err := c.Read(fc.buf)
		for i := range k {
			if got, want := fc.buf[i], peerByte(fc.read+uint32(i)); got != want {
				fc.t.Fatalf("read byte %d = %#x, the peer sent %#x", fc.read+uint32(i), got, want)
			}
		}
		fc.read += uint32(k)
		if int32(fc.read-fc.peerHi) > 0 {
			fc.t.Fatalf("read %d bytes, the peer sent only %d", fc.read, fc.peerHi)
		}
		if err != nil || k == 0 {
			return
		}
	}
}

// advance lets time pass: timers (retransmission, persist, keep-alive, TIME-WAIT) fire.
func (fc *fuzzConn) advance(p *fuzzProg) {
	d := time.Duration(p.u8()) * time.Millisecond
	if v := p.u8(); v&0x80 != 0 {
		d += time.Duration(v&0x7f) * time.Second
	}
	fc.tsval += uint32(d / time.Millisecond)
	fc.ep.clk.Advance(d)
}

// shutdown closes the write side (FIN after the data), or, rarely, the whole connection.
func (fc *fuzzConn) shutdown(how uint8) {
	if fc.closed {
		return
	}
	if how%8 == 7 {
		fc.closed = true
		fc.c.Close()
		return
	}
	fc.c.CloseWrite()
}

// drain takes the stack's output and checks the payload against the application's
// stream.
func (fc *fuzzConn) drain() {
	for {
		select {
		case b := <-fc.ep.out:
			h := wire.TCP(b)
			pl := h.Payload()
			if len(pl) == 0 {
				continue
			}
			off := h.Seq() - fc.appBase
			if h.Flags()&wire.TCPFlagSYN != 0 {
				fc.t.Fatalf("SYN with data from an established connection: %s", fmtSeg(h))
			}
			if int32(off) < 0 || int32(off+uint32(len(pl))-fc.written) > 0 {
				fc.t.Fatalf("sent %s: bytes %d..%d, the application wrote %d", fmtSeg(h), off, off+uint32(len(pl)), fc.written)
			}
			for i, v := range pl {
				if want := appByte(off + uint32(i)); v != want {
					fc.t.Fatalf("sent byte %d = %#x, the application wrote %#x", off+uint32(i), v, want)
				}
			}
			if o := opts(fc.t, h); o.HasTimestamps {
				fc.ep.tsecr = o.TSVal
			}
		default:
			return
		}
	}
}

// check asserts the memory bounds: the buffers within their limits, the reassembly
// within the stack's cap, the scoreboard no larger than what is outstanding.
func (fc *fuzzConn) check() {
	c := fc.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sndBuf.n > c.sndBufMax || len(c.sndBuf.buf) > pow2Ceil(max(c.sndBufMax, c.sndAutoMax)) {
		fc.t.Fatalf("send buffer %d bytes (ring %d), limit %d", c.sndBuf.n, len(c.sndBuf.buf), c.sndBufMax)
	}
	if c.rcvBuf.n > max(c.rcvBufMax, c.rcvAutoMax) || len(c.rcvBuf.buf) > pow2Ceil(max(c.rcvBufMax, c.rcvAutoMax)) {
		fc.t.Fatalf("receive buffer %d bytes (ring %d), limit %d", c.rcvBuf.n, len(c.rcvBuf.buf), c.rcvBufMax)
	}
	if c.nooo > maxOOO || fc.ep.p.oooBytes.Load() < 0 || fc.ep.p.oooBytes.Load() > int64(fc.ep.p.cfg.MaxOutOfOrder) {
		fc.t.Fatalf("out of order: %d ranges, %d bytes held by the stack", c.nooo, fc.ep.p.oooBytes.Load())
	}
	if c.state != StateClosed && c.sb.n > 0 && int(c.sndMax-c.sndUna) < c.sb.n {
		fc.t.Fatalf("scoreboard of %d records for %d outstanding bytes", c.sb.n, c.sndMax-c.sndUna)
	}
	if c.state != StateClosed && seqGT(c.sndUna, c.sndMax) {
		fc.t.Fatalf("SND.UNA %d beyond SND.MAX %d", c.sndUna, c.sndMax)
	}
}

// finish checks that the connection ended or still works: an in-order segment from the
// peer is delivered whole; then time runs on.
func (fc *fuzzConn) finish() {
	fc.readAll()
	c := fc.c
	c.mu.Lock()
	st, rcvNxt, sndMax, wnd, rdOK := c.state, c.rcvNxt, c.sndMax, c.rcvWnd(), !c.finRcvd && !c.rdShut && !c.userClosed
	c.mu.Unlock()
	if st.receiving() && rdOK && wnd >= 10 && rcvNxt-fc.peerBase == fc.read {
		fc.tsval += 1000
		payload := fc.buf[:10]
		for i := range payload {
			payload[i] = peerByte(fc.read + uint32(i))
		}
		fc.peerHi = max(fc.peerHi, fc.read+10)
		fc.ep.inject(wire.TCPFields{SrcPort: fc.ep.rport, DstPort: fc.ep.lport, Seq: rcvNxt, Ack: sndMax,
			Flags: wire.TCPFlagACK, Window: 0xffff, Options: &wire.TCPOptions{HasTimestamps: true, TSVal: fc.tsval, TSEcr: fc.ep.tsecr}}, payload)
		before := fc.read
		fc.readAll()
		c.mu.Lock()
		st2 := c.state
		c.mu.Unlock()
		if fc.read-before < 10 && st2 != StateClosed { // more when it filled a hole
			fc.t.Fatalf("in %v, an in-order segment at RCV.NXT was not delivered (read %d, want %d)", st2, fc.read-before, 10)
		}
	}
	fc.drain()
	fc.ep.clk.Advance(time.Hour)
	fc.drain()
	fc.check()
}
