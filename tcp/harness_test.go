package tcp

import (
	"context"
	"math/rand"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/wire"
)

// ---- A Network joining two Protocols: queues plus a delivering goroutine per side. ----

var (
	addrA = netip.MustParseAddr("10.0.0.1")
	addrB = netip.MustParseAddr("10.0.0.2")
)

type impairment struct {
	loss, dup, reorder, corrupt float64
	seed                        int64
}

type pktItem struct {
	src, dst netip.Addr
	seg      []byte
}

type pairNet struct {
	addr  netip.Addr
	mtu   int
	clk   clock.Clock
	peer  *pairNet
	proto *Protocol
	in    chan pktItem

	mu      sync.Mutex
	imp     impairment
	rng     *rand.Rand
	held    pktItem // a packet held back for reordering
	holding bool
	sendBuf []pktItem
	free    chan []byte
	dropped int
	done    chan struct{}
	wg      sync.WaitGroup
}

func (n *pairNet) Route(dst netip.Addr) (netip.Addr, int, error) {
	if dst == n.addr || dst == n.peer.addr {
		return n.addr, n.mtu, nil
	}
	return netip.Addr{}, 0, syscall.ENETUNREACH
}

func (n *pairNet) IsLocal(a netip.Addr) bool { return a == n.addr }
func (n *pairNet) Clock() clock.Clock        { return n.clk }

func (n *pairNet) Output(src, dst netip.Addr, proto uint8, pkt []byte) error {
	to := n.peer
	if dst == n.addr {
		to = n
	}
	seg := append(to.getBuf(), pkt[wire.NetworkHeadroom:]...)
	it := pktItem{src, dst, seg}
	n.mu.Lock()
	imp := n.imp
	send := n.sendBuf[:0]
	if n.rng != nil {
		r := n.rng
		switch {
		case r.Float64() < imp.loss:
			n.dropped++
		default:
			if r.Float64() < imp.corrupt {
				i := r.Intn(len(seg))
				seg[i] ^= byte(1 + r.Intn(255))
			}
			send = append(send, it)
			if r.Float64() < imp.dup {
				send = append(send, pktItem{src, dst, append(to.getBuf(), seg...)})
			}
			if !n.holding && r.Float64() < imp.reorder {
				n.held, n.holding = send[0], true
				send = send[1:]
			} else if n.holding {
				send = append(send, n.held)
				n.holding = false
			}
		}
	} else {
		send = append(send, it)
	}
	for _, it := range send {
		select {
		case to.in <- it:
		default: // a full queue drops, never blocks
		}
	}
	n.sendBuf = send[:0]
	n.mu.Unlock()
	return nil
}

// getBuf and putBuf recycle packet buffers so the harness itself allocates nothing per
// packet (allocation benchmarks measure TCP alone).
func (n *pairNet) getBuf() []byte {
	select {
	case b := <-n.free:
		return b[:0]
	default:
		return make([]byte, 0, 2048)
	}
}

func (n *pairNet) putBuf(b []byte) {
	select {
	case n.free <- b:
	default:
	}
}

func (n *pairNet) run() {
	defer n.wg.Done()
	for {
		select {
		case it := <-n.in:
			n.proto.HandlePacket(it.src, it.dst, it.seg)
			n.putBuf(it.seg)
		case <-n.done:
			return
		}
	}
}

type pair struct {
	a, b   *pairNet
	pa, pb *Protocol
}

// newPair makes two Protocols joined by queues; imp (optional) impairs both directions.
func newPair(t testing.TB, mtu int, clk clock.Clock, cfg Config, imp *impairment) *pair {
	if clk == nil {
		clk = clock.Real{}
	}
	a := &pairNet{addr: addrA, mtu: mtu, clk: clk, in: make(chan pktItem, 4096), done: make(chan struct{}), free: make(chan []byte, 4096)}
	b := &pairNet{addr: addrB, mtu: mtu, clk: clk, in: make(chan pktItem, 4096), done: make(chan struct{}), free: make(chan []byte, 4096)}
	a.peer, b.peer = b, a
	if imp != nil {
		a.imp, b.imp = *imp, *imp
		a.rng, b.rng = rand.New(rand.NewSource(imp.seed)), rand.New(rand.NewSource(imp.seed+1))
	}
	a.proto, b.proto = New(a, cfg), New(b, cfg)
	a.wg.Add(1)
	b.wg.Add(1)
	go a.run()
	go b.run()
	t.Cleanup(func() {
		close(a.done)
		close(b.done)
		a.wg.Wait()
		b.wg.Wait()
	})
	return &pair{a: a, b: b, pa: a.proto, pb: b.proto}
}

// connect returns a connection from a to b and b's accepted end.
func (p *pair) connect(t testing.TB) (*Conn, *Conn) {
	t.Helper()
	l, err := p.pb.Listen(netip.AddrPortFrom(addrB, 0), 0, portsOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept(ctx)
		ch <- res{c, err}
	}()
	c, err := p.pa.Dial(ctx, netip.AddrPort{}, l.Addr(), DialOptions{})
	if err != nil {
		t.Fatal("dial:", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal("accept:", r.err)
	}
	return c, r.c
}

// ---- The packet-script harness: a Network that captures output, a manual clock. ----

var (
	scriptLocal  = netip.MustParseAddr("192.0.2.1")
	scriptRemote = netip.MustParseAddr("192.0.2.2")
)

type script struct {
	t   *testing.T
	clk *clock.Manual
	p   *Protocol
	out chan []byte
	mtu int
}

func (s *script) Route(dst netip.Addr) (netip.Addr, int, error) { return scriptLocal, s.mtu, nil }
func (s *script) IsLocal(a netip.Addr) bool                     { return a == scriptLocal }
func (s *script) Clock() clock.Clock                            { return s.clk }
func (s *script) Output(src, dst netip.Addr, proto uint8, pkt []byte) error {
	seg := append([]byte(nil), pkt[wire.NetworkHeadroom:]...)
	if !wire.TCP(seg).VerifyChecksum(src, dst) {
		s.t.Errorf("segment with bad checksum")
	}
	select {
	case s.out <- seg:
	default:
		s.t.Errorf("script: output queue full")
	}
	return nil
}

func newScript(t *testing.T, cfg Config) *script {
	s := &script{t: t, clk: clock.NewManual(time.Unix(1_000_000, 0)), out: make(chan []byte, 1024), mtu: 1500}
	if cfg.DelayedACK == 0 {
		cfg.DelayedACK = -1 // scripts want every ACK at once unless they say otherwise
	}
	s.p = New(s, cfg)
	return s
}

// inject hands the stack a segment from the remote.
func (s *script) inject(f wire.TCPFields, payload []byte) {
	s.t.Helper()
	s.p.HandlePacket(scriptRemote, scriptLocal, encodeSeg(f, payload))
}

// encodeSeg builds the remote's segment with its checksum.
func encodeSeg(f wire.TCPFields, payload []byte) []byte {
	b := make([]byte, f.HeaderLen()+len(payload))
	n := f.Encode(b)
	copy(b[n:], payload)
	wire.SetTCPChecksum(b, scriptRemote, scriptLocal)
	return b
}

// next returns the next segment the stack sent, failing if none comes within a second
// of real time (the stack may answer on another goroutine, e.g. a blocked Dial).
func (s *script) next() wire.TCP {
	s.t.Helper()
	select {
	case b := <-s.out:
		return wire.TCP(b)
	case <-time.After(5 * time.Second):
		s.t.Fatal("script: no segment sent")
		return nil
	}
}

// listen opens a listener on scriptLocal:port with the given backlog, closed when the test
// ends.
func (s *script) listen(port uint16, backlog int) *Listener {
	s.t.Helper()
	l, err := s.p.Listen(netip.AddrPortFrom(scriptLocal, port), backlog, portsOpts())
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { l.Close() })
	return l
}

// dialAsync dials scriptRemote:80 in a goroutine: the connection arrives on the channel
// once the handshake the test scripts ends (nil after an error, which fails the test).
func (s *script) dialAsync() <-chan *Conn {
	ch := make(chan *Conn, 1)
	go func() {
		c, err := s.p.Dial(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{})
		if err != nil {
			s.t.Error(err)
		}
		ch <- c
	}()
	return ch
}

// none asserts nothing was sent.
func (s *script) none() {
	s.t.Helper()
	select {
	case b := <-s.out:
		h := wire.TCP(b)
		s.t.Fatalf("script: unexpected segment %s", fmtSeg(h))
	case <-time.After(20 * time.Millisecond):
	}
}

func fmtSeg(h wire.TCP) string {
	fl := ""
	for i, n := range []string{"F", "S", "R", "P", "A"} {
		if h.Flags()&(1<<i) != 0 {
			fl += n
		}
	}
	return fl + " seq=" + itoa(h.Seq()) + " ack=" + itoa(h.Ack()) + " win=" + itoa(uint32(h.Window())) + " len=" + itoa(uint32(len(h.Payload())))
}

func itoa(v uint32) string {
	if v == 0 {
		return "0"
	}
	var b [10]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

func expectFlags(t *testing.T, h wire.TCP, flags uint8) {
	t.Helper()
	if h.Flags()&^wire.TCPFlagPSH != flags {
		t.Fatalf("got %s, want flags %#x", fmtSeg(h), flags)
	}
}
