package tcp

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"strconv"
	"strings"
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
	t     *testing.T
	clk   *clock.Manual
	armed chan struct{} // signalled (coalescing) whenever the stack arms a timer
	p     *Protocol
	out   chan []byte
	mtu   int
}

// armClock is the clock the scripted stack sees: s.clk, telling s.armed whenever a timer is
// armed, so a script waits for the stack's own goroutine (a blocked Dial) to arm its timer
// before it advances time, without polling on the wall clock.
type armClock struct{ s *script }

func (c armClock) Now() time.Time { return c.s.clk.Now() }
func (c armClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	t := armTimer{c.s.clk.AfterFunc(d, f), c.s}
	c.s.signalArmed()
	return t
}

// armTimer signals its script's armed channel on Reset, as AfterFunc does.
type armTimer struct {
	clock.Timer
	s *script
}

func (t armTimer) Reset(d time.Duration) bool {
	r := t.Timer.Reset(d)
	t.s.signalArmed()
	return r
}

func (s *script) signalArmed() {
	select {
	case s.armed <- struct{}{}:
	default: // a signal is already pending: the waiter re-checks anyway
	}
}

func (s *script) Route(dst netip.Addr) (netip.Addr, int, error) { return scriptLocal, s.mtu, nil }
func (s *script) IsLocal(a netip.Addr) bool                     { return a == scriptLocal }
func (s *script) Clock() clock.Clock                            { return armClock{s} }
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
	s := &script{t: t, clk: clock.NewManual(time.Unix(1_000_000, 0)), armed: make(chan struct{}, 1),
		out: make(chan []byte, 1024), mtu: 1500}
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

// fmtSeg renders a segment on one line, for failure messages.
func fmtSeg(h wire.TCP) string {
	if h == nil {
		return "<none>"
	}
	return flagString(h.Flags()) + " seq=" + strconv.FormatUint(uint64(h.Seq()), 10) +
		" ack=" + strconv.FormatUint(uint64(h.Ack()), 10) + " win=" + strconv.Itoa(int(h.Window())) +
		" len=" + strconv.Itoa(len(h.Payload()))
}

// flagString names the flags set in f (FIN, SYN, RST, PSH, ACK) by their initials.
func flagString(f uint8) string {
	fl := ""
	for i, n := range []string{"F", "S", "R", "P", "A"} {
		if f&(1<<i) != 0 {
			fl += n
		}
	}
	return fl
}

// expectFlags fails unless h carries exactly flags, PSH aside.
func expectFlags(t *testing.T, h wire.TCP, flags uint8) {
	t.Helper()
	expectSeg(t, h, want{Flags: is(flags)})
}

// ---- Expected-segment templates: one want per segment, unset fields don't care. ----

// field is one field of a want: set says whether the script cares about it. The zero
// field is "any", so a want names only what it checks.
type field[T comparable] struct {
	v   T
	set bool
}

// is makes a field that must equal v.
func is[T comparable](v T) field[T] { return field[T]{v, true} }

// want is the template a script matches a sent segment against (the shape of smoltcp's
// recv! and packetimpact's testbench.TCP): every set field must match, unset fields are
// don't care. Flags compare with PSH ignored unless PSH is set to be checked, because
// whether a segment carries PSH is the sender's choice (RFC 9293 §3.9.1).
type want struct {
	Flags            field[uint8]
	PSH              field[bool]
	SrcPort, DstPort field[uint16]
	Seq, Ack         field[uint32]
	Win              field[uint16]
	Len              field[int]    // payload length
	Payload          field[string] // payload bytes
	Opts             field[wire.TCPOptions]
	MSS              field[uint16] // the MSS option is present with this value
	HasWS            field[bool]   // a window scale option is present (or not)
	HasTS            field[bool]   // the timestamps option is present (or not)
	TSEcr            field[uint32] // the timestamps option is present and echoes this
	SACKOK           field[bool]   // SACK-permitted is present (or not)
}

// segDiff compares h with w and returns the whole segment, field by field, got beside want
// with the mismatches marked, or "" when h matches.
func segDiff(h wire.TCP, w want) string {
	if h == nil {
		return "no segment"
	}
	var o wire.TCPOptions
	optErr := h.ParseOptions(&o)
	var b strings.Builder
	bad := false
	row := func(name, got, wantS string, set, ok bool) {
		mark := "  "
		if !set {
			wantS = "*"
		} else if !ok {
			mark, bad = "! ", true
		}
		fmt.Fprintf(&b, "\n  %s%-8s got %-24s want %s", mark, name, got, wantS)
	}
	u := func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
	fl := h.Flags() &^ wire.TCPFlagPSH
	row("flags", flagString(h.Flags()), flagString(w.Flags.v), w.Flags.set, fl == w.Flags.v)
	psh := h.Flags()&wire.TCPFlagPSH != 0
	row("psh", strconv.FormatBool(psh), strconv.FormatBool(w.PSH.v), w.PSH.set, psh == w.PSH.v)
	row("sport", u(uint32(h.SrcPort())), u(uint32(w.SrcPort.v)), w.SrcPort.set, h.SrcPort() == w.SrcPort.v)
	row("dport", u(uint32(h.DstPort())), u(uint32(w.DstPort.v)), w.DstPort.set, h.DstPort() == w.DstPort.v)
	row("seq", u(h.Seq()), u(w.Seq.v), w.Seq.set, h.Seq() == w.Seq.v)
	row("ack", u(h.Ack()), u(w.Ack.v), w.Ack.set, h.Ack() == w.Ack.v)
	row("win", u(uint32(h.Window())), u(uint32(w.Win.v)), w.Win.set, h.Window() == w.Win.v)
	row("len", strconv.Itoa(len(h.Payload())), strconv.Itoa(w.Len.v), w.Len.set, len(h.Payload()) == w.Len.v)
	row("payload", shortQuote(string(h.Payload())), shortQuote(w.Payload.v), w.Payload.set, string(h.Payload()) == w.Payload.v)
	gotOpts := fmtOpts(o)
	if optErr != nil {
		gotOpts = "unparsable: " + optErr.Error()
	}
	optsSet := w.Opts.set || w.MSS.set || w.HasWS.set || w.HasTS.set || w.TSEcr.set || w.SACKOK.set
	row("options", gotOpts, fmtOpts(w.Opts.v), w.Opts.set, optErr == nil && o == w.Opts.v)
	row("mss", u(uint32(o.MSS)), u(uint32(w.MSS.v)), w.MSS.set, optErr == nil && o.HasMSS && o.MSS == w.MSS.v)
	row("ws", strconv.FormatBool(o.HasWindowScale), strconv.FormatBool(w.HasWS.v), w.HasWS.set, optErr == nil && o.HasWindowScale == w.HasWS.v)
	row("ts", strconv.FormatBool(o.HasTimestamps), strconv.FormatBool(w.HasTS.v), w.HasTS.set, optErr == nil && o.HasTimestamps == w.HasTS.v)
	row("tsecr", u(o.TSEcr), u(w.TSEcr.v), w.TSEcr.set, optErr == nil && o.HasTimestamps && o.TSEcr == w.TSEcr.v)
	row("sackok", strconv.FormatBool(o.SACKPermitted), strconv.FormatBool(w.SACKOK.v), w.SACKOK.set, optErr == nil && o.SACKPermitted == w.SACKOK.v)
	if optErr != nil && optsSet {
		bad = true
	}
	if !bad {
		return ""
	}
	return b.String()
}

// fmtOpts renders the options a segment carries, compactly ("-" for none).
func fmtOpts(o wire.TCPOptions) string {
	var b strings.Builder
	if o.HasMSS {
		fmt.Fprintf(&b, " mss=%d", o.MSS)
	}
	if o.HasWindowScale {
		fmt.Fprintf(&b, " ws=%d", o.WindowScale)
	}
	if o.SACKPermitted {
		b.WriteString(" sackok")
	}
	if o.HasTimestamps {
		fmt.Fprintf(&b, " ts=%d/%d", o.TSVal, o.TSEcr)
	}
	for _, s := range o.SACK[:o.NumSACK] {
		fmt.Fprintf(&b, " sack=%d-%d", s.Left, s.Right)
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()[1:]
}

// shortQuote quotes s, cut to 32 bytes so a large payload does not drown the diff.
func shortQuote(s string) string {
	if len(s) > 32 {
		return strconv.Quote(s[:32]) + "..."
	}
	return strconv.Quote(s)
}

// expectSeg fails the test, printing the whole segment against the template, unless h
// matches w; it returns h so a script can read fields it did not fix in advance.
func expectSeg(t testing.TB, h wire.TCP, w want) wire.TCP {
	t.Helper()
	if d := segDiff(h, w); d != "" {
		t.Fatalf("segment %s does not match (! marks a mismatch, * don't care):%s", fmtSeg(h), d)
	}
	return h
}

// expect takes the next segment the stack sent and matches it against w (expectSeg).
func (s *script) expect(w want) wire.TCP {
	s.t.Helper()
	return expectSeg(s.t, s.next(), w)
}
