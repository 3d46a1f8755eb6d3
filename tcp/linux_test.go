package tcp

import (
	"context"
	"encoding/hex"
	"net/netip"
	"testing"

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
