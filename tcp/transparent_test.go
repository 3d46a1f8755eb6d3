package tcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/berthnet/berth/wire"
)

// TestScriptTransparentForeign: HandleForeign, the stack's offer of a segment for another
// host, takes the segments of a transparent connection (on the batched path: the ACK
// waits for EndBatch) and leaves those of no connection, uncounted, for the hook.
func TestScriptTransparentForeign(t *testing.T) {
	s := newScript(t, Config{})
	foreign := netip.MustParseAddr("198.51.100.7")
	enc := func(sport uint16, seq, ack uint32, flags uint8, payload []byte) []byte {
		f := wire.TCPFields{SrcPort: sport, DstPort: 443, Seq: seq, Ack: ack, Flags: flags, Window: 65535}
		b := make([]byte, f.HeaderLen()+len(payload))
		copy(b[f.Encode(b):], payload)
		wire.SetTCPChecksum(b, scriptRemote, foreign)
		return b
	}
	syn := enc(40000, 1000, 0, wire.TCPFlagSYN, nil)
	in0 := s.p.Stats.InSegs.Load()
	if s.p.HandleForeign(scriptRemote, foreign, syn, false) {
		t.Fatal("HandleForeign took the SYN of a new flow")
	}
	if n := s.p.Stats.InSegs.Load() - in0; n != 0 {
		t.Errorf("a segment left for the hook counted in InSegs (%d)", n)
	}
	s.none()
	c, err := s.p.AcceptTransparent(scriptRemote, foreign, syn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort()
	synack := s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), DstPort: is[uint16](40000), Ack: is[uint32](1001)})
	iss := synack.Seq()
	if !s.p.HandleForeign(scriptRemote, foreign, enc(40000, 1001, iss+1, wire.TCPFlagACK, nil), false) {
		t.Fatal("HandleForeign left the handshake's ACK")
	}
	if !s.p.HandleForeign(scriptRemote, foreign, enc(40000, 1001, iss+1, wire.TCPFlagACK|wire.TCPFlagPSH, []byte("hello")), false) {
		t.Fatal("HandleForeign left the connection's data")
	}
	if st := c.Info().State; st != StateEstablished {
		t.Fatalf("state %v after the handshake's ACK", st)
	}
	s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](1006)}) // the ACK of the data
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read: %q, %v", buf[:n], err)
	}
	// What an ACK taken by HandleForeign makes sendable waits for the end of the batch.
	c.Write(make([]byte, 20*1460))
	var segs []wire.TCP // the initial window (RFC 6928)
	for len(segs) < 2 || len(s.out) > 0 {
		segs = append(segs, s.next())
	}
	s.none()
	last := segs[len(segs)-1]
	if !s.p.HandleForeign(scriptRemote, foreign, enc(40000, 1006, segs[4].Seq(), wire.TCPFlagACK, nil), false) {
		t.Fatal("HandleForeign left an ACK")
	}
	s.none()
	s.p.EndBatch()
	s.expect(want{Seq: is(last.Seq() + uint32(len(last.Payload())))}) // new data after EndBatch
	for len(s.out) > 0 {
		<-s.out
	}
	// Another 4-tuple (a port of the same peer) is no connection's: left for the hook.
	if s.p.HandleForeign(scriptRemote, foreign, enc(40001, 1001, iss+1, wire.TCPFlagACK, nil), false) {
		t.Error("HandleForeign took a segment of no connection")
	}
	s.none()
}
