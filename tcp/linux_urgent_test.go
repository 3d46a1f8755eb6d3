package tcp

import (
	"testing"

	"github.com/berthnet/berth/wire"
)

// The urgent pointer of a segment names the byte after the urgent one (RFC 6093 §3, as
// Linux with tcp_stdurg=0): 100 bytes with "urg 100" make byte 100 urgent, 99 bytes
// readable before it (tcp/splice/tcp_splice_loop_test.pkt: "< U. 1:101(100) ... urg
// 100", "splice(4, NULL, 6, NULL, 99, 0) = 99", then 0 at the mark). The byte stays in
// the stream; the mark goes once it is read. A pointer before RCV.NXT (a replay) or not
// beyond the pending mark is ignored; a later one moves the mark.
func TestLinuxUrgentMark(t *testing.T) {
	sc := dialScript(t, Config{NoTimestamps: true}, nil, 65535)
	urg := func(payload []byte, up uint16) {
		t.Helper()
		sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt, Ack: sc.sndNxt,
			Flags: wire.TCPFlagACK | wire.TCPFlagPSH | wire.TCPFlagURG, Window: 65535, Urgent: up}, payload)
		sc.rcvNxt += uint32(len(payload))
		sc.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(sc.rcvNxt)})
	}
	mark := func(want int, wantOK bool) {
		t.Helper()
		if n, ok := sc.c.UrgentMark(); n != want || ok != wantOK {
			t.Fatalf("UrgentMark %d %v, want %d %v", n, ok, want, wantOK)
		}
	}
	mark(0, false)
	payload := make([]byte, 100)
	payload[99] = '!'
	urg(payload, 100)
	mark(99, true)
	b := make([]byte, 200)
	if n, err := sc.c.ReadNonblock(b[:99], false); n != 99 || err != nil {
		t.Fatalf("read %d %v", n, err)
	}
	mark(0, true)
	if n, err := sc.c.ReadNonblock(b, false); n != 1 || err != nil || b[0] != '!' {
		t.Fatalf("read %d %q %v, want the urgent byte inline", n, b[:n], err)
	}
	mark(0, false)
	// A replay: the first segment again, its pointer before RCV.NXT.
	sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: remoteISS + 1, Ack: sc.sndNxt,
		Flags: wire.TCPFlagACK | wire.TCPFlagURG, Window: 65535, Urgent: 100}, payload)
	sc.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(sc.rcvNxt)})
	mark(0, false)
	urg([]byte("ab"), 2)
	mark(1, true)
	urg([]byte("cd"), 0xffff) // a later pointer moves the mark, beyond the data here
	mark(2+0xffff-1, true)
	urg([]byte("ef"), 1) // not beyond the pending mark: ignored
	mark(2+0xffff-1, true)
	if n, err := sc.c.ReadNonblock(b, false); n != 6 || err != nil {
		t.Fatalf("read %d %v", n, err)
	}
	mark(0xffff-5, true) // the urgent byte is still to come
}
