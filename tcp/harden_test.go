package tcp

// Hardening regressions of issue 19 (TCP parts): SYN+FIN, the active-open SYN's window,
// the PMTU floor and the TIME-WAIT cap.

import (
	"testing"

	"github.com/berthnet/berth/wire"
)

// A SYN with FIN set gets no answer, in LISTEN, in a synchronized state or for a closed
// port, and is counted; a plain SYN to the same listener is still answered.
func TestHardenSynFinDropped(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sc.listen(81, 0)
	synFin := wire.TCPFlagSYN | wire.TCPFlagFIN
	// LISTEN.
	sc.inject(wire.TCPFields{SrcPort: 4000, DstPort: 81, Seq: remoteISS, Flags: synFin, Window: 1000}, nil)
	sc.none()
	// A closed port.
	sc.inject(wire.TCPFields{SrcPort: 4000, DstPort: 82, Seq: remoteISS, Flags: synFin, Window: 1000}, nil)
	sc.none()
	// ESTABLISHED: no challenge ACK either.
	sc.inject(wire.TCPFields{SrcPort: sc.rport, DstPort: sc.lport, Seq: sc.rcvNxt, Ack: sc.sndNxt, Flags: synFin | wire.TCPFlagACK, Window: 1000}, nil)
	sc.none()
	if got := sc.p.Stats.SynFinDrops.Load(); got != 3 {
		t.Fatalf("SynFinDrops %d, want 3", got)
	}
	if st := sc.c.State(); st != StateEstablished {
		t.Fatalf("connection in %v after SYN+FIN", st)
	}
	sc.inject(wire.TCPFields{SrcPort: 4000, DstPort: 81, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 1000}, nil)
	expectFlags(t, sc.next(), wire.TCPFlagSYN|wire.TCPFlagACK)
}

// The active-open SYN advertises the receive buffer's window, unscaled (RFC 7323 §2.2),
// and the first ACK after it the scaled window of the same buffer.
func TestHardenSynWindow(t *testing.T) {
	for _, rbuf := range []int{16 << 10, 256 << 10} {
		s := newScript(t, Config{RMem: [3]int{4096, rbuf, rbuf}})
		ch := s.dialAsync()
		syn := s.next()
		expectFlags(t, syn, wire.TCPFlagSYN)
		if want := min(rbuf, 0xffff); int(syn.Window()) != want {
			t.Fatalf("buffer %d: SYN window %d, want %d", rbuf, syn.Window(), want)
		}
		o := opts(t, syn)
		s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
			Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535,
			Options: &wire.TCPOptions{HasMSS: true, MSS: 1460, HasWindowScale: true, WindowScale: 2}}, nil)
		ack := s.next()
		expectFlags(t, ack, wire.TCPFlagACK)
		if got, want := int(ack.Window())<<o.WindowScale, rbuf; got > want || got < want-(1<<o.WindowScale) {
			t.Fatalf("buffer %d: first ACK window %d (scale %d), want about %d", rbuf, got, o.WindowScale, want)
		}
		if c := <-ch; c != nil {
			c.Abort()
		}
	}
}
