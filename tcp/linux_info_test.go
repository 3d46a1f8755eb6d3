package tcp

import (
	"testing"
	"time"

	"github.com/berthnet/berth/wire"
)

// Tests of the TCP_INFO statistics (info.go) and of the congestion-control choices made
// as Linux makes them (cwnd_limited.go, recovery.go's PRR), each the expectation of one
// packetdrill script of the upstream suite.

// The idle clocks start at the handshake; data resets the receive one
// (tcp/tcp_info/tcp-info-last_data_recv.pkt). Our SYN counts as one segment delivered
// (tcpi_delivered, tcp/fastopen/client/syn-data-timeout.pkt).
func TestLinuxInfoLastDataRecv(t *testing.T) {
	sc := dialScript(t, Config{}, &wire.TCPOptions{HasMSS: true, MSS: 1000}, 10000)
	sc.clk.Advance(time.Second)
	si := sc.c.Info()
	if si.LastDataRecv != time.Second || si.LastAckRecv != time.Second || si.LastDataSent != time.Second || si.Delivered != 1 {
		t.Fatalf("after 1 s idle: last data recv %v, ack recv %v, data sent %v, delivered %d; want 1s, 1s, 1s, 1",
			si.LastDataRecv, si.LastAckRecv, si.LastDataSent, si.Delivered)
	}
	sc.send(wire.TCPFlagACK, make([]byte, 1000))
	sc.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(sc.rcvNxt)})
	if si := sc.c.Info(); si.LastDataRecv != 0 || si.RcvMSS != 1000 {
		t.Fatalf("after data: last data recv %v, rcv mss %d; want 0, 1000", si.LastDataRecv, si.RcvMSS)
	}
}

// The receive-window-limited time runs while the peer's window holds queued data back,
// inside the busy time, which ends when everything is acknowledged
// (tcp/tcp_info/tcp-info-rwnd-limited.pkt).
func TestLinuxInfoRwndLimited(t *testing.T) {
	sc := dialScript(t, Config{}, &wire.TCPOptions{HasMSS: true, MSS: 1000}, 0)
	if _, err := sc.c.WriteNonblock(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	sc.clk.Advance(100 * time.Millisecond)
	if si := sc.c.Info(); si.RwndLimited != 100*time.Millisecond || si.BusyTime != 100*time.Millisecond {
		t.Fatalf("zero window for 100 ms: rwnd limited %v, busy %v", si.RwndLimited, si.BusyTime)
	}
	sc.remoteWnd = 2000
	sc.send(wire.TCPFlagACK, nil)
	sc.expect(want{Len: is(1000)})
	sc.clk.Advance(30 * time.Millisecond)
	sc.sndNxt += 1000
	sc.send(wire.TCPFlagACK, nil)
	sc.clk.Advance(time.Second) // idle: neither clock runs
	if si := sc.c.Info(); si.RwndLimited != 100*time.Millisecond || si.BusyTime != 130*time.Millisecond || si.SndbufLimited != 0 {
		t.Fatalf("after the ACK: rwnd limited %v, busy %v, sndbuf limited %v; want 100ms, 130ms, 0",
			si.RwndLimited, si.BusyTime, si.SndbufLimited)
	}
}

// In slow start cwnd grows while it is below twice the most that was in flight, so that
// a sender of exactly its initial window ends the round with twice it, although each
// ACK leaves less in flight (Linux's tcp_is_cwnd_limited;
// tcp/slow_start/slow-start-app-limited.pkt: ten segments, cwnd 10 → 20).
func TestLinuxSlowStartAppLimited(t *testing.T) {
	ep := dialExt(t, Config{})
	mss := ep.c.Info().MSS
	iw := ep.c.Info().CWnd / mss
	segs := sendSegs(ep, iw)
	ep.none()
	for i := 2; i <= iw; i += 2 {
		ep.clk.Advance(5 * time.Millisecond)
		ep.sndNxt = segs[i-1].Seq() + uint32(len(segs[i-1].Payload()))
		ep.sendTS(wire.TCPFlagACK, nil)
		if got := ep.c.Info().CWnd / mss; got != iw+i {
			t.Fatalf("after the ACK of %d of %d segments: cwnd %d segments, want %d", i, iw, got, iw+i)
		}
	}
}

// Recovery begins with one retransmission for an ACK that only SACKed, and each later
// SACK lets as many go as it delivered (PRR without its extra segment when SND.UNA does
// not move; Linux's tcp_cwnd_reduction). RACK declares lost all segments sent before the
// SACKed one (tcpi_lost 6), and a SACK below the highest is reordering of 6 segments
// (tcp/sack/sack-shift-sacked-2-6-8-3-9-nofack.pkt).
func TestLinuxPRRSACKOnly(t *testing.T) {
	ep := dialExt(t, Config{})
	for range 20 {
		warm(ep, 100*time.Millisecond) // SRTT ≈ 100 ms: no probe timeout before the SACKs
	}
	segs := sendSegs(ep, 10)
	mss := ep.c.Info().MSS
	ep.clk.Advance(100 * time.Millisecond)
	ep.sendTS(wire.TCPFlagACK, nil, blockOf(segs, 2, 3))
	ep.clk.Advance(time.Millisecond)
	ep.sendTS(wire.TCPFlagACK, nil, blockOf(segs, 6, 7), blockOf(segs, 2, 3))
	ep.clk.Advance(time.Millisecond)
	ep.sendTS(wire.TCPFlagACK, nil, blockOf(segs, 8, 9), blockOf(segs, 6, 7), blockOf(segs, 2, 3))
	ep.expect(want{Seq: is(segs[0].Seq())})
	ep.none()
	if si := ep.c.Info(); si.CAState != CARecovery || si.Lost != 6*mss {
		t.Fatalf("in recovery: ca state %d, lost %d bytes; want %d, %d", si.CAState, si.Lost, CARecovery, 6*mss)
	}
	ep.clk.Advance(7 * time.Millisecond)
	ep.sendTS(wire.TCPFlagACK, nil, blockOf(segs, 2, 4), blockOf(segs, 8, 9), blockOf(segs, 6, 7))
	ep.expect(want{Seq: is(segs[1].Seq())})
	ep.none()
	if si := ep.c.Info(); si.Lost != 5*mss || si.ReorderingSegs != 6 {
		t.Fatalf("after the SACK of 3: lost %d bytes, reordering %d; want %d, 6", si.Lost, si.ReorderingSegs, 5*mss)
	}
}
