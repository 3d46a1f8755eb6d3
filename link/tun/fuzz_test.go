//go:build linux

package tun

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/wire"
)

// FuzzInbound feeds arbitrary bytes as if read from a device with the virtio-net header:
// a malformed header or packet is dropped, never a panic, and a completed checksum is right
// for the bytes from csum_start plus the partial sum the field held.
func FuzzInbound(f *testing.F) {
	f.Add([]byte{unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 0, 0, 20, 0, 6, 0,
		0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
		0, 1, 0, 2, 0, 16, 0, 0, 'h', 'i', 'h', 'i', 'h', 'i', 'h', 'i'})
	f.Add([]byte{0, 1, 54, 0, 0xa0, 5, 0, 0, 0, 0, 0x60})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x45})
	// A TAP frame: Ethernet header, then the UDP datagram of the first seed.
	f.Add([]byte{unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 0, 0, 34, 0, 6, 0,
		2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00,
		0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
		0, 1, 0, 2, 0, 16, 0, 0, 'h', 'i', 'h', 'i', 'h', 'i', 'h', 'i'})
	// A UDP super-segment on a TAP device (VIRTIO_NET_HDR_GSO_UDP_L4, gso_size 4).
	f.Add([]byte{unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoUDPL4, 42, 0, 4, 0, 34, 0, 6, 0,
		2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00,
		0x45, 0, 0, 38, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
		0, 1, 0, 2, 0, 18, 0, 0, 'h', 'i', 'h', 'i', 'h', 'i', 'h', 'i', 'h', 'i'})
	f.Fuzz(func(t *testing.T, b []byte) {
		// The same bytes as read from a TUN device and from a TAP device.
		for _, l2 := range []int{0, ethHdrLen} {
			fuzzInbound(t, &Endpoint{vnet: true, mtu: 1500, l2: l2}, b)
		}
		// Without the header, a TAP device drops only runts and over-long frames.
		e := &Endpoint{mtu: 1500, l2: ethHdrLen}
		if p := e.inbound(append([]byte(nil), b...), false); (p != nil) != (len(b) >= ethHdrLen && len(b) <= 1500+ethHdrLen+vlanTagLen) {
			t.Fatalf("TAP frame of %d bytes: delivered %v", len(b), p != nil)
		}
	})
}

func fuzzInbound(t *testing.T, e *Endpoint, b []byte) {
	if isUSO(b) {
		// A UDP super-segment: cut into datagrams whose UDP checksums verify and whose
		// payloads put together are the original's.
		segs := e.splitUDP(append([]byte(nil), b...), make([]byte, usoScratch), nil)
		var joined []byte
		for _, d := range segs {
			src, dst, proto, l4, ok := parseIP(e.ipOf(d))
			u, err := wire.ParseUDP(l4)
			if !ok || proto != wire.ProtoUDP || err != nil || !u.VerifyChecksum(src, dst) {
				t.Fatalf("datagram % x: %v", d, err)
			}
			joined = append(joined, u.Payload()...)
		}
		if len(segs) > 0 {
			if tail := b[len(b)-len(joined):]; !bytes.Equal(tail, joined) {
				t.Fatalf("datagrams carry %d bytes that are not the super-segment's payload", len(joined))
			}
		}
		return
	}
	// Vouched (the batch goes to a link.VerifiedDispatcher): a TCP packet's partial
	// checksum stays as it was, nothing panics.
	if e.tcpVouched(b) {
		in := append([]byte(nil), b...)
		// Whether it was TCP is decided on what arrived, not on what inbound made of it.
		if p := e.inbound(in, true); p != nil && isTCP(e.ipOf(b[vnetHdrLen:])) && !bytes.Equal(p, b[vnetHdrLen:]) {
			t.Fatalf("vouched TCP packet changed: % x", p)
		}
	}
	p := e.inbound(append([]byte(nil), b...), false)
	if p == nil || len(b) < vnetHdrLen || b[0]&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
		return
	}
	// The field held the partial sum (the pseudo-header's, from a real kernel); with
	// that sum added back, the completed segment must verify.
	start := int(b[6]) | int(b[7])<<8
	at := vnetHdrLen + start + (int(b[8]) | int(b[9])<<8)
	partial := uint16(b[at])<<8 | uint16(b[at+1])
	if wire.Checksum(p[start:], partial) != 0xffff {
		t.Fatalf("completed checksum does not verify: % x", p)
	}
}
