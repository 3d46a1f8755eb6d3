package tcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/impair"
	"github.com/berthnet/berth/link/pipe"
	"github.com/berthnet/berth/wire"
)

// ---- A Network joining two Protocols over a link/pipe, optionally impaired by link/impair. ----

var (
	addrA = netip.MustParseAddr("10.0.0.1")
	addrB = netip.MustParseAddr("10.0.0.2")
)

// impairment says how bad the pair's link is, per direction: probabilities 0..1 of loss,
// duplication, reordering and corruption, drawn from a stream seeded by seed. It maps onto
// link/impair's Config, which does the work.
type impairment struct {
	loss, dup, reorder, corrupt float64
	seed                        int64
}

// pktItem is a segment in flight between two test Networks (floodNet queues them).
type pktItem struct {
	src, dst netip.Addr
	seg      []byte
}

// pairNet is one side's Network. Output writes the segment as an IPv4 packet (header in
// the headroom, as the stack's IP layer does) to this side's end of a link/pipe, through a
// link/impair endpoint when the test impairs the path; the pipe's delivering goroutine
// hands the peer's packets to proto, so TCP is never called back on its own goroutine.
type pairNet struct {
	addr  netip.Addr
	mtu   int
	clk   clock.Clock
	peer  *pairNet
	proto *Protocol
	link  *pipe.Endpoint // towards the peer
	pcfg  pipe.Config

	mu    sync.Mutex       // serialises writes and guards the fields below
	loop  *pipe.Endpoint   // to itself, made on first use (its other end delivers to proto)
	out   link.Endpoint    // link, or imp wrapping it
	imp   *impair.Endpoint // nil while the path is clean
	lost  uint64           // packets lost by impairments since replaced
	batch [1][]byte
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
	ip := pkt[wire.NetworkHeadroom-wire.IPv4MinHeaderLen:]
	f := wire.IPv4Fields{TotalLen: len(ip), TTL: 64, Protocol: proto, Src: src, Dst: dst}
	f.Encode(ip)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.batch[0] = ip
	var err error
	if dst == n.addr {
		if n.loop == nil {
			var in *pipe.Endpoint
			n.loop, in = pipe.NewConfig(n.pcfg)
			in.Attach(n)
		}
		_, err = n.loop.WritePackets(n.batch[:])
	} else {
		_, err = n.out.WritePackets(n.batch[:])
	}
	n.batch[0] = nil
	if errors.Is(err, net.ErrClosed) {
		return nil // the test is over: the link is gone, as a powered-off cable
	}
	return err
}

// DeliverPackets takes the IPv4 packets the link brings and hands their segments to proto.
func (n *pairNet) DeliverPackets(pkts [][]byte) {
	for _, b := range pkts {
		ip, err := wire.ParseIPv4(b)
		if err != nil {
			continue // link/impair corrupts only past the IP header: not expected
		}
		n.proto.HandlePacket(ip.Src(), ip.Dst(), ip.Payload())
	}
}

// setImpairment makes the path from n to its peer as bad as imp from now on (the zero
// impairment: clean again).
func (n *pairNet) setImpairment(imp impairment) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dropImpairLocked()
	if imp == (impairment{seed: imp.seed}) {
		return
	}
	n.imp = impair.New(keepOpen{n.link}, impair.Config{Seed: imp.seed, Loss: imp.loss, Duplicate: imp.dup,
		Corrupt: imp.corrupt, Reorder: imp.reorder, Clock: n.clk})
	n.out = n.imp
}

// dropImpairLocked retires the impair endpoint, keeping its loss count.
func (n *pairNet) dropImpairLocked() {
	if n.imp != nil {
		n.lost += n.imp.Stats().Lost
		n.imp.Close() // stops its release timer; keepOpen leaves the pipe open
		n.imp = nil
	}
	n.out = n.link
}

// drops reports how many packets impairments have lost on the path from n.
func (n *pairNet) drops() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.lost
	if n.imp != nil {
		d += n.imp.Stats().Lost
	}
	return int(d)
}

// keepOpen is a link.Endpoint whose Close does nothing, so an impair endpoint can be
// replaced without closing the pipe under it.
type keepOpen struct{ link.Endpoint }

func (keepOpen) Close() error { return nil }

type pair struct {
	a, b   *pairNet
	pa, pb *Protocol
}

// impair sets imp on both directions, each with its own random stream (seed, seed+1).
func (p *pair) impair(imp impairment) {
	p.a.setImpairment(imp)
	imp.seed++
	p.b.setImpairment(imp)
}

// newPair makes two Protocols joined by a pipe; imp (optional) impairs both directions.
func newPair(t testing.TB, mtu int, clk clock.Clock, cfg Config, imp *impairment) *pair {
	if clk == nil {
		clk = clock.Real{}
	}
	// Queues as deep as the harness's channels were: a full queue drops, never blocks.
	pcfg := pipe.Config{MTU: mtu, QueuePackets: 4096, QueueBytes: 4096 * mtu}
	a := &pairNet{addr: addrA, mtu: mtu, clk: clk, pcfg: pcfg}
	b := &pairNet{addr: addrB, mtu: mtu, clk: clk, pcfg: pcfg}
	a.peer, b.peer = b, a
	a.link, b.link = pipe.NewConfig(pcfg)
	a.out, b.out = a.link, b.link
	a.proto, b.proto = New(a, cfg), New(b, cfg)
	a.link.Attach(a)
	b.link.Attach(b)
	p := &pair{a: a, b: b, pa: a.proto, pb: b.proto}
	if imp != nil {
		p.impair(*imp)
	}
	t.Cleanup(func() {
		for _, n := range []*pairNet{a, b} {
			n.mu.Lock()
			n.dropImpairLocked()
			loop := n.loop
			n.mu.Unlock()
			if loop != nil {
				loop.Close()
			}
		}
		a.link.Close()
	})
	return p
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
