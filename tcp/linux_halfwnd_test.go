package tcp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/berthnet/berth/wire"
)

// gsoDial opens a connection through a GSO link (gsoNet) to a peer rtt away, without
// timestamps (MSS 1460) and with a window of wnd: the handshake's RTT sets the first
// pacing rate, which sizes the super-segments (autosize.go).
func gsoDial(t *testing.T, rtt time.Duration, wnd uint16) (*gsoNet, *Conn, wire.TCP) {
	t.Helper()
	s := newScript(t, Config{})
	g := &gsoNet{script: s, max: 65535 - 20, gso: make(chan gsoPkt, 64)}
	s.p = New(g, Config{DelayedACK: -1, NoTimestamps: true})
	ch := s.dialAsync()
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN)})
	s.clk.Advance(rtt)
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: wnd, Options: &wire.TCPOptions{HasMSS: true, MSS: 1460,
			SACKPermitted: true, HasWindowScale: true, WindowScale: 6}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1)})
	c := <-ch
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { c.Abort() })
	return g, c, syn
}

// nextGSO returns the next super-segment the connection handed the GSO link.
func (g *gsoNet) nextGSO(t *testing.T) wire.TCP {
	t.Helper()
	select {
	case p := <-g.gso:
		return p.seg
	case <-time.After(5 * time.Second):
		t.Fatal("no super-segment")
		return nil
	}
}

// TSO autosizing as Linux's tcp_tso_autosize: a super-segment carries a millisecond of
// the pacing rate (200 % of cwnd/SRTT in slow start), at least two segments, each with
// PSH; on a short path (RTT under 512 µs) the whole 64 KB. The SYN-ACK's 20 ms RTT with
// cwnd 10 gives 1.4 KB a millisecond, so two segments a super-segment, even with a window
// of 65535 (tcp/fastopen/client/syn-data-only-syn-acked.pkt: "> P. 1421:4341(2920)",
// "> P. 4341:6001(1660)" after a SYN-ACK of "win 65535"; syn-data-partial-or-over-ack.pkt:
// "> P. 1421:3421(2000)", "> P. 3421:5421(2000)" with MSS 1000; cookie-less-sendto.pkt:
// "> P. 1421:4341(2920)", "> P. 4341:5001(660)" in a window of 5840). The last one, short,
// goes at once though data is in flight: Nagle in Minshall's variant holds a short segment
// only behind another short one.
func TestLinuxTSOAutosize(t *testing.T) {
	g, c, syn := gsoDial(t, 20*time.Millisecond, 65535)
	if _, err := c.Write(make([]byte, 4580)); err != nil {
		t.Fatal(err)
	}
	seq := syn.Seq() + 1
	for _, n := range []int{2920, 1660} {
		sp := g.nextGSO(t)
		if sp.Seq() != seq || len(sp.Payload()) != n || sp.Flags()&wire.TCPFlagPSH == 0 {
			t.Fatalf("super-segment %s, want seq %d, %d bytes, PSH", fmtSeg(sp), seq, n)
		}
		seq += uint32(n)
	}
	g.none()

	// A LAN peer: the minimum RTT's share of 64 KB (tcp_tso_rtt_log) lifts the limit.
	g, c, _ = gsoDial(t, 100*time.Microsecond, 65535)
	if _, err := c.Write(make([]byte, 10*1460)); err != nil {
		t.Fatal(err)
	}
	if sp := g.nextGSO(t); len(sp.Payload()) != 10*1460 {
		t.Fatalf("super-segment %s on a 100 µs path, want the initial window whole", fmtSeg(sp))
	}
}

// Nagle as Linux's tcp_nagle_check (Minshall's variant): a short segment waits only while
// an earlier short segment is unacknowledged, not whenever anything is in flight.
func TestLinuxMinshallNagle(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.c.SetNoDelay(false)
	mss := sc.c.Info().MSS
	sc.c.Write(make([]byte, mss))
	sc.expect(want{Len: is(mss)})
	sc.c.Write(make([]byte, 100))
	sc.expect(want{Len: is(100)}) // behind a full segment: goes
	sc.c.Write(make([]byte, 100))
	sc.none() // behind the short one
	sc.sndNxt += uint32(mss + 100)
	sc.send(wire.TCPFlagACK, nil)
	sc.expect(want{Seq: is(sc.sndNxt), Len: is(100)})
}

// A SYN-ACK that acknowledges part of the SYN's data: the rest goes again at once and
// whole, a retransmission that Nagle does not hold and that counts in tcpi_retrans, as
// Linux's tcp_rcv_fastopen_synack (tcp/fastopen/client/syn-data-partial-or-over-ack.pkt:
// "< S. 9999:9999(0) ack 101 win 65535 <mss 1000,...>", "> P. 101:1421(1320)" at once,
// "assert tcpi_retrans == 2"). The SYN's data stays a segment of its own, and is pushed
// when sent again (syn-data-only-syn-acked.pkt: "> P. 1:1421(1420)" after a SACK of the
// data written after it).
func TestLinuxFastOpenSynDataResend(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
	data := string(make([]byte, 1420))
	c, syn := fastOpenSYN(t, s, data)
	c.SetNoDelay(false)
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 101,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535, Options: &wire.TCPOptions{HasMSS: true, MSS: 1000,
			SACKPermitted: true, HasWindowScale: true, WindowScale: 6}}, nil)
	s.expect(want{Seq: is(syn.Seq() + 101), Len: is(1000), PSH: is(false)})
	s.expect(want{Seq: is(syn.Seq() + 1101), Len: is(320), PSH: is(true)})
	if si := c.Info(); si.RetransOut != 1320 {
		t.Fatalf("RetransOut %d, want the 1320 bytes sent again", si.RetransOut)
	}
	// Data written now goes after it, in segments of its own; a SACK of all of that makes
	// the SYN's data lost, and it goes again, its tail pushed.
	if _, err := c.Write(make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	for i := uint32(0); i < 3; i++ {
		s.expect(want{Seq: is(syn.Seq() + 1421 + 1000*i), Len: is(1000), PSH: is(i == 2)})
	}
	o := &wire.TCPOptions{NumSACK: 1}
	o.SACK[0] = wire.SACKBlock{Left: syn.Seq() + 1421, Right: syn.Seq() + 4421}
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS + 1, Ack: syn.Seq() + 101,
		Flags: wire.TCPFlagACK, Window: 1000, Options: o}, nil)
	s.expect(want{Seq: is(syn.Seq() + 101), Len: is(1000), PSH: is(false)})
	s.expect(want{Seq: is(syn.Seq() + 1101), Len: is(320), PSH: is(true)})
}

// TCP_MAXSEG bounds the SYN's data as it bounds the MSS option (Linux's
// tcp_send_syn_data: the smaller of the cached MSS and the user's, less 40 bytes of
// options; tcp/fastopen/client/syn-data-mss.pkt: "setsockopt(6, SOL_TCP, TCP_MAXSEG,
// [1040], 4)", "sendto(6, ..., 2000, ...) = 1000", "> S 0:1000(1000) <mss 1040,...>").
func TestLinuxFastOpenMaxSegSynData(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
	s.p.mu.Lock()
	s.p.foCache = map[netip.Addr]foEntry{scriptRemote: {cookie: [16]byte{0xab, 0xcd, 0x12, 0x34}, n: 4, kind: wire.TCPOptFastOpen, mss: 1460}}
	s.p.mu.Unlock()
	c := s.p.Socket()
	if err := c.SetMaxSeg(1040); err != nil {
		t.Fatal(err)
	}
	n, err := c.ConnectData(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{}, make([]byte, 2000), false)
	if n != 1000 || err != nil {
		t.Fatalf("ConnectData: %d %v, want 1000 bytes in the SYN", n, err)
	}
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN), Len: is(1000)})
	if o := opts(t, syn); o.MSS != 1040 {
		t.Fatalf("SYN's MSS %d, want 1040", o.MSS)
	}
	c.Abort()
}

// tcp_timestamps and tcp_fastopen apply to each handshake as it starts, as Linux reads
// them (SetTimestamps, SetFastOpen; tcp/fastopen/client/syn-data-mss.pkt sets
// "tcp_timestamps=0" between connections, cookie-less-sendto.pkt "tcp_fastopen=1").
func TestLinuxPerHandshakeSysctls(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenClient | FastOpenClientNoCookie})
	remote := netip.AddrPortFrom(scriptRemote, 80)
	s.p.SetTimestamps(false)
	s.p.SetFastOpen(FastOpenClient)
	c := s.p.Socket()
	n, err := c.ConnectData(context.Background(), netip.AddrPort{}, remote, DialOptions{}, []byte("hello"), false)
	if n != 0 || err != nil {
		t.Fatalf("ConnectData: %d %v, want a cookie request without data", n, err)
	}
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN), Len: is(0)})
	if o := opts(t, syn); o.HasTimestamps || o.FastOpen == 0 {
		t.Fatalf("SYN options %+v: want a cookie request and no timestamps", o)
	}
	c.Abort()
}
