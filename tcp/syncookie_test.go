package tcp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/berthnet/berth/wire"
)

func TestSynCookieEncoding(t *testing.T) {
	s := newScript(t, Config{})
	p := s.p
	local := netip.MustParseAddrPort("192.0.2.1:80")
	remote := netip.MustParseAddrPort("198.51.100.7:40000")
	other := netip.MustParseAddrPort("198.51.100.7:40001")
	const sseq = 123456789
	for count := uint32(0); count < 3; count++ {
		for data := uint32(0); data < 4; data++ {
			for _, tsval := range []uint32{0, 0x12345678} {
				c := p.makeCookie(local, remote, sseq, 1000+count, data, tsval)
				// Valid in its own period and the next one (maxCookieAge = 2).
				for age := uint32(0); age < maxCookieAge; age++ {
					got, ok := p.checkCookie(local, remote, c, sseq, 1000+count+age, tsval)
					if !ok || got != data {
						t.Fatalf("count %d data %d age %d: got %d %v", count, data, age, got, ok)
					}
				}
				if _, ok := p.checkCookie(local, remote, c, sseq, 1000+count+maxCookieAge, tsval); ok {
					t.Fatalf("cookie accepted %d periods late", maxCookieAge)
				}
				// Another 4-tuple or another peer ISN does not decode to a small index
				// (except with probability 4/2^24).
				if d, ok := p.checkCookie(local, other, c, sseq, 1000+count, tsval); ok && d < 4 {
					t.Fatalf("cookie valid for another port")
				}
				// A peer ISN off by 1000 shifts the 24-bit data out of range (off by a
				// little it would only shift the MSS index down, as in Linux).
				if d, ok := p.checkCookie(local, remote, c, sseq+1000, 1000+count, tsval); ok && d < 4 {
					t.Fatalf("cookie valid for another ISN")
				}
				// Nor does an echo of another TSval (or none, or one where there was none).
				for _, other := range []uint32{tsval + 64, tsval ^ 0xffffffff} {
					if d, ok := p.checkCookie(local, remote, c, sseq, 1000+count, other); ok && d < 4 {
						t.Fatalf("cookie made with TSval %#x valid with TSecr %#x", tsval, other)
					}
				}
			}
		}
	}
	for _, tc := range []struct {
		mss  uint16
		want uint16
	}{{0, 536}, {536, 536}, {1299, 536}, {1300, 1300}, {1400, 1300}, {1440, 1440}, {1460, 1460}, {9000, 1460}} {
		if got := msstab4[cookieMSSIndex(&msstab4, tc.mss)]; got != tc.want {
			t.Errorf("IPv4 MSS %d: cookie carries %d, want %d", tc.mss, got, tc.want)
		}
	}
	if got := msstab6[cookieMSSIndex(&msstab6, 1440)]; got != 1440 {
		t.Errorf("IPv6 MSS 1440: %d", got)
	}
	// The timestamp encoding (Linux's cookie_init_timestamp / cookie_timestamp_decode).
	for _, tc := range []struct {
		ws        uint8
		hasWS     bool
		sack, ecn bool
	}{{7, true, true, false}, {0, true, false, true}, {14, true, true, true}, {0, false, true, false}, {0, false, false, false}} {
		for _, now := range []uint32{0, 1, 63, 64, 1_000_000_007, 0xffffffff} {
			ts := encodeCookieTS(now, tc.ws, tc.hasWS, tc.sack, tc.ecn)
			if seqGT(ts, now) || now-ts >= 2*64 {
				t.Fatalf("TSval %d for clock %d", ts, now)
			}
			ws, hasWS, sack, ecn, ok := decodeCookieTS(ts, now)
			if !ok || hasWS != tc.hasWS || (hasWS && ws != tc.ws) || sack != tc.sack || ecn != tc.ecn {
				t.Fatalf("%+v at %d: decoded ws=%d/%v sack=%v ecn=%v ok=%v", tc, now, ws, hasWS, sack, ecn, ok)
			}
		}
	}
	if ws, hasWS, _, _, ok := decodeCookieTS(1024|14, 2000); !ok || !hasWS || ws != 14 {
		t.Fatal("wscale 14 (RFC 7323 §2.3's limit) not decoded")
	}
	if _, _, _, _, ok := decodeCookieTS(1024, 500); ok {
		t.Fatal("TSecr from the future accepted")
	}
	for _, v := range []int{0, 1, 2} {
		if got := SynCookiesSysctl(v).Sysctl(); got != v {
			t.Fatalf("sysctl %d -> %d", v, got)
		}
	}
	if (Config{}).SynCookies.Sysctl() != 1 {
		t.Fatal("default is not tcp_syncookies=1")
	}
}

// cookieSyn sends a SYN from port with the given MSS and returns the SYN-ACK.
func cookieSyn(s *script, port, mss uint16) wire.TCP {
	s.t.Helper()
	s.inject(wire.TCPFields{SrcPort: port, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000,
		Options: &wire.TCPOptions{HasMSS: true, MSS: mss, HasWindowScale: true, WindowScale: 7, SACKPermitted: true}}, nil)
	return s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1), DstPort: is(port)})
}

func TestScriptSynCookieOnOverflow(t *testing.T) {
	s := newScript(t, Config{})
	l := s.listen(80, 1)
	// The first SYN takes the only SYN-queue place: an ordinary SYN-ACK with window scale.
	sa1 := cookieSyn(s, 4000, 1460)
	expectSeg(t, sa1, want{HasWS: is(true)})
	if n, _ := s.p.SynQueueLen(); n != 1 || s.p.Stats.SyncookiesSent.Load() != 0 {
		t.Fatalf("SYN queue %d, cookies %d", n, s.p.Stats.SyncookiesSent.Load())
	}
	// The second overflows the SYN queue: a cookie SYN-ACK, MSS only (no timestamps in
	// the SYN, so no window scale or SACK, as Linux), and no state.
	sa2 := cookieSyn(s, 4001, 1400)
	expectSeg(t, sa2, want{MSS: is[uint16](1460), HasWS: is(false), SACKOK: is(false), HasTS: is(false)})
	st := &s.p.Stats
	if st.SyncookiesSent.Load() != 1 || st.TCPReqQFullDoCookies.Load() != 1 || st.ListenDrops.Load() != 0 {
		t.Fatalf("sent %d doCookies %d drops %d", st.SyncookiesSent.Load(), st.TCPReqQFullDoCookies.Load(), st.ListenDrops.Load())
	}
	if n, peak := s.p.SynQueueLen(); n != 1 || peak != 1 {
		t.Fatalf("SYN queue %d peak %d", n, peak)
	}
	if n := s.p.NumSockets(); n != 2 { // the listener and the first half-open connection
		t.Fatalf("%d sockets", n)
	}
	// The cookie ACK, carrying data, creates the connection straight in the accept queue.
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS + 1, Ack: sa2.Seq() + 1, Flags: wire.TCPFlagACK, Window: 2000}, []byte("hello"))
	s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1 + 5)}) // the ACK of the cookie ACK's data
	if st.SyncookiesRecv.Load() != 1 || st.SyncookiesFailed.Load() != 0 {
		t.Fatalf("recv %d failed %d", st.SyncookiesRecv.Load(), st.SyncookiesFailed.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.RemoteAddr().Port() != 4001 || c.State() != StateEstablished {
		t.Fatalf("accepted %v in %v", c.RemoteAddr(), c.State())
	}
	buf := make([]byte, 10)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	// MSS 1400 is carried as the table's 1300; no window scale: the window is unscaled.
	if si := c.Info(); si.MSS != 1300 || si.SndWnd != 2000 {
		t.Fatalf("MSS %d send window %d", si.MSS, si.SndWnd)
	}
	// Data flows both ways with the recovered ISS.
	go c.Write([]byte("world"))
	d := s.next()
	for len(d.Payload()) == 0 { // a window update after the Read
		d = s.next()
	}
	expectSeg(t, d, want{Seq: is(sa2.Seq() + 1), Payload: is("world")})
	// The half-open first connection is unaffected and still completes.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa1.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	if c1, err := l.Accept(ctx); err != nil || c1.RemoteAddr().Port() != 4000 {
		t.Fatalf("first connection: %v", err)
	}
	if n, _ := s.p.SynQueueLen(); n != 0 {
		t.Fatalf("SYN queue %d after both completed", n)
	}
}

func TestScriptSynCookieInvalid(t *testing.T) {
	s := newScript(t, Config{SynCookies: SynCookiesAlways})
	l := s.listen(80, 0)
	st := &s.p.Stats
	// tcp_syncookies=2: even the first SYN gets a cookie, and no state.
	sa := cookieSyn(s, 4000, 1460)
	if st.SyncookiesSent.Load() != 1 || s.p.NumSockets() != 1 {
		t.Fatalf("cookies %d sockets %d", st.SyncookiesSent.Load(), s.p.NumSockets())
	}
	// A forged cookie: RST (RFC 9293 §3.10.7.2, as Linux), counted as failed.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 2, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST), Seq: is(sa.Seq() + 2)})
	if st.SyncookiesFailed.Load() != 1 {
		t.Fatalf("failed %d", st.SyncookiesFailed.Load())
	}
	// The right cookie from the wrong peer ISN fails too.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1001, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST)})
	if st.SyncookiesFailed.Load() != 2 || s.p.NumSockets() != 1 {
		t.Fatalf("failed %d sockets %d", st.SyncookiesFailed.Load(), s.p.NumSockets())
	}
	// Expired: two 64 s periods later the cookie is refused.
	s.clk.Advance(2 * cookiePeriod * time.Second)
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST)})
	if st.SyncookiesFailed.Load() != 3 || st.SyncookiesRecv.Load() != 0 {
		t.Fatalf("failed %d recv %d", st.SyncookiesFailed.Load(), st.SyncookiesRecv.Load())
	}
	// One period later it is still good (the peer's handshake was slow).
	sa = cookieSyn(s, 4001, 536)
	s.clk.Advance(cookiePeriod * time.Second)
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	s.none()
	c, err := l.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if si := c.Info(); si.MSS != 536 || st.SyncookiesRecv.Load() != 1 {
		t.Fatalf("MSS %d recv %d", si.MSS, st.SyncookiesRecv.Load())
	}
}

func TestScriptSynCookieNotRecent(t *testing.T) {
	// tcp_syncookies=1: an ACK to a listener that sent no cookie lately is not checked
	// as a cookie (Linux's tcp_synq_no_recent_overflow): RST, and no SyncookiesFailed.
	s := newScript(t, Config{})
	s.listen(80, 1)
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: 777, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST)})
	if s.p.Stats.SyncookiesFailed.Load() != 0 {
		t.Fatal("ACK checked as a cookie without an overflow")
	}
}

func TestScriptSynCookiesNever(t *testing.T) {
	s := newScript(t, Config{SynCookies: SynCookiesNever})
	l := s.listen(80, 1)
	sa := cookieSyn(s, 4000, 1460)
	// The SYN queue is full and cookies are off: drop and count.
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
	s.none()
	st := &s.p.Stats
	if st.TCPReqQFullDrop.Load() != 1 || st.ListenDrops.Load() != 1 || st.SyncookiesSent.Load() != 0 {
		t.Fatalf("reqQFullDrop %d drops %d cookies %d", st.TCPReqQFullDrop.Load(), st.ListenDrops.Load(), st.SyncookiesSent.Load())
	}
	// An ACK carrying what would be a valid cookie is not accepted: RST.
	cookie := s.p.makeCookie(netip.AddrPortFrom(scriptLocal, 80), netip.AddrPortFrom(scriptRemote, 4001), remoteISS, s.p.cookieCounter(), 3, 0)
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS + 1, Ack: cookie + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST)})
	// The queued connection still completes.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	if _, err := l.Accept(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestScriptMaxSynBacklog(t *testing.T) {
	// The per-stack cap (tcp_max_syn_backlog) counts half-open connections across
	// listeners, each of which has room in its own backlog.
	for _, mode := range []SynCookieMode{SynCookiesNever, SynCookiesOnOverflow} {
		s := newScript(t, Config{MaxSynBacklog: 3, SynCookies: mode})
		var ls []*Listener
		for _, port := range []uint16{80, 81} {
			l := s.listen(port, 100)
			ls = append(ls, l)
		}
		var sas []wire.TCP
		for i := 0; i < 4; i++ {
			s.inject(wire.TCPFields{SrcPort: uint16(4000 + i), DstPort: uint16(80 + i%2), Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
			if i < 3 {
				sas = append(sas, s.next())
			}
		}
		st := &s.p.Stats
		if mode == SynCookiesNever {
			s.none()
			if st.TCPReqQFullDrop.Load() != 1 || st.ListenDrops.Load() != 1 {
				t.Fatalf("never: reqQFullDrop %d drops %d", st.TCPReqQFullDrop.Load(), st.ListenDrops.Load())
			}
		} else {
			s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK)})
			if st.SyncookiesSent.Load() != 1 || st.TCPReqQFullDoCookies.Load() != 1 {
				t.Fatalf("cookies %d", st.SyncookiesSent.Load())
			}
		}
		if n, peak := s.p.SynQueueLen(); n != 3 || peak != 3 || s.p.NumSockets() != 5 {
			t.Fatalf("SYN queue %d peak %d sockets %d", n, peak, s.p.NumSockets())
		}
		// Completing one frees its place.
		s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sas[0].Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
		if _, err := ls[0].Accept(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.p.SynQueueLen(); n != 2 {
			t.Fatalf("SYN queue %d after accept", n)
		}
		// A half-open connection that times out frees its place too (SYN-ACK retries).
		s.clk.Advance(10 * time.Minute)
		for len(s.out) > 0 {
			<-s.out
		}
		if n, _ := s.p.SynQueueLen(); n != 0 {
			t.Fatalf("SYN queue %d after SYN-ACK retries ran out", n)
		}
		// Closing a listener releases its entries.
		s.inject(wire.TCPFields{SrcPort: 5000, DstPort: 81, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
		s.next()
		ls[1].Close()
		s.next() // RST to the aborted half-open connection
		if n, _ := s.p.SynQueueLen(); n != 0 {
			t.Fatalf("SYN queue %d after listener close", n)
		}
	}
}

func TestScriptSynCookieAcceptQueueFull(t *testing.T) {
	s := newScript(t, Config{SynCookies: SynCookiesAlways})
	l := s.listen(80, 1)
	sa1 := cookieSyn(s, 4000, 1460)
	sa2 := cookieSyn(s, 4001, 1460)
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa1.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	if n, _ := l.QueueLen(); n != 1 {
		t.Fatalf("accept queue %d", n)
	}
	// The accept queue is full: the second cookie ACK is dropped silently (the peer
	// retransmits), and new SYNs are dropped too (Linux: ListenOverflows).
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS + 1, Ack: sa2.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	s.inject(wire.TCPFields{SrcPort: 4002, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
	s.none()
	st := &s.p.Stats
	if st.ListenOverflows.Load() != 2 || st.ListenDrops.Load() != 2 || s.p.NumSockets() != 2 {
		t.Fatalf("overflows %d drops %d sockets %d", st.ListenOverflows.Load(), st.ListenDrops.Load(), s.p.NumSockets())
	}
	// Once accepted, the retransmitted cookie ACK gets its connection.
	if _, err := l.Accept(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS + 1, Ack: sa2.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	if c, err := l.Accept(context.Background()); err != nil || c.RemoteAddr().Port() != 4001 {
		t.Fatalf("accept after overflow: %v", err)
	}
}

func TestScriptSynCookieTimestamps(t *testing.T) {
	s := newScript(t, Config{SynCookies: SynCookiesAlways})
	l := s.listen(80, 0)
	st := &s.p.Stats
	// A SYN with timestamps: the cookie SYN-ACK offers window scale and SACK like an
	// ordinary one, and its TSval's low bits keep the peer's scale (7) and SACK.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1460, HasWindowScale: true, WindowScale: 7, SACKPermitted: true,
			HasTimestamps: true, TSVal: 1000}}, nil)
	sa := s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), TSEcr: is[uint32](1000), HasWS: is(true), SACKOK: is(true)})
	var o wire.TCPOptions
	if err := sa.ParseOptions(&o); err != nil || o.WindowScale != rcvWscaleFor(s.p.Config().ReceiveBuffer) {
		t.Fatalf("cookie SYN-ACK options %+v", o)
	}
	if o.TSVal&tsOptMask != 7|tsOptSACK || st.SyncookiesSent.Load() != 1 || s.p.NumSockets() != 1 {
		t.Fatalf("TSval %#x, cookies %d, sockets %d", o.TSVal, st.SyncookiesSent.Load(), s.p.NumSockets())
	}
	synackTS := o.TSVal
	// A TSecr we never sent (from the future) fails the cookie.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000,
		Options: &wire.TCPOptions{HasTimestamps: true, TSVal: 1001, TSEcr: synackTS + 1<<20}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST)})
	if st.SyncookiesFailed.Load() != 1 {
		t.Fatalf("failed %d", st.SyncookiesFailed.Load())
	}
	// The real ACK: the connection has window scale 7 (the window field is scaled), SACK
	// and timestamps.
	s.clk.Advance(50 * time.Millisecond)
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000,
		Options: &wire.TCPOptions{HasTimestamps: true, TSVal: 1050, TSEcr: synackTS}}, nil)
	s.none()
	c, err := l.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	si := c.Info()
	c.mu.Lock()
	tsOK, sackOK, sndWscale, rcvWscale, tsRecent := c.tsOK, c.sackOK, c.sndWscale, c.rcvWscale, c.tsRecent
	c.mu.Unlock()
	if !tsOK || !sackOK || sndWscale != 7 || rcvWscale != o.WindowScale || tsRecent != 1050 || si.SndWnd != 1000<<7 {
		t.Fatalf("ts %v sack %v wscale %d/%d tsRecent %d send window %d", tsOK, sackOK, sndWscale, rcvWscale, tsRecent, si.SndWnd)
	}
	// MSS 1460 less the timestamps option.
	if si.MSS != 1460-tsOptLen {
		t.Fatalf("MSS %d", si.MSS)
	}
	// Our data carries timestamps that continue the SYN-ACK's clock.
	go c.Write([]byte("hi"))
	d := s.expect(want{Payload: is("hi"), TSEcr: is[uint32](1050)})
	if err := d.ParseOptions(&o); err != nil || seqLT(o.TSVal, synackTS) || o.TSVal-synackTS > 200 {
		t.Fatalf("data %s options %+v (SYN-ACK TSval %d)", fmtSeg(d), o, synackTS)
	}
	// A SYN with timestamps but no window scale: none offered, and "none" (15) in TSval.
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1300, HasTimestamps: true, TSVal: 5}}, nil)
	sa = s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), HasWS: is(false), SACKOK: is(false)})
	if err := sa.ParseOptions(&o); err != nil || o.TSVal&tsOptMask != tsOptWscaleMask {
		t.Fatalf("cookie SYN-ACK options %+v", o)
	}
	// An ACK without timestamps does not echo the TSval the cookie covers: it fails (RFC
	// 7323 §3.2: timestamps negotiated in SYN and SYN-ACK are in every later segment).
	// Linux would complete it with MSS only.
	failed := st.SyncookiesFailed.Load()
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST)})
	if st.SyncookiesFailed.Load() != failed+1 || s.p.NumSockets() != 2 {
		t.Fatalf("failed %d (was %d), sockets %d", st.SyncookiesFailed.Load(), failed, s.p.NumSockets())
	}
	// With the echo it completes.
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 1000,
		Options: &wire.TCPOptions{HasTimestamps: true, TSVal: 6, TSEcr: o.TSVal}}, nil)
	c2, err := l.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c2.mu.Lock()
	defer c2.mu.Unlock()
	if !c2.tsOK || c2.sackOK || c2.sndWscale != 0 || c2.rcvWscale != 0 || c2.mss != 1300-tsOptLen {
		t.Fatalf("ts %v sack %v wscale %d/%d mss %d", c2.tsOK, c2.sackOK, c2.sndWscale, c2.rcvWscale, c2.mss)
	}
}

// TestScriptSynCookieStaleACK: an ACK of a cookie connection that is gone, arriving when
// both sides had sent as many bytes, reaches the listener with ack-1 and seq-1 moved by
// the same amount, which decodes as the connection's own cookie. With timestamps it
// echoes a later TSval than the SYN-ACK's, so it fails instead of opening a connection no
// peer owns (under load, a peer's TIME-WAIT answering a retransmitted FIN after our side
// closed did that: TestPairManyConnections found such connections left in ESTABLISHED).
func TestScriptSynCookieStaleACK(t *testing.T) {
	s := newScript(t, Config{SynCookies: SynCookiesAlways})
	l := s.listen(80, 0)
	st := &s.p.Stats
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1460, HasTimestamps: true, TSVal: 1000}}, nil)
	sa := s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), HasTS: is(true)})
	var o wire.TCPOptions
	if err := sa.ParseOptions(&o); err != nil {
		t.Fatalf("cookie SYN-ACK options %+v: %v", o, err)
	}
	s.clk.Advance(10 * time.Millisecond)
	// The cookie ACK carries 5 bytes; the connection answers with 5 bytes.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK | wire.TCPFlagPSH, Window: 1000,
		Options: &wire.TCPOptions{HasTimestamps: true, TSVal: 1010, TSEcr: o.TSVal}}, []byte("hello"))
	c, err := l.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.next() // the ACK of "hello"
	s.clk.Advance(10 * time.Millisecond)
	go c.Write([]byte("world"))
	d := s.expect(want{Seq: is(sa.Seq() + 1), Len: is(5)})
	if err := d.ParseOptions(&o); err != nil {
		t.Fatalf("data %s: %v", fmtSeg(d), err)
	}
	// The peer resets the connection: its 4-tuple is free.
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 6, Flags: wire.TCPFlagRST, Window: 0}, nil)
	if n := s.p.NumSockets(); n != 1 {
		t.Fatalf("%d sockets after RST, want the listener alone", n)
	}
	// A late ACK of the data: 5 past the peer's ISN+1 and 5 past our ISS+1.
	failed := st.SyncookiesFailed.Load()
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 6, Ack: sa.Seq() + 6, Flags: wire.TCPFlagACK, Window: 1000,
		Options: &wire.TCPOptions{HasTimestamps: true, TSVal: 1020, TSEcr: o.TSVal}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST)})
	if n := s.p.NumSockets(); n != 1 || st.SyncookiesFailed.Load() != failed+1 || st.SyncookiesRecv.Load() != 1 {
		t.Fatalf("sockets %d, cookies failed %d (was %d), received %d", n, st.SyncookiesFailed.Load(), failed, st.SyncookiesRecv.Load())
	}
}
