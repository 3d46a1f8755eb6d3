package tcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/wire"
)

const remoteISS = 5000

type scriptConn struct {
	*script
	c         *Conn
	lport     uint16
	rport     uint16
	iss       uint32 // ours
	rcvNxt    uint32 // what the remote has sent up to
	sndNxt    uint32 // what we (the stack) have sent up to, as the remote sees it
	remoteWnd uint16
}

// remote sends a segment from the scripted peer with its current seq/ack.
func (sc *scriptConn) send(flags uint8, payload []byte) {
	sc.t.Helper()
	sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt, Ack: sc.sndNxt,
		Flags: flags, Window: sc.remoteWnd}, payload)
	sc.rcvNxt += uint32(len(payload))
	if flags&(wire.TCPFlagSYN|wire.TCPFlagFIN) != 0 {
		sc.rcvNxt++
	}
}

// dialScript opens a connection from the stack to the scripted remote.
func dialScript(t *testing.T, cfg Config, synackOpts *wire.TCPOptions, wnd uint16) *scriptConn {
	return dialScriptFrom(t, cfg, synackOpts, wnd, netip.AddrPort{}, DialOptions{})
}

func dialScriptFrom(t *testing.T, cfg Config, synackOpts *wire.TCPOptions, wnd uint16, local netip.AddrPort, opts DialOptions) *scriptConn {
	s := newScript(t, cfg)
	ch := make(chan *Conn, 1)
	errc := make(chan error, 1)
	go func() {
		c, err := s.p.Dial(context.Background(), local, netip.AddrPortFrom(scriptRemote, 80), opts)
		errc <- err
		ch <- c
	}()
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN), DstPort: is[uint16](80), MSS: is[uint16](1460), HasWS: is(true)})
	if synackOpts == nil {
		synackOpts = &wire.TCPOptions{HasMSS: true, MSS: 1460}
	}
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: wnd, Options: synackOpts}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(syn.Seq() + 1), Ack: is[uint32](remoteISS + 1), Len: is(0)})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	c := <-ch
	if c.State() != StateEstablished {
		t.Fatalf("state %v", c.State())
	}
	return &scriptConn{script: s, c: c, lport: syn.SrcPort(), rport: 80, iss: syn.Seq(),
		rcvNxt: remoteISS + 1, sndNxt: syn.Seq() + 1, remoteWnd: wnd}
}

func TestScriptActiveHandshake(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	// Data from the stack uses the negotiated MSS and our ACK.
	go sc.c.Write(make([]byte, 3000))
	seg1 := sc.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(sc.iss + 1), Ack: is[uint32](remoteISS + 1), Len: is(1460)})
	sc.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(sc.iss + 1 + 1460), Ack: is[uint32](remoteISS + 1), Len: is(1460)})
	sc.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(sc.iss + 1 + 2920), Ack: is[uint32](remoteISS + 1), Len: is(80)})
	// Window scale was not in the SYN-ACK: our window is unscaled.
	if seg1.Window() == 0 {
		t.Fatal("zero window advertised")
	}
}

func TestScriptPassiveHandshake(t *testing.T) {
	s := newScript(t, Config{})
	l, err := s.p.Listen(netip.AddrPortFrom(netip.IPv4Unspecified(), 80), 0, portsOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1000, HasWindowScale: true, WindowScale: 7}}, nil)
	sa := s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1),
		SrcPort: is[uint16](80), DstPort: is[uint16](4000), HasWS: is(true)})
	var o wire.TCPOptions
	if err := sa.ParseOptions(&o); err != nil || !o.HasMSS {
		t.Fatalf("SYN-ACK options %+v", o)
	}
	// Nothing to accept before the handshake completes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	if _, err := l.Accept(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("accept before ACK: %v", err)
	}
	cancel()
	// An ACK for the wrong sequence number is answered with RST, the SYN-RECEIVED
	// connection stays.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 5, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST), Seq: is(sa.Seq() + 5)})
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, []byte("hello"))
	c, err := l.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	if got := c.RemoteAddr(); got != netip.AddrPortFrom(scriptRemote, 4000) {
		t.Fatalf("remote %v", got)
	}
	// The peer's scale applies to its windows: 1000<<7.
	if si := c.Info(); si.SndWnd != 1000<<7 || si.MSS != 1000 {
		t.Fatalf("send window %d mss %d", si.SndWnd, si.MSS)
	}
	// Our data is acknowledged in the data ACK (delayed ACKs are off in scripts).
	s.expect(want{Ack: is[uint32](remoteISS + 1 + 5)})
}

func TestScriptSimultaneousOpen(t *testing.T) {
	s := newScript(t, Config{})
	errc := make(chan error, 1)
	var c *Conn
	go func() {
		var err error
		c, err = s.p.Dial(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{})
		errc <- err
	}()
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN)})
	// The peer's own SYN crosses ours.
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 5000,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1460, HasWindowScale: true, WindowScale: 7}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), Seq: is(syn.Seq()), Ack: is[uint32](remoteISS + 1)})
	// The peer's SYN-ACK acknowledges our SYN: established.
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 5000, Options: &wire.TCPOptions{HasMSS: true, MSS: 1460, HasWindowScale: true, WindowScale: 7}}, nil)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if c.State() != StateEstablished {
		t.Fatalf("state %v", c.State())
	}
	// The window of a SYN is not scaled (RFC 7323 §2.2).
	if w := c.Info().SndWnd; w != 5000 {
		t.Fatalf("send window %d, want 5000", w)
	}
	// Its SYN, a duplicate, is acknowledged (as Linux; without SACK, no D-SACK block).
	s.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(syn.Seq() + 1), Ack: is[uint32](remoteISS + 1), Len: is(0)})
	s.none()
}

func TestScriptRefused(t *testing.T) {
	s := newScript(t, Config{})
	errc := make(chan error, 1)
	go func() {
		_, err := s.p.Dial(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{})
		errc <- err
	}()
	syn := s.next()
	// A RST whose ACK does not acknowledge our SYN is ignored (RFC 5961 §3.2; RFC 9293).
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: 0, Ack: syn.Seq() + 7, Flags: wire.TCPFlagRST | wire.TCPFlagACK}, nil)
	s.none()
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: 0, Ack: syn.Seq() + 1, Flags: wire.TCPFlagRST | wire.TCPFlagACK}, nil)
	if err := <-errc; !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial: %v, want ECONNREFUSED", err)
	}
	if n := s.p.NumSockets(); n != 0 {
		t.Fatalf("%d sockets left", n)
	}
}

func TestScriptClosedPortRST(t *testing.T) {
	s := newScript(t, Config{})
	// SYN without ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> (RFC 9293 §3.10.7.1).
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 81, Seq: 1234, Flags: wire.TCPFlagSYN, Window: 100}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST | wire.TCPFlagACK), Seq: is[uint32](0), Ack: is[uint32](1235)})
	// With ACK: <SEQ=SEG.ACK><CTL=RST>.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 81, Seq: 1234, Ack: 999, Flags: wire.TCPFlagACK, Window: 100}, []byte("x"))
	s.expect(want{Flags: is(wire.TCPFlagRST), Seq: is[uint32](999)})
	// A RST is never answered.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 81, Seq: 1234, Flags: wire.TCPFlagRST}, nil)
	s.none()
	// A bad checksum is dropped silently.
	b := make([]byte, 20)
	(&wire.TCPFields{SrcPort: 4000, DstPort: 81, Seq: 1, Flags: wire.TCPFlagSYN}).Encode(b)
	s.p.HandlePacket(scriptRemote, scriptLocal, b)
	s.none()
}

func TestScriptRSTAcceptance(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	rst := func(seq uint32) {
		sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: seq, Flags: wire.TCPFlagRST}, nil)
	}
	// Out of window: dropped silently.
	rst(sc.rcvNxt + 1<<30)
	sc.none()
	// In window but not exact: a challenge ACK, the connection stays (RFC 5961 §3.2).
	rst(sc.rcvNxt + 100)
	sc.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(sc.sndNxt), Ack: is(sc.rcvNxt)})
	if sc.c.State() != StateEstablished {
		t.Fatal("in-window RST reset the connection")
	}
	// A SYN on an established connection: challenge ACK too (RFC 5961 §4.2).
	sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt + 10, Flags: wire.TCPFlagSYN, Window: 100}, nil)
	sc.expect(want{Flags: is(wire.TCPFlagACK)})
	if sc.c.State() != StateEstablished {
		t.Fatal("SYN reset the connection")
	}
	// An ACK for data never sent is answered and dropped (RFC 5961 §5.2 / RFC 9293).
	sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt, Ack: sc.sndNxt + 1000, Flags: wire.TCPFlagACK, Window: 100}, []byte("zz"))
	// The data of a segment with a bad ACK is not taken.
	sc.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(sc.rcvNxt)})
	// Exact sequence number: reset.
	rst(sc.rcvNxt)
	buf := make([]byte, 1)
	if _, err := sc.c.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after RST: %v", err)
	}
	// As Linux: the error is reported once; then reads see EOF and writes EPIPE.
	if _, err := sc.c.Read(buf); err != io.EOF {
		t.Fatalf("second read after RST: %v", err)
	}
	if _, err := sc.c.Write(buf); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write after RST: %v", err)
	}
	sc.none()
}

func TestScriptChallengeACKRateLimit(t *testing.T) {
	sc := dialScript(t, Config{ChallengeACKLimit: 3}, nil, 65535)
	for i := 0; i < 10; i++ {
		sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt + 5, Flags: wire.TCPFlagRST}, nil)
	}
	for i := 0; i < 3; i++ {
		sc.next()
	}
	sc.none()
	sc.clk.Advance(time.Second)
	sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt + 5, Flags: wire.TCPFlagRST}, nil)
	sc.next()
}

func TestScriptRetransmissionBackoff(t *testing.T) {
	sc := dialScript(t, Config{Retries: 4}, nil, 65535)
	// The handshake took no time on the manual clock (an RTT sample of 1 µs):
	// RTO = SRTT + max(4·RTTVAR, 200 ms), as Linux.
	if _, err := sc.c.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	first := sc.expect(want{Seq: is(sc.sndNxt), Payload: is("data")})
	rto := 200*time.Millisecond + time.Microsecond
	for i := 0; i < 4; i++ {
		sc.clk.Advance(rto - time.Millisecond)
		sc.none()
		sc.clk.Advance(time.Millisecond)
		sc.expect(want{Seq: is(first.Seq()), Payload: is("data")}) // retransmission i
		rto *= 2
	}
	if si := sc.c.Info(); si.Backoff != 4 || si.CWnd != 1460 || si.Retrans != 4 {
		t.Fatalf("after 4 timeouts: %+v", si)
	}
	// The fifth timeout ends the connection with ETIMEDOUT.
	sc.clk.Advance(rto)
	if _, err := sc.c.Read(make([]byte, 1)); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("read: %v, want ETIMEDOUT", err)
	}
	sc.none()
}

func TestScriptRTOAfterAck(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.c.Write([]byte("ab"))
	d := sc.next()
	sc.clk.Advance(50 * time.Millisecond)
	sc.sndNxt = d.Seq() + 2
	sc.send(wire.TCPFlagACK, nil) // RTT sample 50 ms
	si := sc.c.Info()
	// RFC 6298 §2.3 on the second sample: the handshake's 0 then 50 ms.
	if si.RTT <= 0 || si.RTO < 200*time.Millisecond {
		t.Fatalf("rtt %v rto %v", si.RTT, si.RTO)
	}
	if si.Timer != "off" {
		t.Fatalf("timer %q with nothing outstanding", si.Timer)
	}
}

func TestScriptZeroWindowProbe(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 0)
	n, err := sc.c.Write([]byte("hello world"))
	if err != nil || n != 11 {
		t.Fatal(n, err)
	}
	sc.none() // zero window: nothing goes
	if si := sc.c.Info(); si.Timer != "persist" {
		t.Fatalf("timer %q, want persist", si.Timer)
	}
	// Probes carry one byte of new data and back off: 200 ms, 400 ms, 800 ms.
	interval := 200*time.Millisecond + time.Microsecond // the RTO: SRTT (1 µs) + 200 ms
	for i := 0; i < 3; i++ {
		sc.clk.Advance(interval - time.Millisecond)
		sc.none()
		sc.clk.Advance(time.Millisecond)
		sc.expect(want{Seq: is(sc.iss + 1), Payload: is("h")}) // probe i
		// The receiver still has no room: it acknowledges nothing new, window 0.
		sc.send(wire.TCPFlagACK, nil)
		interval *= 2
	}
	if sc.c.State() != StateEstablished {
		t.Fatal("probing ended the connection")
	}
	// The window opens: everything goes at once.
	sc.remoteWnd = 1000
	sc.send(wire.TCPFlagACK, nil)
	sc.expect(want{Seq: is(sc.iss + 1), Payload: is("hello world")})
}

func TestScriptReassembly(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	base := sc.rcvNxt
	seg := func(off int, data string, flags uint8) {
		sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: base + uint32(off), Ack: sc.sndNxt,
			Flags: wire.TCPFlagACK | flags, Window: 1000}, []byte(data))
	}
	seg(5, "fghij", 0)
	sc.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(base), Len: is(0)}) // duplicate ACK at once (RFC 5681 §4.2)
	seg(15, "pq", wire.TCPFlagFIN)                                         // out-of-order FIN
	sc.next()
	seg(3, "defgh", 0) // overlaps
	sc.next()
	seg(10, "klmno", 0)
	sc.next()
	seg(0, "abc", 0) // fills the hole: everything up to the FIN
	sc.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(base + 17 + 1)})
	got, err := io.ReadAll(sc.c)
	if err != nil || string(got) != "abcdefghijklmnopq" {
		t.Fatalf("read %q %v", got, err)
	}
	if sc.c.State() != StateCloseWait {
		t.Fatal(sc.c.State())
	}
}

func TestScriptTimeWait(t *testing.T) {
	sc := dialScript(t, Config{TimeWait: 30 * time.Second}, nil, 65535)
	if err := sc.c.Close(); err != nil {
		t.Fatal(err)
	}
	fin := sc.expect(want{Flags: is(wire.TCPFlagFIN | wire.TCPFlagACK), Seq: is(sc.sndNxt), Ack: is(sc.rcvNxt)})
	sc.sndNxt = fin.Seq() + 1
	sc.send(wire.TCPFlagACK, nil)
	if st := sc.c.State(); st != StateFinWait2 {
		t.Fatal(st)
	}
	sc.send(wire.TCPFlagFIN|wire.TCPFlagACK, nil)
	sc.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(sc.rcvNxt)})
	if st := sc.c.State(); st != StateTimeWait {
		t.Fatal(st)
	}
	// A retransmitted FIN is acknowledged again and restarts the timer.
	sc.clk.Advance(20 * time.Second)
	sc.rcvNxt--
	sc.send(wire.TCPFlagFIN|wire.TCPFlagACK, nil)
	sc.expect(want{Ack: is(sc.rcvNxt)})
	sc.clk.Advance(20 * time.Second)
	if st := sc.c.State(); st != StateTimeWait {
		t.Fatalf("TIME-WAIT ended early: %v", st)
	}
	// The 4-tuple is held: a segment gets an ACK, not a RST.
	sc.send(wire.TCPFlagACK, []byte("late"))
	sc.expect(want{Flags: is(wire.TCPFlagACK)})
	sc.clk.Advance(10 * time.Second)
	if st := sc.c.State(); st != StateClosed {
		t.Fatalf("after 2*MSL: %v", st)
	}
	if n := sc.p.NumSockets(); n != 0 {
		t.Fatalf("%d sockets", n)
	}
	// Now the port is closed: RST.
	sc.send(wire.TCPFlagACK, nil)
	sc.expect(want{Flags: is(wire.TCPFlagRST)})
}

func TestScriptSimultaneousClose(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.c.CloseWrite()
	fin := sc.expect(want{Flags: is(wire.TCPFlagFIN | wire.TCPFlagACK)})
	// The peer's FIN crosses ours (it has not seen our FIN).
	sc.send(wire.TCPFlagFIN|wire.TCPFlagACK, nil)
	sc.expect(want{Ack: is(sc.rcvNxt)})
	if st := sc.c.State(); st != StateClosing {
		t.Fatal(st)
	}
	sc.sndNxt = fin.Seq() + 1
	sc.send(wire.TCPFlagACK, nil)
	if st := sc.c.State(); st != StateTimeWait {
		t.Fatal(st)
	}
	if _, err := sc.c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read: %v", err)
	}
}

func TestScriptHalfClose(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	if err := sc.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	fin := sc.expect(want{Flags: is(wire.TCPFlagFIN | wire.TCPFlagACK)})
	if _, err := sc.c.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write after CloseWrite: %v", err)
	}
	sc.sndNxt = fin.Seq() + 1
	sc.send(wire.TCPFlagACK, []byte("still reading"))
	sc.next()
	buf := make([]byte, 100)
	n, err := sc.c.Read(buf)
	if err != nil || string(buf[:n]) != "still reading" {
		t.Fatalf("%q %v", buf[:n], err)
	}
}

func TestScriptLingerZero(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.c.SetLinger(0)
	sc.c.Close()
	sc.expect(want{Flags: is(wire.TCPFlagRST | wire.TCPFlagACK), Seq: is(sc.sndNxt)})
	if n := sc.p.NumSockets(); n != 0 {
		t.Fatalf("%d sockets", n)
	}
}

func TestScriptListenerCloseResetsUnaccepted(t *testing.T) {
	s := newScript(t, Config{})
	l, err := s.p.Listen(netip.AddrPortFrom(scriptLocal, 80), 0, portsOpts())
	if err != nil {
		t.Fatal(err)
	}
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
	sa := s.next()
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
	s.next()
	l.Close()
	for i := 0; i < 2; i++ {
		s.expect(want{Flags: is(wire.TCPFlagRST | wire.TCPFlagACK)})
	}
	if n := s.p.NumSockets(); n != 0 {
		t.Fatalf("%d sockets", n)
	}
	if _, err := l.Accept(context.Background()); err == nil {
		t.Fatal("accept after close")
	}
}

func TestScriptBacklog(t *testing.T) {
	// Without SYN cookies a full SYN queue drops (with tcp_syncookies=1, the default, the
	// third SYN would get a cookie SYN-ACK instead: TestScriptSynCookieOnOverflow).
	s := newScript(t, Config{SynCookies: SynCookiesNever})
	s.listen(80, 2)
	for i := 0; i < 3; i++ {
		s.inject(wire.TCPFields{SrcPort: uint16(4000 + i), DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
	}
	s.next()
	s.next()
	s.none() // the third SYN is dropped: SYN queue full
	if s.p.Stats.ListenDrops.Load() != 1 {
		t.Fatal("listen drop not counted")
	}
}

func TestScriptSynRetries(t *testing.T) {
	s := newScript(t, Config{SynRetries: 2})
	errc := make(chan error, 1)
	go func() {
		_, err := s.p.Dial(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{})
		errc <- err
	}()
	s.next()
	for _, d := range []time.Duration{time.Second, 2 * time.Second} {
		s.waitTimer()
		s.clk.Advance(d)
		s.expect(want{Flags: is(wire.TCPFlagSYN)})
	}
	s.waitTimer()
	s.clk.Advance(4 * time.Second)
	if err := <-errc; !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("dial: %v", err)
	}
}

func TestScriptFastRetransmit(t *testing.T) {
	// NewReno's halving (RFC 5681 §3.2); CUBIC's β = 0.7 is checked in cubic_test.go.
	sc := dialScript(t, Config{CongestionControl: CCReno}, nil, 65535)
	sc.c.Write(make([]byte, 10*1460))
	var segs []wire.TCP
	for i := 0; i < 10; i++ { // initial window: 10 segments (RFC 6928)
		segs = append(segs, sc.next())
	}
	sc.none()
	// Segment 0 is lost: three duplicate ACKs.
	for i := 0; i < 3; i++ {
		sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt, Ack: sc.sndNxt, Flags: wire.TCPFlagACK, Window: 65535}, nil)
	}
	sc.expect(want{Seq: is(segs[0].Seq()), Len: is(1460)}) // fast retransmit
	// Partial ACK (segments 0-4 arrived, 5 lost too): 5 is retransmitted at once (NewReno).
	sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt, Ack: segs[5].Seq(), Flags: wire.TCPFlagACK, Window: 65535}, nil)
	sc.expect(want{Seq: is(segs[5].Seq())}) // partial ACK retransmit
	if si := sc.c.Info(); si.SSThresh != 5*1460 {
		t.Fatalf("ssthresh %d", si.SSThresh)
	}
}

func TestScriptTimeWaitReuse(t *testing.T) {
	reuse := DialOptions{Bind: ports.BindOptions{ReuseAddr: true}}
	sc := dialScriptFrom(t, Config{}, nil, 65535, netip.AddrPortFrom(scriptLocal, 40000), reuse)
	local := sc.c.LocalAddr()
	sc.c.Close()
	fin := sc.next()
	sc.sndNxt = fin.Seq() + 1
	sc.send(wire.TCPFlagFIN|wire.TCPFlagACK, nil)
	sc.next()
	if st := sc.c.State(); st != StateTimeWait {
		t.Fatal(st)
	}
	dial := func() (*Conn, error) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		var c *Conn
		go func() {
			var err error
			c, err = sc.p.Dial(ctx, local, netip.AddrPortFrom(scriptRemote, 80), reuse)
			errc <- err
		}()
		select {
		case err := <-errc:
			return nil, err
		case syn := <-sc.out:
			h := expectSeg(t, wire.TCP(syn), want{Flags: is(wire.TCPFlagSYN), PSH: is(false)})
			if !seqGT(h.Seq(), fin.Seq()+1) {
				t.Fatalf("SYN reusing TIME-WAIT: %s (old FIN at %d)", fmtSeg(h), fin.Seq())
			}
			cancel()
			<-errc
			return c, nil
		}
	}
	// Too young (under a second): the 4-tuple is still taken.
	if _, err := dial(); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("dial over a fresh TIME-WAIT: %v", err)
	}
	sc.clk.Advance(2 * time.Second)
	if _, err := dial(); err != nil {
		t.Fatalf("dial over an old TIME-WAIT: %v", err)
	}
	if sc.p.Stats.TimeWaitReused.Load() != 1 {
		t.Fatal("reuse not counted")
	}
}

func TestScriptTimeWaitNewSYN(t *testing.T) {
	s := newScript(t, Config{})
	l := s.listen(80, 0)
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
	sa := s.next()
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	c, _ := l.Accept(context.Background())
	c.Close() // we close first: we end in TIME-WAIT
	fin := s.next()
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: fin.Seq() + 1, Flags: wire.TCPFlagFIN | wire.TCPFlagACK, Window: 1000}, nil)
	s.next()
	if c.State() != StateTimeWait {
		t.Fatal(c.State())
	}
	// An old SYN (not beyond the old sequence space) gets an ACK.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK)})
	// A new SYN beyond it opens a new connection through the listener.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 100000, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
	s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), Ack: is[uint32](remoteISS + 100001)})
}

func TestScriptICMPRefused(t *testing.T) {
	s := newScript(t, Config{})
	errc := make(chan error, 1)
	go func() {
		_, err := s.p.Dial(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{})
		errc <- err
	}()
	syn := s.next()
	// The wrong quoted sequence number is ignored (RFC 5927).
	bad := append([]byte(nil), syn[:8]...)
	bad[7]++
	s.p.HandleICMPError(scriptLocal, scriptRemote, bad, syscall.EHOSTUNREACH, 0)
	select {
	case err := <-errc:
		t.Fatalf("dial ended by a forged ICMP error: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	s.p.HandleICMPError(scriptLocal, scriptRemote, syn[:8], syscall.EHOSTUNREACH, 0)
	if err := <-errc; !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("dial: %v", err)
	}
}

func TestScriptDialCancel(t *testing.T) {
	s := newScript(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.p.Dial(ctx, netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{})
		errc <- err
	}()
	s.next()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("dial: %v", err)
	}
	if n := s.p.NumSockets(); n != 0 {
		t.Fatalf("%d sockets", n)
	}
	if s.clk.Pending() != 0 {
		t.Fatalf("%d timers left", s.clk.Pending())
	}
}

func TestScriptSockets(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	l, err := sc.p.Listen(netip.AddrPortFrom(scriptLocal, 8080), 7, portsOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sc.c.Write([]byte("abc"))
	sc.next()
	sc.send(wire.TCPFlagACK, []byte("xy"))
	var sawConn, sawListener bool
	for _, si := range sc.p.Sockets() {
		switch si.State {
		case StateListen:
			sawListener = si.Local.Port() == 8080 && si.SendQ == 7
		case StateEstablished:
			sawConn = si.RecvQ == 2 && si.SendQ == 3 && si.Timer == "on" && si.TimerLeft > 0 && si.MSS == 1460
			if !sawConn {
				t.Errorf("%+v", si)
			}
		}
	}
	if !sawConn || !sawListener {
		t.Fatalf("sockets %+v", sc.p.Sockets())
	}
}

func TestScriptKeepalive(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.c.SetKeepAliveConfig(KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 2 * time.Second, Count: 2})
	sc.clk.Advance(9 * time.Second)
	sc.none()
	sc.clk.Advance(time.Second)
	sc.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(sc.sndNxt - 1), Len: is(0)}) // keep-alive probe
	// The peer answers: the connection gets a fresh idle period (from the next timer
	// expiry, 2 s later: keep-alive does not read the clock per segment).
	sc.send(wire.TCPFlagACK, nil)
	sc.clk.Advance(11 * time.Second)
	sc.none()
	sc.clk.Advance(time.Second)
	sc.next()
	sc.clk.Advance(2 * time.Second)
	sc.next()
	sc.clk.Advance(2 * time.Second)
	if _, err := sc.c.Read(make([]byte, 1)); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("read: %v", err)
	}
}

func TestScriptSenderSWS(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 1000)
	sc.c.Write(make([]byte, 3000))
	d := sc.expect(want{Len: is(1000)}) // the 1000-byte window filled
	sc.none()
	// The peer takes it but offers only 200 bytes: less than an MSS, less than half the
	// largest window seen, less than what is queued: wait (RFC 9293 §3.8.6.2.1).
	sc.sndNxt = d.Seq() + 1000
	sc.remoteWnd = 200
	sc.send(wire.TCPFlagACK, nil)
	sc.none()
	if si := sc.c.Info(); si.Timer != "persist" {
		t.Fatalf("timer %q, want the override (persist) timer", si.Timer)
	}
	// The override timer sends what fits; then the retransmission timer runs, not probes.
	sc.clk.Advance(200*time.Millisecond + time.Microsecond) // the RTO: SRTT (1 µs) + 200 ms
	sc.expect(want{Seq: is(sc.sndNxt), Len: is(200)})       // what fits, on the override
	if si := sc.c.Info(); si.Timer != "on" {
		t.Fatalf("timer %q after the override, want the retransmission timer", si.Timer)
	}
	// A window of at least half the maximum goes at once.
	sc.sndNxt += 200
	sc.remoteWnd = 600
	sc.send(wire.TCPFlagACK, nil)
	sc.expect(want{Seq: is(sc.sndNxt), Len: is(600)})
}

func TestScriptReceiverSWS(t *testing.T) {
	sc := dialScript(t, Config{ReceiveBuffer: 8192}, nil, 65535)
	// Fill the receive buffer: the window closes.
	for i := 0; i < 8; i++ {
		sc.send(wire.TCPFlagACK, make([]byte, 1024))
	}
	var last wire.TCP
	for {
		select {
		case b := <-sc.out:
			last = wire.TCP(b)
			continue
		case <-time.After(20 * time.Millisecond):
		}
		break
	}
	expectSeg(t, last, want{Win: is[uint16](0), Ack: is(sc.rcvNxt)}) // the buffer filled
	// Reading less than min(buffer/2, MSS) = 1460 bytes does not reopen the window.
	buf := make([]byte, 1000)
	io.ReadFull(sc.c, buf)
	sc.none()
	// Reading more does, with the whole free space.
	io.ReadFull(sc.c, buf)
	sc.expect(want{Flags: is(wire.TCPFlagACK), Win: is[uint16](2000), Ack: is(sc.rcvNxt)}) // window update
}

func TestScriptReassemblyBounded(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	base := sc.rcvNxt
	// 20 disjoint out-of-order pieces: the connection remembers maxOOO ranges, drops the
	// rest, and still delivers every byte once the sender fills the holes again.
	for i := 1; i <= 20; i++ {
		sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: base + uint32(i*10), Ack: sc.sndNxt,
			Flags: wire.TCPFlagACK, Window: 1000}, bytes.Repeat([]byte{byte(i)}, 5))
		sc.next()
	}
	data := make([]byte, 210)
	for i := 0; i <= 20; i++ {
		for j := 0; j < 10; j++ {
			data[i*10+j] = byte(i)
		}
	}
	// The sender retransmits everything in order.
	for off := 0; off < len(data); off += 50 {
		sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: base + uint32(off), Ack: sc.sndNxt,
			Flags: wire.TCPFlagACK, Window: 1000}, data[off:min(off+50, len(data))])
	}
	got := make([]byte, len(data))
	if _, err := io.ReadFull(sc.c, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %v: %v", err, got)
	}
}

// FuzzSegment feeds arbitrary segments (with a valid checksum) to an established
// connection and to a listener: nothing may panic, and the connection must still work.
func FuzzSegment(f *testing.F) {
	f.Add(uint32(0), uint32(0), uint8(wire.TCPFlagACK), uint16(1000), []byte{}, []byte("data"))
	f.Add(uint32(1), uint32(1), uint8(wire.TCPFlagSYN), uint16(0), []byte{2, 4, 5, 180}, []byte{})
	f.Add(uint32(0), uint32(0), uint8(wire.TCPFlagRST|wire.TCPFlagACK), uint16(0), []byte{1, 1, 3, 3, 14}, []byte{})
	f.Add(uint32(5), uint32(0), uint8(wire.TCPFlagFIN|wire.TCPFlagACK), uint16(7), []byte{8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, []byte("x"))
	f.Fuzz(func(t *testing.T, dseq, dack uint32, flags uint8, wnd uint16, opts, payload []byte) {
		sc := dialScript(t, Config{}, nil, 65535)
		if len(opts) > 40 {
			opts = opts[:40]
		}
		for len(opts)%4 != 0 {
			opts = append(opts, 0)
		}
		b := make([]byte, 20+len(opts)+len(payload))
		(&wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt + dseq, Ack: sc.sndNxt + dack,
			Flags: flags, Window: wnd}).Encode(b)
		b[12] = byte((20+len(opts))/4) << 4
		copy(b[20:], opts)
		copy(b[20+len(opts):], payload)
		wire.SetTCPChecksum(b, scriptRemote, scriptLocal)
		sc.p.HandlePacket(scriptRemote, scriptLocal, b)
		// To a closed port, and to a listener.
		binary.BigEndian.PutUint16(b[2:], 9)
		wire.SetTCPChecksum(b, scriptRemote, scriptLocal)
		sc.p.HandlePacket(scriptRemote, scriptLocal, b)
		sc.clk.Advance(time.Minute)
		sc.c.Close()
		sc.clk.Advance(10 * time.Minute)
	})
}

func TestScriptOutOfWindowAckRateLimit(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	old := func(payload []byte) {
		sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt - 1000, Ack: sc.sndNxt,
			Flags: wire.TCPFlagACK, Window: 100}, payload)
	}
	dup := want{Flags: is(wire.TCPFlagACK), Seq: is(sc.sndNxt), Ack: is(sc.rcvNxt), Len: is(0)}
	old(nil)
	sc.expect(dup)
	old(nil)
	sc.none() // within 500 ms: no second duplicate ACK
	old([]byte("data"))
	sc.expect(dup) // old data is always answered
	sc.clk.Advance(500 * time.Millisecond)
	old(nil)
	sc.expect(dup)
}

// injectBatched hands the stack a segment from the remote as part of a link batch.
func (sc *scriptConn) injectBatched(f wire.TCPFields, payload []byte) {
	sc.t.Helper()
	sc.p.HandleBatched(scriptRemote, scriptLocal, encodeSeg(f, payload), false)
}

func TestScriptBatchedACKs(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.c.Write(make([]byte, 40*1460))
	var segs []wire.TCP
	for i := 0; i < 10; i++ { // initial window: 10 segments (RFC 6928)
		segs = append(segs, sc.next())
	}
	sc.none()
	// Two ACKs in one batch: nothing goes out until the batch ends...
	for _, k := range []int{2, 4} {
		sc.injectBatched(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt,
			Ack: segs[k].Seq(), Flags: wire.TCPFlagACK, Window: 65535}, nil)
	}
	sc.none()
	// ...then what both allow goes at once: 4 segments left the network and slow start
	// added 4, so 8 new ones, in sequence.
	sc.p.EndBatch()
	next := segs[9].Seq() + 1460
	for i := 0; i < 8; i++ {
		sc.expect(want{Seq: is(next), Len: is(1460)}) // segment i after the batch
		next += 1460
	}
	sc.none()
	// An ACK the segment calls for at once is not held for the batch: out-of-order data
	// gets its duplicate ACK immediately (RFC 5681 §4.2).
	sc.injectBatched(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt + 100,
		Ack: segs[4].Seq(), Flags: wire.TCPFlagACK, Window: 65535}, make([]byte, 100))
	sc.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(sc.rcvNxt), Len: is(0)}) // duplicate ACK
	sc.p.EndBatch()
	sc.none()
}

// TestScriptLingerPositive: with SO_LINGER set to a positive time, Close blocks until the
// peer has acknowledged the data and the FIN (Linux's tcp_close), or the time passes;
// then the connection goes on closing in the background, without a RST.
func TestScriptLingerPositive(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.c.SetLinger(2)
	sc.c.Write([]byte("data"))
	d := sc.next()
	closed := make(chan error, 1)
	go func() { closed <- sc.c.Close() }()
	sc.expect(want{Flags: is(wire.TCPFlagFIN | wire.TCPFlagACK), Seq: is(d.Seq() + 4)})
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the FIN was acknowledged", err)
	case <-time.After(50 * time.Millisecond):
	}
	sc.sndNxt = d.Seq() + 4 + 1
	sc.send(wire.TCPFlagACK, nil)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close still blocked after the FIN was acknowledged")
	}
	if st := sc.c.State(); st != StateFinWait2 {
		t.Fatalf("state %v, want FIN-WAIT-2", st)
	}

	// The peer never acknowledges: Close returns once the linger time has passed.
	sc2 := dialScript(t, Config{}, nil, 65535)
	sc2.c.SetLinger(2)
	sc2.c.Write([]byte("data"))
	sc2.next()
	closed2 := make(chan error, 1)
	go func() { closed2 <- sc2.c.Close() }()
	sc2.expect(want{Flags: is(wire.TCPFlagFIN | wire.TCPFlagACK)})
	sc2.clk.Advance(1 * time.Second)
	select {
	case <-closed2:
		t.Fatal("Close returned before the linger time")
	case <-time.After(50 * time.Millisecond):
	}
	sc2.clk.Advance(1 * time.Second)
	select {
	case <-closed2:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still blocked after the linger time")
	}
	if st := sc2.c.State(); st != StateFinWait1 {
		t.Fatalf("state %v, want FIN-WAIT-1 (still closing, no RST)", st)
	}
}

// TestScriptSynTimeoutRTO: after a handshake whose SYN had to be retransmitted (so no RTT
// sample, Karn's rule), the first data is retransmitted after 3 s (RFC 6298 §5.7), not
// after the 1 s initial RTO.
func TestScriptSynTimeoutRTO(t *testing.T) {
	s := newScript(t, Config{})
	ch := s.dialAsync()
	s.next()
	s.waitTimer()
	s.clk.Advance(time.Second)
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN)})
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535, Options: &wire.TCPOptions{HasMSS: true, MSS: 1460}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK)})
	c := <-ch
	if rto := c.Info().RTO; rto != 3*time.Second {
		t.Fatalf("RTO after a retransmitted SYN: %v, want 3s", rto)
	}
	c.Write([]byte("x"))
	d := s.next()
	s.clk.Advance(2 * time.Second)
	s.none()
	s.clk.Advance(time.Second)
	s.expect(want{Seq: is(d.Seq()), Len: is(1)}) // the retransmission
}

// waitTimer waits until the connection being dialled has armed its retransmission timer:
// Dial sends the SYN before it arms the timer, on its own goroutine, so a test that
// advances the clock as soon as the SYN is out could advance it past nothing. It wakes on
// the script clock's arming signal, not on a wall-clock poll.
func (s *script) waitTimer() {
	s.t.Helper()
	armed := func() bool {
		for _, si := range s.p.Sockets() {
			if si.State != StateListen && si.Timer == "on" {
				return true
			}
		}
		return false
	}
	deadline := time.After(5 * time.Second)
	for !armed() {
		select {
		case <-s.armed:
		case <-deadline:
			if !armed() {
				s.t.Fatal("script: no retransmission timer armed")
			}
		}
	}
}
