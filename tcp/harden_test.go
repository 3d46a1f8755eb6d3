package tcp

// Hardening regressions of issue 19 (TCP parts): SYN+FIN, the active-open SYN's window,
// the PMTU floor and the TIME-WAIT cap.

import (
	"encoding/binary"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

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

// quoteSeq builds the first 8 bytes of a segment of c's as an ICMP error quotes them.
func quoteSeq(c *Conn, seq uint32) []byte {
	q := make([]byte, 8)
	binary.BigEndian.PutUint16(q, c.local.Port())
	binary.BigEndian.PutUint16(q[2:], c.remote.Port())
	binary.BigEndian.PutUint32(q[4:], seq)
	return q
}

// A forged "fragmentation needed" with a tiny MTU clamps the MSS at tcp_min_snd_mss
// (48 bytes) instead of being ignored, and data still flows in segments that size.
func TestHardenPMTUFloor(t *testing.T) {
	for _, mtu := range []int{1, 68, 87, 88, 104} {
		sc := dialScript(t, Config{}, nil, 65535)
		go sc.c.Write(make([]byte, 3000))
		seg := sc.next()
		sc.next()
		sc.next()
		sc.p.HandleICMPError(scriptLocal, scriptRemote, quoteSeq(sc.c, seg.Seq()), syscall.EMSGSIZE, mtu)
		want := max(mtu-40, minSndMSS)
		if si := sc.c.Info(); si.MSS != want {
			t.Fatalf("MTU %d: MSS %d, want %d", mtu, si.MSS, want)
		}
		// The outstanding data goes again in segments of at most the new MSS.
		r := sc.next()
		if r.Seq() != seg.Seq() || len(r.Payload()) == 0 || len(r.Payload()) > want {
			t.Fatalf("MTU %d: resent %s, want seq %d with at most %d bytes", mtu, fmtSeg(r), seg.Seq(), want)
		}
		sc.c.Abort()
	}
}

// Forged PMTU errors every few hundred microseconds, quoting outstanding data, with MTUs
// 0, 68, 104 and 200, during a transfer over an impaired path (loss, reordering,
// duplication): the stream arrives byte-exact and the MSS never falls below the floor.
func TestHardenPMTUForgeryTransfer(t *testing.T) {
	imp := &impairment{loss: 0.01, dup: 0.01, reorder: 0.02, seed: 19}
	p := newPair(t, 1500, nil, Config{}, imp)
	a, b := p.connect(t)
	defer a.Close()
	defer b.Close()
	n := 4 << 20
	if testing.Short() || raceEnabled {
		n = 1 << 20
	}
	stop := make(chan struct{})
	done := make(chan int)
	floor := minSndMSS - tsOptLen // timestamps take their 12 bytes of the 48
	go func() {
		mtus := []int{0, 68, 104, 200}
		sent, low := 0, 1<<30
		defer func() { done <- low }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				t.Logf("%d forged errors, lowest MSS %d", sent, low)
				return
			case <-time.After(300 * time.Microsecond):
			}
			a.mu.Lock()
			una, nxt, mss := a.sndUna, a.sndMax, a.mss
			a.mu.Unlock()
			low = min(low, mss)
			if una == nxt {
				continue
			}
			seq := una + uint32(i)%(nxt-una)
			p.pa.HandleICMPError(addrA, addrB, quoteSeq(a, seq), syscall.EMSGSIZE, mtus[i%len(mtus)])
			sent++
		}
	}()
	err := transferErr(a, b, n)
	close(stop)
	low := <-done
	if err != nil {
		t.Fatal(err)
	}
	if low != floor {
		t.Fatalf("lowest MSS %d, want the floor %d (MTU 68 clamps to it)", low, floor)
	}
	if a.p.Stats.PMTUUpdates.Load() == 0 {
		t.Fatal("no forged error took effect: the test tests nothing")
	}
}

// closeIntoTimeWait opens n connections from p.pa to p.pb and closes them, a's end
// first, and waits until every a end is in TIME-WAIT or CLOSED and every b end is gone.
func closeIntoTimeWait(t *testing.T, p *pair, n int) []*Conn {
	t.Helper()
	as := make([]*Conn, 0, n)
	for range n {
		a, b := p.connect(t)
		a.Close()
		if _, err := b.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read after the peer's FIN: %v", err)
		}
		b.Close()
		as = append(as, a)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		settled := p.pb.NumSockets() == 0
		for _, a := range as {
			if st := a.State(); st != StateTimeWait && st != StateClosed {
				settled = false
			}
		}
		if settled {
			return as
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections did not settle: b holds %d sockets", p.pb.NumSockets())
		}
		time.Sleep(time.Millisecond)
	}
}

// Beyond Config.MaxTimeWait, a connection that would enter TIME-WAIT closes at once and
// is counted; the ones within the cap hold their 4-tuple for 2*MSL as before.
func TestHardenTimeWaitCap(t *testing.T) {
	p := newPair(t, 1500, nil, Config{MaxTimeWait: 5}, nil)
	as := closeIntoTimeWait(t, p, 12)
	tw := 0
	for _, a := range as {
		if a.State() == StateTimeWait {
			tw++
		}
	}
	if tw != 5 || p.pa.NumSockets() != 5 {
		t.Fatalf("%d connections in TIME-WAIT, %d sockets, want 5 (the cap)", tw, p.pa.NumSockets())
	}
	if got := p.pa.Stats.TimeWaitOverflows.Load(); got != 7 {
		t.Fatalf("TimeWaitOverflows %d, want 7", got)
	}
	// A TIME-WAIT connection that ends frees its place: the next close takes it.
	for _, a := range as {
		if a.State() == StateTimeWait {
			a.mu.Lock()
			a.finish(nil)
			a.mu.Unlock()
			break
		}
	}
	closeIntoTimeWait(t, p, 2)
	if p.pa.NumSockets() != 5 || p.pa.Stats.TimeWaitOverflows.Load() != 8 {
		t.Fatalf("after one TIME-WAIT ended: %d sockets, %d overflows; want 5 and 8",
			p.pa.NumSockets(), p.pa.Stats.TimeWaitOverflows.Load())
	}
}

// TestHardenTimeWaitHeap measures the heap a TIME-WAIT connection holds (Config.MaxTimeWait's
// documentation quotes it) and checks that it holds no buffers.
func TestHardenTimeWaitHeap(t *testing.T) {
	p := newPair(t, 1500, nil, Config{}, nil)
	n := 2000
	if testing.Short() || raceEnabled {
		n = 200 // still checks that no buffer is held; the figure is only logged
	}
	// Warm up the pools and the port tables, then take the baseline.
	closeIntoTimeWait(t, p, 50)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	as := closeIntoTimeWait(t, p, n)
	for _, a := range as {
		a.mu.Lock()
		st, held := a.state, len(a.sndBuf.buf)+len(a.rcvBuf.buf)+len(a.sb.segs)*int(unsafe.Sizeof(txSeg{}))
		a.mu.Unlock()
		if st != StateTimeWait || held != 0 {
			t.Fatalf("state %v holding %d bytes of buffers and scoreboard, want TIME-WAIT holding none", st, held)
		}
	}
	as = nil
	runtime.GC()
	runtime.ReadMemStats(&m1)
	// What ending them frees (the port tables keep their grown size): the figure the
	// connections themselves cost, less noisy than the growth over the baseline.
	p.pa.Close()
	var m2 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m2)
	grown := (int64(m1.HeapAlloc) - int64(m0.HeapAlloc)) / int64(n)
	per := (int64(m1.HeapAlloc) - int64(m2.HeapAlloc)) / int64(n)
	t.Logf("heap per TIME-WAIT connection: %d bytes freed when they end, %d bytes of growth over the baseline (%d held)", per, grown, n)
	// A Conn with freed buffers and scoreboard, its timer and binding: about 2.9 KiB of
	// growth on amd64 (4.5 KiB when the SACK scoreboard was kept); noisy, so loosely.
	if grown > 8<<10 {
		t.Fatalf("%d bytes of heap per TIME-WAIT connection", grown)
	}
}

// An MSS lowered by a (possibly forged) PMTU error recovers once the estimate has aged
// 600 s: the next ACK rereads the route's MTU (RFC 1191 §6.3, Linux's ip_rt_mtu_expires).
func TestHardenPMTURecovers(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	sendAll := func(n int) []wire.TCP {
		go sc.c.Write(make([]byte, n))
		var segs []wire.TCP
		for got := 0; got < n; {
			h := sc.next()
			got += len(h.Payload())
			segs = append(segs, h)
			sc.sndNxt = h.Seq() + uint32(len(h.Payload()))
		}
		return segs
	}
	segs := sendAll(3000)
	sc.p.HandleICMPError(scriptLocal, scriptRemote, quoteSeq(sc.c, segs[0].Seq()), syscall.EMSGSIZE, 68)
	// The resent data, in floor-sized segments, a cwnd of them per round: acknowledge
	// each round until all is.
	for end := sc.sndNxt; sc.c.Info().MSS == minSndMSS; {
		var hi uint32
		for more := true; more; {
			select {
			case b := <-sc.out:
				h := wire.TCP(b)
				if len(h.Payload()) > minSndMSS {
					t.Fatalf("resent %s, larger than the MSS %d", fmtSeg(h), minSndMSS)
				}
				hi = max(hi, h.Seq()+uint32(len(h.Payload())))
			case <-time.After(20 * time.Millisecond):
				more = false
			}
		}
		if hi == 0 {
			t.Fatal("nothing resent")
		}
		sc.sndNxt = hi
		sc.send(wire.TCPFlagACK, nil)
		if hi == end {
			break
		}
	}
	if mss := sc.c.Info().MSS; mss != minSndMSS {
		t.Fatalf("MSS %d after the error, want %d", mss, minSndMSS)
	}
	sc.clk.Advance(599 * time.Second)
	sendAll(100)
	sc.send(wire.TCPFlagACK, nil)
	if mss := sc.c.Info().MSS; mss != minSndMSS {
		t.Fatalf("MSS %d before the estimate expired, want %d", mss, minSndMSS)
	}
	sc.clk.Advance(time.Second)
	sendAll(100)
	sc.send(wire.TCPFlagACK, nil)
	if mss := sc.c.Info().MSS; mss != 1460 {
		t.Fatalf("MSS %d after 600 s, want 1460 again", mss)
	}
	if segs := sendAll(3000); len(segs[0].Payload()) != 1460 {
		t.Fatalf("segment of %d bytes after the recovery, want 1460", len(segs[0].Payload()))
	}
}

// A lower path MTU keeps cwnd's size in segments (as Linux counts it), so a forged error
// makes the sender send fewer bytes, not 40 times as many packets.
func TestHardenPMTUKeepsCwndSegments(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	cw := sc.c.Info().CWnd
	go sc.c.Write(make([]byte, 3000))
	seg := sc.next()
	sc.next()
	sc.next()
	sc.p.HandleICMPError(scriptLocal, scriptRemote, quoteSeq(sc.c, seg.Seq()), syscall.EMSGSIZE, 576)
	if got, want := sc.c.Info().CWnd, cw/1460*536; got != want {
		t.Fatalf("cwnd %d after MSS 1460 -> 536, want %d (the same %d segments)", got, want, cw/1460)
	}
}
