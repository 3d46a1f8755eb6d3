package tcp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// ecnNet is the script's network with the ECN hook (transport.ECNNetwork): every segment
// the stack sends is recorded in marks with its ECN codepoint, in the order of s.out.
type ecnNet struct {
	*script
	marks chan transport.ECN
}

func (n *ecnNet) Output(src, dst netip.Addr, proto uint8, pkt []byte) error {
	return n.OutputECN(src, dst, proto, pkt, transport.NotECT)
}

func (n *ecnNet) OutputECN(src, dst netip.Addr, proto uint8, pkt []byte, ecn transport.ECN) error {
	n.marks <- ecn
	return n.script.Output(src, dst, proto, pkt)
}

func (n *ecnNet) OutputGSOECN(src, dst netip.Addr, pkt []byte, mss int, ecn transport.ECN) error {
	panic("no GSO in scripts")
}

// newECNScript is newScript over ecnNet.
func newECNScript(t *testing.T, cfg Config) (*script, *ecnNet) {
	s := newScript(t, cfg)
	n := &ecnNet{script: s, marks: make(chan transport.ECN, 1024)}
	if cfg.DelayedACK == 0 {
		cfg.DelayedACK = -1
	}
	s.p = New(n, cfg)
	return s, n
}

// expectECN is expect, also checking the segment's ECN codepoint.
func (n *ecnNet) expectECN(w want, ecn transport.ECN) wire.TCP {
	n.t.Helper()
	h := n.expect(w)
	if got := <-n.marks; got != ecn {
		n.t.Fatalf("segment %s sent with ECN codepoint %d, want %d", fmtSeg(h), got, ecn)
	}
	return h
}

// injectECN hands the stack a segment that arrived with the IP ECN field ecn, as the
// network layer does (transport.ECNHandler), and ends the batch.
func (n *ecnNet) injectECN(f wire.TCPFields, payload []byte, ecn transport.ECN) {
	n.t.Helper()
	n.p.HandleBatchedECN(scriptRemote, scriptLocal, encodeSeg(f, payload), false, ecn)
	n.p.EndBatch()
}

const ecnSetup = wire.TCPFlagECE | wire.TCPFlagCWR

// ecnDial opens an ECN connection from the stack (tcp_ecn=1): the SYN carries ECE and
// CWR, the SYN-ACK ECE.
func ecnDial(t *testing.T, cfg Config) (*scriptConn, *ecnNet) {
	s, n := newECNScript(t, cfg)
	ch := s.dialAsync()
	syn := n.expectECN(want{Flags: is(wire.TCPFlagSYN | ecnSetup)}, transport.NotECT)
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK | wire.TCPFlagECE, Window: 65535,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1000}}, nil)
	n.expectECN(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1), Len: is(0)}, transport.NotECT)
	c := <-ch
	if !c.Info().ECN {
		t.Fatal("ECN not negotiated")
	}
	return &scriptConn{script: s, c: c, lport: syn.SrcPort(), rport: 80, iss: syn.Seq(),
		rcvNxt: remoteISS + 1, sndNxt: syn.Seq() + 1, remoteWnd: 65535}, n
}

// With tcp_ecn=1 an active open requests ECN (ECE and CWR on the SYN, RFC 3168 §6.1.1),
// and once the SYN-ACK agrees (ECE) new data goes out ECT(0): ECT0, not ECT1
// (tcp/ecn/ecn-uses-ect0.pkt: "> SEW 0:0(0)", "< SE. 0:0(0) ack 1", then
// "> [ect0] P. 1:1001(1000) ack 1"). Pure ACKs and retransmissions are not-ECT
// (§6.1.4, §6.1.5).
func TestLinuxECNUsesECT0(t *testing.T) {
	sc, n := ecnDial(t, Config{ECN: ECNRequest})
	go sc.c.Write(make([]byte, 1000))
	n.expectECN(want{Flags: is(wire.TCPFlagACK), Seq: is(sc.iss + 1), Len: is(1000)}, transport.ECT0)
	sc.waitTimer() // the writer sends before it arms the timer
	sc.clk.Advance(3 * time.Second)
	n.expectECN(want{Flags: is(wire.TCPFlagACK), Seq: is(sc.iss + 1), Len: is(1000)}, transport.NotECT)
}

// The default (tcp_ecn=2, ECNAccept) does not request ECN, and a SYN-ACK's ECE then means
// nothing: data stays not-ECT. A retransmitted ECN-setup SYN goes without ECE and CWR
// (RFC 3168 §6.1.1.1, Linux's tcp_ecn_fallback).
func TestLinuxECNNotRequested(t *testing.T) {
	s, n := newECNScript(t, Config{})
	ch := s.dialAsync()
	syn := n.expectECN(want{Flags: is(wire.TCPFlagSYN)}, transport.NotECT)
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK | wire.TCPFlagECE, Window: 65535}, nil)
	n.expectECN(want{Flags: is(wire.TCPFlagACK)}, transport.NotECT)
	c := <-ch
	if c.Info().ECN {
		t.Fatal("ECN negotiated without being requested")
	}
	go c.Write([]byte("x"))
	n.expectECN(want{Flags: is(wire.TCPFlagACK), Len: is(1)}, transport.NotECT)

	s2, n2 := newECNScript(t, Config{ECN: ECNRequest})
	s2.dialAsync()
	n2.expectECN(want{Flags: is(wire.TCPFlagSYN | ecnSetup)}, transport.NotECT)
	s2.waitTimer() // Dial sends the SYN before it arms the timer
	s2.clk.Advance(time.Second)
	n2.expectECN(want{Flags: is(wire.TCPFlagSYN)}, transport.NotECT)
}

// A passive open accepts ECN when tcp_ecn is 1 or 2 and the SYN carries ECE and CWR and
// is not ECT itself (tcp/fastopen/server/pure-syn-data.pkt: with tcp_ecn=0 "< SEW" is
// answered "> S.", with tcp_ecn=2 "> SE."); SetECN changes the mode for later handshakes.
func TestLinuxECNPassive(t *testing.T) {
	s, n := newECNScript(t, Config{ECN: -1})
	s.listen(80, 8)
	syn := func(port uint16, ecn transport.ECN) {
		n.injectECN(wire.TCPFields{SrcPort: port, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN | ecnSetup, Window: 32792,
			Options: &wire.TCPOptions{HasMSS: true, MSS: 1460}}, nil, ecn)
	}
	syn(4000, transport.NotECT)
	n.expectECN(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), DstPort: is[uint16](4000)}, transport.NotECT)
	s.p.SetECN(ECNAccept)
	syn(4001, transport.NotECT)
	n.expectECN(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK | wire.TCPFlagECE), DstPort: is[uint16](4001)}, transport.NotECT)
	syn(4002, transport.ECT0) // an ECT SYN: remarked on the way, no ECN
	n.expectECN(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), DstPort: is[uint16](4002)}, transport.NotECT)
	n.injectECN(wire.TCPFields{SrcPort: 4003, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN | wire.TCPFlagECE, Window: 32792}, nil, transport.NotECT)
	n.expectECN(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), DstPort: is[uint16](4003)}, transport.NotECT)
}

// The data receiver echoes a CE mark with ECE on every segment until a segment with CWR
// arrives, and acknowledges the CE-marked segment at once (RFC 3168 §6.1.3).
func TestLinuxECNEchoUntilCWR(t *testing.T) {
	sc, n := ecnDial(t, Config{ECN: ECNRequest, DelayedACK: 40 * time.Millisecond})
	data := func(flags uint8, ecn transport.ECN) {
		n.injectECN(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt, Ack: sc.sndNxt,
			Flags: wire.TCPFlagACK | flags, Window: sc.remoteWnd}, make([]byte, 100), ecn)
		sc.rcvNxt += 100
	}
	data(0, transport.CE)
	n.expectECN(want{Flags: is(wire.TCPFlagACK | wire.TCPFlagECE), Ack: is(sc.rcvNxt)}, transport.NotECT)
	data(0, transport.ECT0)
	sc.clk.Advance(40 * time.Millisecond)
	n.expectECN(want{Flags: is(wire.TCPFlagACK | wire.TCPFlagECE), Ack: is(sc.rcvNxt)}, transport.NotECT)
	data(wire.TCPFlagCWR, transport.ECT0)
	sc.clk.Advance(40 * time.Millisecond)
	n.expectECN(want{Flags: is(wire.TCPFlagACK), Ack: is(sc.rcvNxt)}, transport.NotECT)
}

// The data sender reduces cwnd on an ACK with ECE, as for a loss, sets CWR on its next new
// data segment, and does not reduce again for the ECEs of the same window (RFC 3168
// §6.1.2).
func TestLinuxECNReduceOncePerWindow(t *testing.T) {
	sc, n := ecnDial(t, Config{ECN: ECNRequest, CongestionControl: CCReno})
	go sc.c.Write(make([]byte, 40*1000))
	for i := range 10 { // the initial window, RFC 6928
		n.expectECN(want{Flags: is(wire.TCPFlagACK), Seq: is(sc.iss + 1 + uint32(i*1000)), Len: is(1000)}, transport.ECT0)
	}
	before := sc.c.Info().CWnd
	ack := func(to uint32) {
		n.injectECN(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt, Ack: to,
			Flags: wire.TCPFlagACK | wire.TCPFlagECE, Window: sc.remoteWnd}, nil, transport.NotECT)
	}
	ack(sc.iss + 1 + 2000)
	after := sc.c.Info().CWnd
	if after >= before || after < before/2-1000 {
		t.Fatalf("cwnd %d after ECE, was %d: want it about halved", after, before)
	}
	// The window left (8 segments outstanding, cwnd about 5) sends nothing yet; the next
	// ACKs free room, and the first new segment carries CWR.
	ack(sc.iss + 1 + 6000)
	first := n.expectECN(want{Seq: is(sc.iss + 1 + 10000), Len: is(1000)}, transport.ECT0)
	if first.Flags()&wire.TCPFlagCWR == 0 {
		t.Fatalf("first new segment after the reduction %s: want CWR", fmtSeg(first))
	}
	for len(sc.out) > 0 {
		if h := n.expectECN(want{}, transport.ECT0); h.Flags()&wire.TCPFlagCWR != 0 {
			t.Fatalf("CWR again on %s", fmtSeg(h))
		}
	}
	if got := sc.c.Info().CWnd; got != after {
		t.Fatalf("cwnd %d after a second ECE of the same window, want %d (no second reduction, no growth)", got, after)
	}
}

// Over a network without the ECN hook, ECN is neither requested nor accepted.
func TestLinuxECNNeedsHook(t *testing.T) {
	s := newScript(t, Config{ECN: ECNRequest})
	if s.p.ECN() != 0 {
		t.Fatalf("ECN() = %d over a network that cannot mark packets", s.p.ECN())
	}
	c := s.p.Socket()
	go c.Connect(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{}, true)
	s.expect(want{Flags: is(wire.TCPFlagSYN)})
}
