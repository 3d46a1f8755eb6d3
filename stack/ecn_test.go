package stack

import (
	"net/netip"
	"testing"

	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// ecnSink is a transport.ECNHandler that records the ECN field of each delivery.
type ecnSink struct {
	sink
	ecns []transport.ECN
}

func (s *ecnSink) HandleBatched(src, dst netip.Addr, seg []byte, _ bool) bool {
	s.ecns = append(s.ecns, 255) // not the ECN path
	return false
}

func (s *ecnSink) HandleBatchedECN(src, dst netip.Addr, seg []byte, _ bool, ecn transport.ECN) bool {
	s.ecns = append(s.ecns, ecn)
	return false
}

func (s *ecnSink) EndBatch() {}

// The ECN field crosses the transport contract both ways (RFC 3168 §5): OutputECN and
// OutputGSOECN write it into IPv4's TOS byte and IPv6's traffic class, on fragments too
// (§5.3); a transport.ECNHandler gets it from the IP header of each packet.
func TestECNField(t *testing.T) {
	s, ifc, c, _ := newTestStack(t, Options{})
	pkt := make([]byte, wire.NetworkHeadroom+100)
	if err := s.OutputECN(us4, peer4, 200, pkt, transport.ECT0); err != nil {
		t.Fatal(err)
	}
	if err := s.OutputECN(us6, peer6, 200, pkt, transport.CE); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, wire.NetworkHeadroom+3000)
	if err := s.OutputECN(us4, peer4, 200, big, transport.ECT1); err != nil {
		t.Fatal(err)
	}
	out := c.take()
	if len(out) != 2+3 {
		t.Fatalf("%d packets, want 2 and 3 fragments", len(out))
	}
	if got := wire.IPv4(out[0]).TOS() & 3; got != uint8(transport.ECT0) {
		t.Errorf("IPv4 ECN field %d, want ECT(0)", got)
	}
	if got := wire.IPv6(out[1]).TrafficClass() & 3; got != uint8(transport.CE) {
		t.Errorf("IPv6 ECN field %d, want CE", got)
	}
	for i, f := range out[2:] {
		if got := wire.IPv4(f).TOS() & 3; got != uint8(transport.ECT1) {
			t.Errorf("fragment %d: ECN field %d, want ECT(1)", i, got)
		}
	}
	if err := s.Output(us4, peer4, 200, pkt); err != nil {
		t.Fatal(err)
	}
	if got := wire.IPv4(c.take()[0]).TOS(); got != 0 {
		t.Errorf("Output: TOS %#x, want 0", got)
	}

	es := &ecnSink{}
	s.RegisterTransport(202, es)
	p4 := make([]byte, 24)
	(&wire.IPv4Fields{TotalLen: 24, ID: 1, TTL: 64, Protocol: 202, Src: peer4, Dst: us4, TOS: 0xb8 | byte(transport.CE)}).Encode(p4) // DSCP EF and CE
	b6 := make([]byte, 44)
	(&wire.IPv6Fields{PayloadLen: 4, NextHeader: 202, HopLimit: 64, Src: peer6, Dst: us6, TrafficClass: byte(transport.ECT0)}).Encode(b6)
	ifc.DeliverPackets([][]byte{p4, b6})
	if len(es.ecns) != 2 || es.ecns[0] != transport.CE || es.ecns[1] != transport.ECT0 {
		t.Fatalf("delivered with ECN %v, want [CE ECT(0)]", es.ecns)
	}
}
