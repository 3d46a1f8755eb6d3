package tcp

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/wire"
)

// TestCCSelection: CUBIC is the default, Config.CongestionControl and
// Conn.SetCongestionControl choose per stack and per connection, unknown names are
// ENOENT (as Linux's TCP_CONGESTION), and Info/Sockets report the algorithm.
func TestCCSelection(t *testing.T) {
	p := newPair(t, 1500, nil, Config{}, nil)
	a, b := p.connect(t)
	defer a.Close()
	defer b.Close()
	if a.CongestionControl() != CCCubic || a.Info().CongestionControl != CCCubic || b.Info().CongestionControl != CCCubic {
		t.Fatalf("default: %q / %q, want cubic", a.Info().CongestionControl, b.Info().CongestionControl)
	}
	if _, ok := a.cc.(*Cubic); !ok {
		t.Fatalf("default policy is %T", a.cc)
	}
	if err := a.SetCongestionControl("bbr"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("unknown name: %v, want ENOENT", err)
	}
	if err := a.SetCongestionControl("newreno"); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.cc.(*NewReno); !ok || a.Info().CongestionControl != CCReno || a.CongestionControl() != CCReno {
		t.Fatalf("after SetCongestionControl(newreno): %T %q", a.cc, a.Info().CongestionControl)
	}
	names := map[string]int{}
	for _, si := range append(p.pa.Sockets(), p.pb.Sockets()...) {
		if si.State == StateEstablished {
			names[si.CongestionControl]++
		}
	}
	if names[CCReno] != 1 || names[CCCubic] != 1 {
		t.Fatalf("Sockets reports %v, want one reno and one cubic", names)
	}
	transfer(t, a, b, 1<<20) // the switched connection still moves data

	p2 := newPair(t, 1500, nil, Config{CongestionControl: "reno"}, nil)
	c, d := p2.connect(t)
	defer c.Close()
	defer d.Close()
	if c.Info().CongestionControl != CCReno || d.Info().CongestionControl != CCReno {
		t.Fatalf("Config reno: %q / %q", c.Info().CongestionControl, d.Info().CongestionControl)
	}

	func() {
		defer func() {
			if recover() == nil {
				t.Error("New accepted an unknown congestion control")
			}
		}()
		New(p.a, Config{CongestionControl: "vegas"})
	}()
}

// TestCCSwitchKeepsWindow: switching algorithms mid-connection keeps cwnd and ssthresh.
func TestCCSwitchKeepsWindow(t *testing.T) {
	p := newPair(t, 1500, nil, Config{}, nil)
	a, b := p.connect(t)
	defer a.Close()
	defer b.Close()
	a.mu.Lock()
	a.cc.(*Cubic).seed(40*1460, 30*1460)
	a.mu.Unlock()
	if err := a.SetCongestionControl(CCReno); err != nil {
		t.Fatal(err)
	}
	if si := a.Info(); si.CWnd != 40*1460 || si.SSThresh != 30*1460 {
		t.Fatalf("after switch cwnd %d ssthresh %d", si.CWnd, si.SSThresh)
	}
	if err := a.SetCongestionControl(CCCubic); err != nil {
		t.Fatal(err)
	}
	if si := a.Info(); si.CWnd != 40*1460 || si.SSThresh != 30*1460 || si.CongestionControl != CCCubic {
		t.Fatalf("after switch back cwnd %d ssthresh %d %s", si.CWnd, si.SSThresh, si.CongestionControl)
	}
}

// TestPairLossCC: over the lossy two-Protocol network a transfer completes byte-exact with
// CUBIC and with NewReno, losses reduce ssthresh by the algorithm's β, and the algorithm
// stays the chosen one.
func TestPairLossCC(t *testing.T) {
	n := 16 << 20
	if testing.Short() || raceEnabled {
		n = 4 << 20
	}
	for _, name := range []string{CCCubic, CCReno} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newPair(t, 1500, nil, Config{}, nil)
				a, b := p.connect(t)
				defer a.Close()
				defer b.Close()
				if err := a.SetCongestionControl(name); err != nil {
					t.Fatal(err)
				}
				p.impair(impairment{loss: 0.02, seed: 10})
				start := time.Now()
				transfer(t, a, b, n)
				si := a.Info()
				if si.CongestionControl != name {
					t.Fatalf("algorithm %q, want %q", si.CongestionControl, name)
				}
				if si.Retrans == 0 || si.SSThresh >= cubicInitSSThresh {
					t.Fatalf("no loss response: retrans %d ssthresh %d", si.Retrans, si.SSThresh)
				}
				t.Logf("%s: %d MiB in %v virtual, dropped %d, retransmitted %d, cwnd %d ssthresh %d",
					name, n>>20, time.Since(start), p.a.drops(), si.Retrans, si.CWnd, si.SSThresh)
			})
		})
	}
}

// BenchmarkPairTransferCC measures bulk throughput over the test network, CUBIC against
// NewReno, without loss and with 1% loss per direction (real time: RTOs count).
func BenchmarkPairTransferCC(b *testing.B) {
	for _, loss := range []float64{0, 0.01} {
		for _, name := range []string{CCCubic, CCReno} {
			b.Run(fmt.Sprintf("loss%g/%s", loss*100, name), func(b *testing.B) {
				var imp *impairment
				if loss > 0 {
					imp = &impairment{loss: loss, seed: 7}
				}
				p := newPair(b, 1500, nil, Config{CongestionControl: name}, imp)
				a, c := p.connect(b)
				defer a.Close()
				defer c.Close()
				const chunk = 1 << 20
				done := make(chan int64)
				go func() {
					n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 64<<10))
					done <- n
				}()
				buf := make([]byte, chunk)
				b.SetBytes(chunk)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := a.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				a.CloseWrite()
				<-done
				b.StopTimer()
				b.ReportMetric(float64(a.Info().Retrans)/float64(b.N), "retrans/op")
			})
		}
	}
}

// bnNet is one side of a path with a bottleneck: packets leave at rate bytes/s (0: no
// limit) after queueing behind the ones before, and arrive delay later. The queue never
// drops, so the only congestion signal is the growing RTT.
type bnNet struct {
	addr  netip.Addr
	peer  *bnNet
	proto *Protocol
	rate  float64
	delay time.Duration

	mu      sync.Mutex
	free    time.Time // when the bottleneck is next idle
	q       chan bnPkt
	done    chan struct{}
	wg      sync.WaitGroup
	dropped int
}

type bnPkt struct {
	src, dst netip.Addr
	seg      []byte
	at       time.Time
}

func (n *bnNet) Route(netip.Addr) (netip.Addr, int, error) { return n.addr, 1500, nil }
func (n *bnNet) IsLocal(a netip.Addr) bool                 { return a == n.addr }
func (n *bnNet) Clock() clock.Clock                        { return clock.Real{} }

func (n *bnNet) Output(src, dst netip.Addr, _ uint8, pkt []byte) error {
	seg := append([]byte(nil), pkt[wire.NetworkHeadroom:]...)
	n.mu.Lock()
	defer n.mu.Unlock()
	start := time.Now()
	if n.free.After(start) {
		start = n.free
	}
	n.free = start
	if n.rate > 0 {
		n.free = start.Add(time.Duration(float64(len(seg)+20) / n.rate * float64(time.Second)))
	}
	select {
	case n.q <- bnPkt{src, dst, seg, n.free.Add(n.delay)}:
	default:
		n.dropped++
	}
	return nil
}

func (n *bnNet) run() {
	defer n.wg.Done()
	for {
		select {
		case p := <-n.q:
			if d := time.Until(p.at); d > 0 {
				time.Sleep(d)
			}
			n.peer.proto.HandlePacket(p.src, p.dst, p.seg)
		case <-n.done:
			return
		}
	}
}

// bottleneckPair connects two Protocols over a 10 Mbit/s bottleneck (data direction a to
// b) with 10 ms of delay each way: a BDP of 25 KB, about 17 segments.
func bottleneckPair(t *testing.T, cfg Config) (a, b *Conn, na *bnNet) {
	na = &bnNet{addr: addrA, rate: 10e6 / 8, delay: 10 * time.Millisecond, q: make(chan bnPkt, 1<<16), done: make(chan struct{})}
	nb := &bnNet{addr: addrB, delay: 10 * time.Millisecond, q: make(chan bnPkt, 1<<16), done: make(chan struct{})}
	na.peer, nb.peer = nb, na
	na.proto, nb.proto = New(na, cfg), New(nb, cfg)
	for _, n := range []*bnNet{na, nb} {
		n.wg.Add(1)
		go n.run()
	}
	t.Cleanup(func() {
		close(na.done)
		close(nb.done)
		na.wg.Wait()
		nb.wg.Wait()
	})
	l, err := nb.proto.Listen(netip.AddrPortFrom(addrB, 80), 0, portsOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan *Conn, 1)
	go func() {
		c, _ := l.Accept(t.Context())
		ch <- c
	}()
	a, err = na.proto.Dial(t.Context(), netip.AddrPort{}, l.Addr(), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b = <-ch; b == nil {
		t.Fatal("accept failed")
	}
	return a, b, na
}

// TestHyStartBottleneck: over a path whose queue never drops, standard slow start
// (NewReno) keeps doubling into the queue, while CUBIC's HyStart++ sees the RTT rise
// (per-ACK samples from RFC 7323 timestamps), leaves slow start without a loss, and keeps
// the queueing delay low.
func TestHyStartBottleneck(t *testing.T) {
	n := 2 << 20
	res := map[string]SocketInfo{}
	cssCwnd := 0
	for _, name := range []string{CCCubic, CCReno} {
		synctest.Test(t, func(t *testing.T) {
			a, b, na := bottleneckPair(t, Config{CongestionControl: name})
			defer a.Close()
			defer b.Close()
			start := time.Now()
			transfer(t, a, b, n)
			si := a.Info()
			res[name] = si
			a.mu.Lock()
			if cu, ok := a.cc.(*Cubic); ok {
				cssCwnd = cu.hs.cssCwnd
			}
			a.mu.Unlock()
			t.Logf("%s: %d MiB in %v virtual; cwnd %d ssthresh %d srtt %v retrans %d queue drops %d",
				name, n>>20, time.Since(start), si.CWnd, si.SSThresh, si.RTT, si.Retrans, na.dropped)
			if si.Retrans != 0 || na.dropped != 0 {
				t.Fatalf("%s: %d retransmissions, %d drops on a lossless path", name, si.Retrans, na.dropped)
			}
		})
	}
	cu, re := res[CCCubic], res[CCReno]
	if cu.SSThresh >= cubicInitSSThresh {
		t.Fatalf("CUBIC never left slow start (ssthresh %d, cwnd %d)", cu.SSThresh, cu.CWnd)
	}
	if re.SSThresh < cubicInitSSThresh {
		t.Fatalf("NewReno left slow start without a loss (ssthresh %d)", re.SSThresh)
	}
	// The BDP is 25 KB: HyStart++ detects the queue within a few times that (a round
	// of samples late), then CSS grows cwnd by about 1.25 per round for CSS_ROUNDS;
	// standard slow start runs on to whatever the send buffer allows.
	t.Logf("CUBIC entered CSS at cwnd %d; ssthresh %d vs NewReno's final cwnd %d", cssCwnd, cu.SSThresh, re.CWnd)
	if cssCwnd == 0 || cssCwnd > 4*25000 || cu.SSThresh > re.CWnd/2 || cu.RTT >= re.RTT {
		t.Fatalf("HyStart++: CSS at cwnd %d, ssthresh %d, srtt %v (NewReno cwnd %d, srtt %v)", cssCwnd, cu.SSThresh, cu.RTT, re.CWnd, re.RTT)
	}
}
