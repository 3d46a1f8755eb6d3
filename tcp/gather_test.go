package tcp

import (
	"bytes"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// gatherNet is gsoNet whose link takes super-segments in pieces
// (transport.GSOGatherNetwork); refuse: it does not (EOPNOTSUPP), as a link that cannot
// gather.
type gatherNet struct {
	gsoNet
	refuse   bool
	gathered chan int // the number of payload pieces of each gathered super-segment
}

func (g *gatherNet) OutputGSOGather(src, dst netip.Addr, head, p1, p2 []byte, mss int, ecn transport.ECN) error {
	if g.refuse {
		return syscall.EOPNOTSUPP
	}
	pieces := 0
	for _, p := range [][]byte{p1, p2} {
		if len(p) > 0 {
			pieces++
		}
	}
	g.gathered <- pieces
	pkt := append(append(append([]byte(nil), head[wire.NetworkHeadroom:]...), p1...), p2...)
	g.gso <- gsoPkt{pkt, mss}
	return nil
}

// TestScriptGSOGather: over a network that gathers, super-segments leave with their
// payload in the send buffer's pieces — two where the ring wraps — and carry exactly the
// bytes written; over one that refuses, the connection sends joined super-segments
// (OutputGSO) from then on.
func TestScriptGSOGather(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		s := newScript(t, Config{})
		g := &gatherNet{gsoNet: gsoNet{script: s, max: 65535 - 20, gso: make(chan gsoPkt, 64)}, refuse: refuse, gathered: make(chan int, 64)}
		s.p = New(g, Config{DelayedACK: -1})
		ep := dialExtOn(t, s)
		// 30 segments make a 64 KiB ring; once the first ten are acknowledged, 30,000
		// bytes more wrap around its end.
		data := make([]byte, 30*1448+30000)
		for i := range data {
			data[i] = byte(i*7 + i>>8)
		}
		if _, err := ep.c.Write(data[:30*1448]); err != nil {
			t.Fatal(err)
		}
		var got []byte
		wrote, wrapped := false, false
		for len(got) < len(data) {
			var sp gsoPkt
			select {
			case sp = <-g.gso:
			case <-time.After(5 * time.Second):
				t.Fatalf("refuse %v: %d bytes of %d arrived", refuse, len(got), len(data))
			}
			if !refuse {
				if n := <-g.gathered; n == 2 {
					wrapped = true
				}
			}
			if sp.seg.Seq() != ep.sndNxt {
				t.Fatalf("refuse %v: super-segment %s, want seq %d", refuse, fmtSeg(sp.seg), ep.sndNxt)
			}
			got = append(got, sp.seg.Payload()...)
			ep.sndNxt += uint32(len(sp.seg.Payload()))
			ep.sendTS(wire.TCPFlagACK, nil)
			if !wrote {
				wrote = true
				if _, err := ep.c.Write(data[30*1448:]); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("refuse %v: the super-segments carried other bytes", refuse)
		}
		if !refuse && !wrapped {
			t.Error("no super-segment came in two pieces where the ring wraps")
		}
		ep.c.mu.Lock()
		noGather := ep.c.noGather
		ep.c.mu.Unlock()
		if noGather != refuse {
			t.Errorf("refuse %v: noGather %v", refuse, noGather)
		}
	}
}
