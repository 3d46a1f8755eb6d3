package udp

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/wire"
)

// fakeNet is a Network double: every address in local is ours, everything routes, and
// Output records packets.
type fakeNet struct {
	mu    sync.Mutex
	out   [][]byte
	local map[netip.Addr]bool
	clk   clock.Clock
}

func newFakeNet() *fakeNet {
	return &fakeNet{clk: clock.Real{}, local: map[netip.Addr]bool{
		netip.MustParseAddr("10.0.0.1"): true, netip.MustParseAddr("fd00::1"): true}}
}

func (n *fakeNet) Route(dst netip.Addr) (netip.Addr, int, error) {
	if dst.Is4() {
		return netip.MustParseAddr("10.0.0.1"), 1500, nil
	}
	return netip.MustParseAddr("fd00::1"), 1500, nil
}
func (n *fakeNet) IsLocal(a netip.Addr) bool { return n.local[a] }
func (n *fakeNet) Output(src, dst netip.Addr, proto uint8, pkt []byte) error {
	n.mu.Lock()
	n.out = append(n.out, append([]byte(nil), pkt[wire.NetworkHeadroom:]...))
	n.mu.Unlock()
	return nil
}
func (n *fakeNet) Clock() clock.Clock { return n.clk }

var (
	local4  = netip.MustParseAddr("10.0.0.1")
	remote4 = netip.MustParseAddr("10.0.0.2")
	local6  = netip.MustParseAddr("fd00::1")
	remote6 = netip.MustParseAddr("fd00::2")
)

func datagram(src, dst netip.Addr, sport, dport uint16, payload string, sum bool) []byte {
	b := make([]byte, 8+len(payload))
	f := wire.UDPFields{SrcPort: sport, DstPort: dport, Length: len(b)}
	f.Encode(b)
	copy(b[8:], payload)
	if sum {
		wire.SetUDPChecksum(b, src, dst)
	}
	return b
}

func bound(t *testing.T, p *Protocol, fam Family, ap string) *Endpoint {
	t.Helper()
	e, err := p.NewEndpoint(fam)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Bind(netip.MustParseAddrPort(ap), ports.BindOptions{Privileged: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestZeroChecksum(t *testing.T) {
	p := New(newFakeNet(), Config{})
	e4 := bound(t, p, V4, "0.0.0.0:53")
	e6 := bound(t, p, V6, "[::]:53")
	// RFC 768: zero means "no checksum" on IPv4.
	if p.HandlePacket(remote4, local4, datagram(remote4, local4, 1000, 53, "v4", false)) {
		t.Error("v4 zero checksum: unreachable")
	}
	if e4.Info().Queued != 1 {
		t.Error("v4 datagram without checksum not delivered")
	}
	// RFC 8200 §8.1: not on IPv6.
	p.HandlePacket(remote6, local6, datagram(remote6, local6, 1000, 53, "v6", false))
	if e6.Info().Queued != 0 || p.c.InErrors.Load() != 1 {
		t.Error("v6 datagram without checksum accepted")
	}
	bad := datagram(remote4, local4, 1000, 53, "x", true)
	bad[8] ^= 1
	p.HandlePacket(remote4, local4, bad)
	if p.c.InCsumErrors.Load() != 1 || e4.Info().Queued != 1 {
		t.Error("bad checksum not dropped")
	}
	if !p.HandlePacket(remote4, local4, datagram(remote4, local4, 1000, 54, "x", true)) || p.c.NoPorts.Load() != 1 {
		t.Error("closed port not reported unreachable")
	}
}

func TestReceiveQueueBounded(t *testing.T) {
	p := New(newFakeNet(), Config{RecvBuf: 4096})
	e := bound(t, p, V4, "10.0.0.1:7")
	for range 100 {
		p.HandlePacket(remote4, local4, datagram(remote4, local4, 1000, 7, string(make([]byte, 100)), true))
	}
	in := e.Info()
	// 4096 / (100 + 256) = 11 datagrams fit.
	if in.Queued != 11 || in.Drops != 89 || p.c.RcvbufErrors.Load() != 89 || in.RecvQ > 4096 {
		t.Errorf("queued %d, drops %d, RcvbufErrors %d, RecvQ %d", in.Queued, in.Drops, p.c.RcvbufErrors.Load(), in.RecvQ)
	}
	buf := make([]byte, 10) // shorter than the datagram: the rest is discarded
	n, from, err := e.RecvFrom(buf)
	if err != nil || n != 10 || from != netip.MustParseAddrPort("10.0.0.2:1000") {
		t.Errorf("RecvFrom = %d, %v, %v", n, from, err)
	}
	if e.Info().Queued != 10 {
		t.Error("a short read did not consume the datagram")
	}
}

func TestICMPErrorOnlyForConnected(t *testing.T) {
	n := newFakeNet()
	p := New(n, Config{})
	unconnected := bound(t, p, V4, "10.0.0.1:5000")
	conn, _ := p.NewEndpoint(V4)
	defer conn.Close()
	if err := conn.Connect(netip.MustParseAddrPort("10.0.0.2:53")); err != nil {
		t.Fatal(err)
	}
	lp := conn.LocalAddr().Port()
	q := make([]byte, 8)
	binary.BigEndian.PutUint16(q, lp)
	binary.BigEndian.PutUint16(q[2:], 53)
	p.HandleICMPError(local4, remote4, q, syscall.ECONNREFUSED, 0)
	binary.BigEndian.PutUint16(q, 5000)
	p.HandleICMPError(local4, remote4, q, syscall.ECONNREFUSED, 0)
	if _, _, err := conn.RecvFrom(nil); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connected socket: %v, want ECONNREFUSED", err)
	}
	unconnected.SetReadDeadline(time.Now().Add(time.Millisecond))
	if _, _, err := unconnected.RecvFrom(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("unconnected socket: %v, want no error reported (deadline)", err)
	}
	// Soft errors (fragmentation needed) are not reported.
	binary.BigEndian.PutUint16(q, lp)
	p.HandleICMPError(local4, remote4, q, syscall.EMSGSIZE, 1400)
	if _, err := conn.SendTo([]byte("x"), netip.AddrPort{}); err != nil {
		t.Errorf("send after EMSGSIZE notice: %v", err)
	}
}

func TestAutobindAndFamilies(t *testing.T) {
	n := newFakeNet()
	p := New(n, Config{})
	e, _ := p.NewEndpoint(Dual)
	defer e.Close()
	if _, err := e.SendTo([]byte("hi"), netip.MustParseAddrPort("10.0.0.2:9")); err != nil {
		t.Fatal(err)
	}
	la := e.LocalAddr()
	if !la.Addr().IsUnspecified() || la.Port() < 49152 {
		t.Errorf("autobind to %v, want [::]:ephemeral", la)
	}
	u := wire.UDP(n.out[0])
	if u.SrcPort() != la.Port() || u.DstPort() != 9 || !u.VerifyChecksum(local4, remote4) {
		t.Errorf("sent %x", n.out[0])
	}
	v6, _ := p.NewEndpoint(V6)
	defer v6.Close()
	if _, err := v6.SendTo([]byte("x"), netip.MustParseAddrPort("10.0.0.2:9")); err != syscall.ENETUNREACH {
		t.Errorf("v6only to IPv4: %v", err)
	}
	v4, _ := p.NewEndpoint(V4)
	defer v4.Close()
	if err := v4.Bind(netip.MustParseAddrPort("[fd00::1]:1"), ports.BindOptions{}); err != syscall.EAFNOSUPPORT {
		t.Errorf("v4 bind to IPv6: %v", err)
	}
	if err := v4.Bind(netip.MustParseAddrPort("10.9.9.9:1"), ports.BindOptions{}); err != syscall.EADDRNOTAVAIL {
		t.Errorf("bind to foreign address: %v", err)
	}
	if _, err := v4.SendTo(make([]byte, MaxPayload4+1), netip.MustParseAddrPort("10.0.0.2:9")); err != syscall.EMSGSIZE {
		t.Errorf("oversize: %v", err)
	}
}
