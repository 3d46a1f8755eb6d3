package ether_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/wire"
)

// gsoGatherDev is a gsoFrameDev that also takes super-segments in pieces
// (link.GSOFrameGatherWriter); it records the joined frames and counts the gathers.
type gsoGatherDev struct {
	gsoFrameDev
	gathers int
}

func (g *gsoGatherDev) WriteGSOFrameGather(hdr, head, p1, p2 []byte, mss int) error {
	g.gathers++
	return g.WriteGSO(append(append(append(append([]byte(nil), hdr...), head...), p1...), p2...), mss)
}

// TestGSOGather: WriteGSOGather frames the super-segment head+p1+p2 as WriteGSO frames
// the joined packet — handed on in pieces to a device that gathers, joined for one that
// does not, and queued joined while the next hop is unresolved.
func TestGSOGather(t *testing.T) {
	for _, gathers := range []bool{false, true} {
		g := &gsoGatherDev{gsoFrameDev: gsoFrameDev{gsoDev{fakeDev{mtu: 1500}}}}
		var dev link.Endpoint = &g.gsoFrameDev
		if gathers {
			dev = g
		}
		ep, err := ether.New(dev, ether.Config{MAC: ourMAC, Addrs: []netip.Prefix{netip.PrefixFrom(our4, 24)}, NoDAD: true})
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		g.take()
		big := ipv4Packet(our4, peer4, 30000)
		head, p1, p2 := big[:28], big[28:10028], big[10028:]
		// Unresolved: queued (joined) and sent once the ARP reply comes.
		if err := ep.WriteGSOGather(head, p1, p2, 1448); err != nil {
			t.Fatal(err)
		}
		g.deliver(arpFrame(ourMAC, peerMAC, wire.ARPReply, peerMAC, peer4, ourMAC, our4))
		if err := ep.WriteGSOGather(head, p1, p2, 1448); err != nil {
			t.Fatal(err)
		}
		if err := ep.WriteGSOGather(big, nil, nil, 1448); err != nil {
			t.Fatal(err)
		}
		want := frame(peerMAC, ourMAC, wire.EtherTypeIPv4, big)
		if len(g.gso) != 3 {
			t.Fatalf("gathers %v: %d GSO writes, want 3", gathers, len(g.gso))
		}
		for i, w := range g.gso {
			if w.mss != 1448 || !bytes.Equal(w.frame, want) {
				t.Errorf("gathers %v: GSO write %d differs (mss %d)", gathers, i, w.mss)
			}
		}
		if want := map[bool]int{false: 0, true: 2}[gathers]; g.gathers != want {
			t.Errorf("gathers %v: %d writes in pieces, want %d", gathers, g.gathers, want)
		}
	}
}
