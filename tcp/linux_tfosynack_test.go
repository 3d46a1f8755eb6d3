package tcp

import (
	"context"
	"net/netip"
	"syscall"
	"testing"

	"github.com/berthnet/berth/wire"
)

// Fast Open client, as Linux's: what a SYN-ACK may carry besides the handshake, the
// experimental option's fallback, and SYN-data crossing a SYN
// (tcp/fastopen/client/synack-data.pkt, fallback-exp-opt.pkt, simultaneous-fast-open.pkt).

// synAck injects the server's SYN-ACK for syn, acknowledging acked bytes of its data,
// with flags added (FIN) and payload.
func synAck(s *script, syn wire.TCP, acked uint32, flags uint8, o *wire.TCPOptions, payload string) {
	if o == nil {
		o = &wire.TCPOptions{HasMSS: true, MSS: 1040, SACKPermitted: true, HasWindowScale: true, WindowScale: 6}
	}
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1 + acked,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK | flags, Window: 5840, Options: o}, []byte(payload))
}

// readAll reads what c holds without blocking ("" for nothing yet, or EOF).
func readAll(t *testing.T, c *Conn) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := c.ReadNonblock(buf, false)
	if err != nil && err != syscall.EAGAIN {
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n])
}

// The text of a SYN-ACK that acknowledged all of a Fast Open SYN's data is taken and
// acknowledged (RFC 9293 §3.10.7.3 processes the text in SYN-SENT; Linux's
// tcp_rcv_fastopen_synack), its FIN too (synack-data.pkt TEST1: "< S. 1000000:1001400(1400)
// ack 1001", "> . 1001:1001(0) ack 1401"; TEST2: "< SF." then CLOSE_WAIT, read 1400, read
// 0, "ack 1402"). When the SYN's data must go again, or the SYN was no Fast Open one, the
// text is dropped and only the SYN acknowledged.
func TestLinuxFastOpenSynAckText(t *testing.T) {
	t.Run("data", func(t *testing.T) {
		s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
		c, syn := fastOpenSYN(t, s, "hello")
		synAck(s, syn, 5, 0, nil, "reply")
		s.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(syn.Seq() + 6), Ack: is[uint32](remoteISS + 6), Len: is(0)})
		if got := readAll(t, c); got != "reply" {
			t.Fatalf("read %q, want the SYN-ACK's text", got)
		}
		c.Abort()
	})
	t.Run("data and FIN", func(t *testing.T) {
		s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
		c, syn := fastOpenSYN(t, s, "hello")
		synAck(s, syn, 5, wire.TCPFlagFIN, nil, "reply")
		s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 7), Len: is(0)})
		if st := c.State(); st != StateCloseWait {
			t.Fatalf("state %v, want CLOSE-WAIT", st)
		}
		if got := readAll(t, c); got != "reply" {
			t.Fatalf("read %q, want the SYN-ACK's text", got)
		}
		buf := make([]byte, 8)
		if n, err := c.ReadNonblock(buf, false); n != 0 || err != nil {
			t.Fatalf("read %d %v after the text, want EOF", n, err)
		}
		c.Abort()
	})
	t.Run("SYN data not acknowledged", func(t *testing.T) {
		s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
		c, syn := fastOpenSYN(t, s, "hello")
		synAck(s, syn, 0, 0, nil, "reply")
		// The SYN's data goes again, acknowledging the SYN alone: the text is dropped.
		s.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(syn.Seq() + 1), Ack: is[uint32](remoteISS + 1), Payload: is("hello")})
		if got := readAll(t, c); got != "" {
			t.Fatalf("read %q, want nothing", got)
		}
		c.Abort()
	})
	t.Run("no Fast Open", func(t *testing.T) {
		s := newScript(t, Config{NoTimestamps: true})
		ch := s.dialAsync()
		syn := s.expect(want{Flags: is(wire.TCPFlagSYN)})
		synAck(s, syn, 0, 0, nil, "reply")
		s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1), Len: is(0)})
		c := <-ch
		if got := readAll(t, c); got != "" {
			t.Fatalf("read %q, want nothing", got)
		}
		c.Abort()
	})
}

// A SYN+FIN+ACK is still dropped, unanswered and counted, outside SYN-SENT (issue 19's
// hardening): only there is it a SYN-ACK that also closes.
func TestLinuxSynFinAckOnlyInSynSent(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt, Ack: sc.sndNxt,
		Flags: wire.TCPFlagSYN | wire.TCPFlagFIN | wire.TCPFlagACK, Window: 1000}, nil)
	sc.none()
	sc.listen(81, 0)
	sc.inject(wire.TCPFields{SrcPort: 4000, DstPort: 81, Seq: remoteISS, Ack: 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagFIN | wire.TCPFlagACK, Window: 1000}, nil)
	sc.none()
	if got := sc.p.Stats.SynFinDrops.Load(); got != 2 {
		t.Fatalf("SynFinDrops %d, want 2", got)
	}
	if st := sc.c.State(); st != StateEstablished {
		t.Fatalf("state %v after SYN+FIN+ACK", st)
	}
}

// In SYN-SENT, an ACK whose TSecr echoes no TSval of our SYN (here from the future) is
// answered with a RST numbered from its ACK, and the connection waits on for a valid
// SYN-ACK (Linux's PAWSActiveRejected; synack-data.pkt TEST5: "ecr 9999", "> R
// 1001:1001(0)", then a SYN-ACK with "ecr 1" establishes it).
func TestLinuxSynSentBadTSEcr(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenClient})
	c, syn := fastOpenSYN(t, s, "hello")
	o := opts(t, syn)
	bad := &wire.TCPOptions{HasMSS: true, MSS: 1040, HasTimestamps: true, TSVal: 1000000, TSEcr: o.TSVal + 9999}
	synAck(s, syn, 5, 0, bad, "")
	s.expect(want{Flags: is(wire.TCPFlagRST), Seq: is(syn.Seq() + 6), Len: is(0)})
	if st := c.State(); st != StateSynSent {
		t.Fatalf("state %v after the bad SYN-ACK, want SYN-SENT", st)
	}
	good := &wire.TCPOptions{HasMSS: true, MSS: 1040, HasTimestamps: true, TSVal: 1000000, TSEcr: o.TSVal}
	synAck(s, syn, 5, 0, good, "abc")
	s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 4), TSEcr: is[uint32](1000000)})
	if st := c.State(); st != StateEstablished {
		t.Fatalf("state %v, want ESTABLISHED", st)
	}
	c.Abort()
}

// A SYN with data crossing our Fast Open SYN: SYN-RECEIVED, a SYN-ACK of our ISS
// acknowledging its SYN only; the peer's SYN-ACK then acknowledges our SYN's data, and
// its SYN, a duplicate, is acknowledged at once in a D-SACK block (RFC 2883 §4), as
// Linux's tcp_data_queue (simultaneous-fast-open.pkt: "> S. 0:0(0) ack 1235", "< S.
// 1234:1234(0) ack 1001", "> . 1001:1001(0) ack 1 <nop,nop,sack 0:1>").
func TestLinuxSimultaneousFastOpen(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
	c, syn := fastOpenSYN(t, s, "hello")
	peer := &wire.TCPOptions{HasMSS: true, MSS: 1040, SACKPermitted: true, HasWindowScale: true, WindowScale: 6,
		FastOpen: wire.TCPOptFastOpen, FastOpenLen: 4, FastOpenCookie: [16]byte{0x87, 0x65, 0x43, 0x21}}
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 14600, Options: peer}, []byte("abc"))
	s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), Seq: is(syn.Seq()), Ack: is[uint32](remoteISS + 1), Len: is(0)})
	synAck(s, syn, 5, 0, peer, "")
	s.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(syn.Seq() + 6), Ack: is[uint32](remoteISS + 1), Len: is(0),
		Opts: is(wire.TCPOptions{NumSACK: 1, SACK: [wire.MaxSACKBlocks]wire.SACKBlock{{Left: remoteISS, Right: remoteISS + 1}}})})
	if st := c.State(); st != StateEstablished {
		t.Fatalf("state %v, want ESTABLISHED", st)
	}
	s.none() // the SYN's data was acknowledged: nothing goes again
	c.Abort()
}

// foOption returns the Fast Open option of h: its kind (0 if none) and cookie length.
func foOption(t *testing.T, h wire.TCP) (kind, n uint8) {
	o := opts(t, h)
	return o.FastOpen, o.FastOpenLen
}

// A cookie request in RFC 7413's option that the server answers without any Fast Open
// option is tried once more in the experimental one (RFC 6994's form, kind 254 and magic
// 0xF989), which older servers know; unanswered too, requests go back to RFC 7413's for
// good. A cookie that came in the experimental option is sent in it. Linux's try_exp in
// tcp_metrics (fallback-exp-opt.pkt; "ip tcp_metrics flush" is FlushFastOpenCache).
func TestLinuxFastOpenExpFallback(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
	remote := netip.AddrPortFrom(scriptRemote, 80)
	noFO := &wire.TCPOptions{HasMSS: true, MSS: 1460, SACKPermitted: true, HasWindowScale: true, WindowScale: 6}
	// request opens a connection with data, expects a SYN without it carrying the option
	// kind, and answers with SYN-ACK options o.
	request := func(kind uint8, o *wire.TCPOptions) {
		t.Helper()
		c := s.p.Socket()
		if n, err := c.ConnectData(context.Background(), netip.AddrPort{}, remote, DialOptions{}, []byte("hello"), false); n != 0 || err != nil {
			t.Fatalf("ConnectData: %d %v, want a cookie request", n, err)
		}
		syn := s.expect(want{Flags: is(wire.TCPFlagSYN), Len: is(0)})
		if k, n := foOption(t, syn); k != kind || n != 0 {
			t.Fatalf("SYN with option kind %d (cookie of %d bytes), want a request in kind %d", k, n, kind)
		}
		synAck(s, syn, 0, 0, o, "")
		s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1)})
		c.Abort()
		s.expect(want{Flags: is(wire.TCPFlagRST | wire.TCPFlagACK)})
	}
	request(wire.TCPOptFastOpen, noFO)
	request(wire.TCPOptExperimental, noFO)
	request(wire.TCPOptFastOpen, noFO)
	request(wire.TCPOptFastOpen, noFO)

	s.p.FlushFastOpenCache()
	request(wire.TCPOptFastOpen, noFO)
	exp := &wire.TCPOptions{HasMSS: true, MSS: 1460, HasWindowScale: true, WindowScale: 6,
		FastOpen: wire.TCPOptExperimental, FastOpenLen: 4, FastOpenCookie: [16]byte{0x12, 0x34, 0xab, 0xcd}}
	request(wire.TCPOptExperimental, exp)
	c := s.p.Socket()
	if n, err := c.ConnectData(context.Background(), netip.AddrPort{}, remote, DialOptions{}, []byte("hello"), false); n != 5 || err != nil {
		t.Fatalf("ConnectData: %d %v, want the data in the SYN", n, err)
	}
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN), Payload: is("hello")})
	if o := opts(t, syn); o.FastOpen != wire.TCPOptExperimental || o.FastOpenLen != 4 || o.FastOpenCookie != exp.FastOpenCookie {
		t.Fatalf("SYN's option kind %d, cookie %x: want the cached cookie in the experimental option", o.FastOpen, o.FastOpenCookie[:o.FastOpenLen])
	}
	c.Abort()
}

// SetTimestamps (tcp_timestamps written while the stack runs: synack-data.pkt turns
// them on midway) applies to the SYNs that follow.
func TestLinuxSetTimestamps(t *testing.T) {
	s := newScript(t, Config{NoTimestamps: true})
	connect := func(ts bool) {
		t.Helper()
		c := s.p.Socket()
		if err := c.Connect(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{}, false); err != nil {
			t.Fatal(err)
		}
		s.expect(want{Flags: is(wire.TCPFlagSYN), HasTS: is(ts)})
		c.Abort()
	}
	connect(false)
	s.p.SetTimestamps(true)
	if s.p.Config().NoTimestamps {
		t.Fatal("Config().NoTimestamps after SetTimestamps(true)")
	}
	connect(true)
}
