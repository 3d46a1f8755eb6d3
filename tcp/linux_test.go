package tcp

import (
	"context"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"github.com/berthnet/berth/wire"
)

// Tests of behaviour berth shares with Linux where the RFCs leave a choice, each the
// packet expectation of one packetdrill script of the upstream suite (conformance/),
// named in the comment.

// PSH on the last segment of each burst of new data, not only on the one that empties the
// send queue (tcp/slow_start/slow-start-ack-per-1pkt.pkt, tcp/eor/no-coalesce-*.pkt: the
// initial window of a larger write goes out as "P. 1:10001(10000)").
func TestLinuxPSHBurstEnd(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	go sc.c.Write(make([]byte, 20*1460))
	for i := range 10 { // the initial window, RFC 6928
		sc.expect(want{Flags: is(wire.TCPFlagACK), PSH: is(i == 9), Seq: is(sc.iss + 1 + uint32(i*1460)), Len: is(1460)})
	}
	sc.none()
}

// A RST on a connection with timestamps carries them, TSecr echoing the peer's last TSval
// (tcp/ts_recent/reset_tsval.pkt: "> R. 1:1(0) ack 1001 <nop,nop,TS val 1200 ecr 201>").
func TestLinuxRSTTimestamps(t *testing.T) {
	ep := dialExt(t, Config{})
	ep.c.Abort()
	ep.expect(want{Flags: is(wire.TCPFlagRST | wire.TCPFlagACK), HasTS: is(true), TSEcr: is(ep.tsval)})
}

// linuxTestKey is tcp_fastopen_key=a1a1a1a1-b2b2b2b2-c3c3c3c3-d4d4d4d4 (the upstream
// suite's), as Linux stores it: each 32-bit word little-endian.
var linuxTestKey = [16]byte{0xa1, 0xa1, 0xa1, 0xa1, 0xb2, 0xb2, 0xb2, 0xb2, 0xc3, 0xc3, 0xc3, 0xc3, 0xd4, 0xd4, 0xd4, 0xd4}

// Fast Open cookies are Linux's for the same key, so that the suite's TFO_COOKIE values
// (run_all.py's -D TFO_COOKIE) hold: 3021b9d889017eeb for 192.0.2.1 to 192.168.0.1 and
// c1d1e9742a47a9bc for fd3d:fa7b:d17d::1 to fd3d:a0b:17d6::1.
func TestLinuxFastOpenCookie(t *testing.T) {
	p := &Protocol{cfg: Config{FastOpenKey: linuxTestKey}}
	for _, c := range []struct{ src, dst, want string }{
		{"192.0.2.1", "192.168.0.1", "3021b9d889017eeb"},
		{"fd3d:fa7b:d17d::1", "fd3d:a0b:17d6::1", "c1d1e9742a47a9bc"},
	} {
		got := p.fastOpenCookie(netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst))
		if hex.EncodeToString(got[:]) != c.want {
			t.Errorf("cookie %s -> %s: %x, want %s", c.src, c.dst, got, c.want)
		}
	}
}

// A SYN with data and a valid Fast Open cookie: the SYN-ACK acknowledges the data, and the
// connection is accepted at once with the data readable (RFC 7413 §4.2.2;
// tcp/fastopen/server/basic-rw.pkt: "< S 0:10(10) ... FOEXP TFO_COOKIE" then
// "> S. 0:0(0) ack 11").
func TestLinuxFastOpenServer(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenServer, FastOpenKey: linuxTestKey})
	l := s.listen(80, 8)
	l.SetFastOpen(8)
	cookie := s.p.fastOpenCookie(scriptRemote, scriptLocal)
	o := &wire.TCPOptions{HasMSS: true, MSS: 1460, FastOpen: wire.TCPOptExperimental, FastOpenLen: 8}
	copy(o.FastOpenCookie[:], cookie[:])
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000, Options: o}, []byte("0123456789"))
	s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), Ack: is[uint32](remoteISS + 11), Len: is(0)})
	done, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := l.Accept(done)
	if err != nil {
		t.Fatalf("accept before the handshake completes: %v", err)
	}
	buf := make([]byte, 32)
	if n, err := c.ReadNonblock(buf, false); err != nil || string(buf[:n]) != "0123456789" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	if !c.Info().SynData {
		t.Fatal("SynData not reported")
	}
	// A wrong cookie: the data is not taken, the right cookie comes back.
	o.FastOpenCookie[0] ^= 1
	s.inject(wire.TCPFields{SrcPort: 4001, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000, Options: o}, []byte("0123456789"))
	sa := s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1)})
	var got wire.TCPOptions
	if err := sa.ParseOptions(&got); err != nil || got.FastOpen != wire.TCPOptExperimental || [8]byte(got.FastOpenCookie[:8]) != cookie {
		t.Fatalf("SYN-ACK options %+v %v: want the cookie %x", got, err, cookie)
	}
}

// The Fast Open client: without a cookie the SYN asks for one and carries no data; the
// SYN-ACK's cookie is cached, and the next connection's SYN carries the cookie and the
// data (RFC 7413 §4.1; tcp/fastopen/client/nonblocking-sendto-over-mss.pkt).
func TestLinuxFastOpenClient(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
	remote := netip.AddrPortFrom(scriptRemote, 80)
	c := s.p.Socket()
	if n, err := c.ConnectData(context.Background(), netip.AddrPort{}, remote, DialOptions{}, []byte("hello"), false); n != 0 || err != nil {
		t.Fatalf("first ConnectData: %d %v, want 0 (a cookie request)", n, err)
	}
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN), Len: is(0)})
	var o wire.TCPOptions
	if err := syn.ParseOptions(&o); err != nil || o.FastOpen != wire.TCPOptFastOpen || o.FastOpenLen != 0 {
		t.Fatalf("SYN options %+v %v: want a cookie request", o, err)
	}
	cookie := &wire.TCPOptions{HasMSS: true, MSS: 1460, FastOpen: wire.TCPOptFastOpen, FastOpenLen: 4, FastOpenCookie: [16]byte{0xab, 0xcd, 0x12, 0x34}}
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535, Options: cookie}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1)})
	if !s.p.HasFastOpenCookie(scriptRemote) {
		t.Fatal("cookie not cached")
	}
	c2 := s.p.Socket()
	if n, err := c2.ConnectData(context.Background(), netip.AddrPort{}, remote, DialOptions{}, []byte("hello"), false); n != 5 || err != nil {
		t.Fatalf("second ConnectData: %d %v, want 5 bytes in the SYN", n, err)
	}
	syn2 := s.expect(want{Flags: is(wire.TCPFlagSYN), Payload: is("hello")})
	if err := syn2.ParseOptions(&o); err != nil || o.FastOpenLen != 4 || o.FastOpenCookie != cookie.FastOpenCookie {
		t.Fatalf("SYN options %+v %v: want the cached cookie", o, err)
	}
	c.Abort()
	c2.Abort()
}

// RTO = SRTT + max(4·RTTVAR, 200 ms), as Linux's (RFC 6298 §2.3 floors the sum instead):
// after one RTT sample of 20 ms it is 220 ms, not 200 ms (tcp/sack/*.pkt and
// tcp/user_timeout/*.pkt time retransmissions to Linux's).
func TestLinuxRTOFloor(t *testing.T) {
	s := newScript(t, Config{})
	ch := make(chan *Conn, 1)
	go func() {
		c, err := s.p.Dial(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{})
		if err != nil {
			t.Error(err)
		}
		ch <- c
	}()
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN)})
	s.clk.Advance(20 * time.Millisecond)
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535, Options: &wire.TCPOptions{HasMSS: true, MSS: 1460}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK)})
	c := <-ch
	if c == nil {
		t.FailNow()
	}
	if got := c.Info().RTO; got != 220*time.Millisecond {
		t.Fatalf("RTO %v after a 20 ms RTT sample, want 220ms", got)
	}
	c.Write([]byte("data"))
	first := s.expect(want{Payload: is("data")})
	s.clk.Advance(219 * time.Millisecond)
	s.none()
	s.clk.Advance(time.Millisecond)
	s.expect(want{Seq: is(first.Seq()), Payload: is("data")})
	c.Abort()
}

// TCP_MAXSEG on a listener caps the MSS its connections announce and send
// (tcp/mss/mss-setsockopt-tcp_maxseg-server.pkt: "> S. 0:0(0) ack 1 <mss 1100,...>").
func TestLinuxMaxSegListener(t *testing.T) {
	s := newScript(t, Config{})
	l := s.listen(80, 8)
	if err := l.SetMaxSeg(1100); err != nil {
		t.Fatal(err)
	}
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1300}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), MSS: is[uint16](1100)})
}

// shutdown(SHUT_RD) sends nothing; data that arrives after it is acknowledged and can still
// be read, then EOF (tcp/shutdown/shutdown-rd-wr-close.pkt: "read(4, ..., 1000) = 0",
// "< . 1:1001(1000)", "> . 1:1(0) ack 1001", "read(4, ..., 1000) = 1000").
func TestLinuxShutRD(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	if err := sc.c.CloseRead(); err != nil {
		t.Fatal(err)
	}
	sc.none() // no window update for the shutdown
	if n, err := sc.c.ReadNonblock(make([]byte, 10), false); n != 0 || err != nil {
		t.Fatalf("read after SHUT_RD: %d %v, want EOF", n, err)
	}
	sc.send(wire.TCPFlagACK, []byte("late data"))
	sc.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(sc.rcvNxt), Len: is(0)})
	buf := make([]byte, 32)
	if n, err := sc.c.Read(buf); string(buf[:n]) != "late data" || err != nil {
		t.Fatalf("read %q %v, want the late data", buf[:n], err)
	}
}

// A small read of a window the peer is far from filling sends no window update
// (tcp/ioctl/ioctl-siocinq-fin.pkt: after "read(4, ..., 1000) = 1000" the next segment is
// the ACK of the peer's FIN).
func TestLinuxNoSmallReadUpdate(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.send(wire.TCPFlagACK|wire.TCPFlagPSH, make([]byte, 1000))
	sc.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(sc.rcvNxt)})
	if n, err := sc.c.Read(make([]byte, 1000)); n != 1000 || err != nil {
		t.Fatal(n, err)
	}
	sc.none()
}

// TCP_CORK holds partial segments until it is removed, and then they go as one
// (tcp/nagle/sockopt_cork_nodelay.pkt: two writes of 40 bytes, then "> P. 1:81(80)").
func TestLinuxCork(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.c.SetCork(true)
	sc.c.Write(make([]byte, 40))
	sc.c.Write(make([]byte, 40))
	sc.none()
	sc.c.SetCork(false)
	sc.expect(want{Flags: is(wire.TCPFlagACK), PSH: is(true), Seq: is(sc.iss + 1), Len: is(80)})
	// MSG_MORE likewise, until a write without it.
	sc.c.WriteMore(make([]byte, 40), true)
	sc.none()
	sc.c.WriteMore(make([]byte, 40), false)
	sc.expect(want{Flags: is(wire.TCPFlagACK), PSH: is(true), Seq: is(sc.iss + 81), Len: is(80)})
}
