package forward

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

// frag4 builds an IPv4 fragment of a UDP datagram from 10.0.2.100 to 192.0.2.1.
func frag4(id uint16, off int, more bool, data []byte) []byte {
	p := make([]byte, wire.IPv4MinHeaderLen+len(data))
	f := wire.IPv4Fields{TotalLen: len(p), ID: id, TTL: 64, Protocol: wire.ProtoUDP,
		Src: netip.MustParseAddr("10.0.2.100"), Dst: netip.MustParseAddr("192.0.2.1"), FragmentOffset: off}
	if more {
		f.Flags = wire.IPv4FlagMF
	}
	f.Encode(p)
	copy(p[wire.IPv4MinHeaderLen:], data)
	return p
}

type nopEndpoint struct{ link.Endpoint }

func (nopEndpoint) Attach(link.Dispatcher) {}

func TestDefrag(t *testing.T) {
	e := newDefrag(nopEndpoint{}, func(a netip.Addr) bool { return a == netip.MustParseAddr("10.0.2.1") })
	var got [][]byte
	e.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		for _, p := range pkts {
			got = append(got, bytes.Clone(p))
		}
	}))
	payload := make([]byte, 3000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	// Out of order, with an overlapping duplicate; a packet that is not a fragment passes
	// through in place.
	plain := frag4(9, 0, false, []byte("whole"))
	e.deliver([][]byte{frag4(1, 2000, false, payload[2000:]), plain, frag4(1, 1000, true, payload[1000:2000])})
	if len(got) != 1 || !bytes.Equal(got[0], plain) {
		t.Fatalf("before the datagram is complete: %d packets delivered", len(got))
	}
	e.deliver([][]byte{frag4(1, 992, true, payload[992:2000]), frag4(1, 0, true, payload[:1000])})
	if len(got) != 2 {
		t.Fatalf("after the last fragment: %d packets", len(got))
	}
	h, err := wire.ParseIPv4(got[1])
	if err != nil || h.IsFragment() || !bytes.Equal(h.Payload(), payload) || h.Protocol() != wire.ProtoUDP {
		t.Fatalf("reassembled: %v, fragment %v, payload equal %v", err, h.IsFragment(), bytes.Equal(h.Payload(), payload))
	}
	if e.bytes != 0 || len(e.bufs) != 0 {
		t.Errorf("state left: %d bytes, %d datagrams", e.bytes, len(e.bufs))
	}
	// Fragments for the stack's own address are the stack's business.
	own := frag4(2, 0, true, payload[:8])
	copy(own[16:20], []byte{10, 0, 2, 1})
	wire.IPv4(own).SetChecksum(0)
	wire.IPv4(own).SetChecksum(^wire.Checksum(own[:20], 0))
	e.deliver([][]byte{own})
	if len(got) != 3 || len(e.bufs) != 0 {
		t.Errorf("local fragment: %d packets, %d held", len(got), len(e.bufs))
	}
	// A datagram past 65535 bytes is dropped, with what was held for it.
	e.deliver([][]byte{frag4(3, 0, true, payload[:1000]), frag4(3, 65000, false, payload[:1000])})
	if len(got) != 3 || e.bytes != 0 {
		t.Errorf("oversized: %d packets, %d bytes held", len(got), e.bytes)
	}
}

func FuzzDefrag(f *testing.F) {
	f.Add(frag4(1, 0, true, make([]byte, 16)), frag4(1, 16, false, make([]byte, 5)))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		e := newDefrag(nopEndpoint{}, func(netip.Addr) bool { return false })
		e.Attach(link.DispatcherFunc(func([][]byte) {}))
		e.deliver([][]byte{a, b, a})
		if e.bytes < 0 || e.bytes > defragMaxMem {
			t.Fatalf("bytes held: %d", e.bytes)
		}
	})
}
