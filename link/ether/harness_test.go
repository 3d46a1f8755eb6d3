package ether_test

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/wire"
)

// fakeDev is a frame device that records what is written and lets a test deliver frames,
// so that every exchange runs synchronously on the test's goroutine.
type fakeDev struct {
	mtu int
	mu  sync.Mutex
	out [][]byte
	gso []gsoWrite
	d   link.Dispatcher
}

type gsoWrite struct {
	frame []byte
	mss   int
}

func (f *fakeDev) MTU() int { return f.mtu }
func (f *fakeDev) Attach(d link.Dispatcher) {
	f.mu.Lock()
	f.d = d
	f.mu.Unlock()
}
func (f *fakeDev) WritePackets(pkts [][]byte) (int, error) {
	f.mu.Lock()
	for _, p := range pkts {
		f.out = append(f.out, append([]byte(nil), p...))
	}
	f.mu.Unlock()
	return len(pkts), nil
}
func (f *fakeDev) Close() error { return nil }

// take returns and forgets the frames written so far.
func (f *fakeDev) take() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := f.out
	f.out = nil
	return o
}

func (f *fakeDev) deliver(frames ...[]byte) {
	f.mu.Lock()
	d := f.d
	f.mu.Unlock()
	d.DeliverPackets(frames)
}

// gsoDev is a fakeDev that segments.
type gsoDev struct{ fakeDev }

func (g *gsoDev) GSOMaxSize() int { return 65535 }
func (g *gsoDev) WriteGSO(pkt []byte, mss int) error {
	g.mu.Lock()
	g.gso = append(g.gso, gsoWrite{append([]byte(nil), pkt...), mss})
	g.mu.Unlock()
	return nil
}

// gsoFrameDev is a gsoDev that also takes header and packet apart (link.FrameWriter,
// link.GSOFrameWriter); it records the joined frames.
type gsoFrameDev struct{ gsoDev }

func (g *gsoFrameDev) WriteFrames(hdrs, pkts [][]byte) (int, error) {
	for i := range pkts {
		g.WritePackets([][]byte{append(append([]byte(nil), hdrs[i]...), pkts[i]...)})
	}
	return len(pkts), nil
}

func (g *gsoFrameDev) WriteGSOFrame(hdr, pkt []byte, mss int) error {
	return g.WriteGSO(append(append([]byte(nil), hdr...), pkt...), mss)
}

// upRecorder is the stack side: it records the IP packets delivered.
type upRecorder struct {
	mu       sync.Mutex
	pkts     [][]byte
	verified int
}

func (u *upRecorder) DeliverPackets(pkts [][]byte) {
	u.mu.Lock()
	for _, p := range pkts {
		u.pkts = append(u.pkts, append([]byte(nil), p...))
	}
	u.mu.Unlock()
}

func (u *upRecorder) DeliverVerified(pkts [][]byte) {
	u.mu.Lock()
	u.verified += len(pkts)
	u.mu.Unlock()
	u.DeliverPackets(pkts)
}

var (
	ourMAC     = wire.MAC{0x02, 0xbe, 0x00, 0x00, 0x00, 0x01}
	peerMAC    = wire.MAC{0x02, 0x9e, 0x00, 0x00, 0x00, 0x64}
	otherMAC   = wire.MAC{0x02, 0x0d, 0x00, 0x00, 0x00, 0x99}
	our4       = netip.MustParseAddr("10.0.2.2")
	gw4        = netip.MustParseAddr("10.0.2.3") // an Extra address (DNS, gateway)
	peer4      = netip.MustParseAddr("10.0.2.100")
	other4     = netip.MustParseAddr("10.0.2.77")
	our6       = netip.MustParseAddr("fd00::2")
	peer6      = netip.MustParseAddr("fd00::100")
	peerLL     = netip.MustParseAddr("fe80::9e:ff:fe00:64")
	ourLL      = netip.MustParseAddr("fe80::be:ff:fe00:1") // modified EUI-64 of ourMAC
	allNodesIP = netip.MustParseAddr("ff02::1")
	allNodesM  = wire.MAC{0x33, 0x33, 0, 0, 0, 1}
	bcast4     = netip.MustParseAddr("255.255.255.255")
	zero4      = netip.IPv4Unspecified()
	dns4       = netip.MustParseAddr("10.0.2.3")
	client1    = wire.MAC{0x02, 0xc1, 0, 0, 0, 1}
	client2    = wire.MAC{0x02, 0xc1, 0, 0, 0, 2}
)

type harness struct {
	t   *testing.T
	dev *fakeDev
	ep  *ether.Endpoint
	up  *upRecorder
	clk *clock.Manual
	// announced are the frames New sent (gratuitous ARP, DAD, a first RA).
	announced [][]byte
}

// newHarness makes an endpoint with MAC ourMAC, 10.0.2.2/24, fd00::2/64, Extra 10.0.2.3,
// on a manual clock, with DAD off unless dad. Without DAD the clock is moved past the
// second address announcement; its frames and New's are in h.announced.
func newHarness(t *testing.T, cfg ether.Config, dad bool) *harness {
	t.Helper()
	h := &harness{t: t, dev: &fakeDev{mtu: 1500}, up: &upRecorder{}, clk: clock.NewManual(time.Unix(1e9, 0))}
	cfg.MAC = ourMAC
	if cfg.Addrs == nil {
		cfg.Addrs = []netip.Prefix{netip.PrefixFrom(our4, 24), netip.PrefixFrom(our6, 64)}
	}
	if cfg.Extra == nil {
		cfg.Extra = []netip.Addr{gw4}
	}
	cfg.Clock = h.clk
	cfg.NoDAD = !dad
	ep, err := ether.New(h.dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.ep = ep
	h.announced = h.dev.take()
	if !dad {
		// Past RFC 5227's second announcement, so tests see only their own frames.
		h.clk.Advance(2 * time.Second)
		h.announced = append(h.announced, h.dev.take()...)
	}
	ep.Attach(h.up)
	t.Cleanup(func() { ep.Close() })
	return h
}

// wantCounters checks counters by name.
func (h *harness) wantCounters(want map[string]uint64) {
	h.t.Helper()
	got := h.ep.Counters()
	for n, v := range want {
		if got[n] != v {
			h.t.Errorf("%s = %d, want %d", n, got[n], v)
		}
	}
}

func (h *harness) neighbor(a netip.Addr) (ether.Neighbor, bool) { return neighborState(h.ep, a) }

// arpFrame builds an ARP frame, padded to 60 bytes as a NIC sends it.
func arpFrame(dst, src wire.MAC, op uint16, sha wire.MAC, sip netip.Addr, tha wire.MAC, tip netip.Addr) []byte {
	b := make([]byte, 60)
	(&wire.EthernetFields{Dst: dst, Src: src, EtherType: wire.EtherTypeARP}).Encode(b)
	(&wire.ARPFields{Op: op, SenderMAC: sha, SenderIP: sip, TargetMAC: tha, TargetIP: tip}).Encode(b[14:])
	return b
}

// ipv4Packet builds an IPv4 UDP datagram from src to dst with n payload bytes.
func ipv4Packet(src, dst netip.Addr, n int) []byte {
	p := make([]byte, 28+n)
	(&wire.IPv4Fields{TotalLen: len(p), TTL: 64, Protocol: wire.ProtoUDP, Src: src, Dst: dst}).Encode(p)
	(&wire.UDPFields{SrcPort: 1000, DstPort: 2000, Length: 8 + n}).Encode(p[20:])
	for i := range n {
		p[28+i] = byte(i)
	}
	wire.SetUDPChecksum(p[20:], src, dst)
	return p
}

func ipv6Packet(src, dst netip.Addr, n int) []byte {
	p := make([]byte, 48+n)
	(&wire.IPv6Fields{PayloadLen: 8 + n, NextHeader: wire.ProtoUDP, HopLimit: 64, Src: src, Dst: dst}).Encode(p)
	(&wire.UDPFields{SrcPort: 1000, DstPort: 2000, Length: 8 + n}).Encode(p[40:])
	wire.SetUDPChecksum(p[40:], src, dst)
	return p
}

func frame(dst, src wire.MAC, et uint16, payload []byte) []byte {
	b := make([]byte, 14+len(payload))
	(&wire.EthernetFields{Dst: dst, Src: src, EtherType: et}).Encode(b)
	copy(b[14:], payload)
	return b
}

// ndFrame builds an ND message from src to dst (IPv6 addresses and MACs) with hop limit
// hl: the fixed part f and raw options.
func ndFrame(dstMAC, srcMAC wire.MAC, src, dst netip.Addr, hl uint8, f wire.NDPFields, opts []byte) []byte {
	msg := make([]byte, 64)
	n := f.Encode(msg)
	msg = append(msg[:n], opts...)
	wire.SetICMPv6Checksum(msg, src, dst)
	p := make([]byte, 40+len(msg))
	(&wire.IPv6Fields{PayloadLen: len(msg), NextHeader: wire.ProtoICMPv6, HopLimit: hl, Src: src, Dst: dst}).Encode(p)
	copy(p[40:], msg)
	return frame(dstMAC, srcMAC, wire.EtherTypeIPv6, p)
}

func llaOpt(typ uint8, mac wire.MAC) []byte {
	b := make([]byte, 8)
	wire.PutNDPLinkAddr(b, typ, mac)
	return b
}

// one returns the single frame written, failing otherwise.
func (h *harness) one() []byte {
	h.t.Helper()
	out := h.dev.take()
	if len(out) != 1 {
		h.t.Fatalf("%d frames written, want 1", len(out))
	}
	return out[0]
}

func (h *harness) none() {
	h.t.Helper()
	if out := h.dev.take(); len(out) != 0 {
		h.t.Fatalf("%d frames written, want none: first % x", len(out), out[0])
	}
}

func equalFrame(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got % x\nwant % x", what, got, want)
	}
}
