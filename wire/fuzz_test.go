package wire_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/berthnet/berth/wire"
)

// Fuzz targets: every parser must return a view or a *wire.Error, never panic, and a view
// it returns must be safe to read through every accessor. Seeds are the kernel fixtures.

// seeds splits the kernel fixtures into IP packets and transport payloads by protocol.
func seeds(f *testing.F) (ip [][]byte, byProto map[uint8][][]byte) {
	byProto = map[uint8][][]byte{}
	for _, p := range kernelPackets(f) {
		ip = append(ip, p)
		if h, err := wire.ParseIPv4(p); err == nil && !h.IsFragment() {
			byProto[h.Protocol()] = append(byProto[h.Protocol()], h.Payload())
		} else if h, err := wire.ParseIPv6(p); err == nil {
			if proto, off, _, hasFrag, err := h.Upper(); err == nil && !hasFrag {
				byProto[proto] = append(byProto[proto], h[off:])
			}
		}
	}
	return ip, byProto
}

func isWireError(err error) bool {
	var we *wire.Error
	return errors.As(err, &we) && we.Kind >= wire.ErrTooShort && we.Kind <= wire.ErrBadField
}

func FuzzIPv4(f *testing.F) {
	ip, _ := seeds(f)
	for _, p := range ip {
		if p[0]>>4 == 4 {
			f.Add(p)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := wire.ParseIPv4(b)
		if err != nil {
			if !isWireError(err) {
				t.Fatalf("untyped error %v", err)
			}
		} else {
			if len(h) != h.TotalLen() || h.HeaderLen() < 20 || h.HeaderLen() > len(h) || wire.Checksum(h[:h.HeaderLen()], 0) != 0xffff {
				t.Fatalf("accepted a bad header % x", b)
			}
			_ = h.Options()
			_, _, _, _ = h.Src(), h.Dst(), h.FragmentOffset(), h.Flags()
			if len(h.Payload()) != h.TotalLen()-h.HeaderLen() {
				t.Fatal("payload length")
			}
			// The RFC 1624 setters keep the header valid.
			c := append([]byte(nil), h...)
			v := wire.IPv4(c)
			v.SetTTL(h.TTL() + 1)
			v.SetSrc(h.Dst())
			if _, err := wire.ParseIPv4(c); err != nil {
				t.Fatalf("after setters: %v", err)
			}
		}
		q, err := wire.ParseIPv4Quote(b)
		if err != nil {
			if !isWireError(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		_ = q.Payload()
	})
}

func FuzzIPv6(f *testing.F) {
	ip, _ := seeds(f)
	for _, p := range ip {
		if p[0]>>4 == 6 {
			f.Add(p)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := wire.ParseIPv6(b)
		if err != nil {
			if !isWireError(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		_, _, _, _ = h.TrafficClass(), h.FlowLabel(), h.Src(), h.Dst()
		proto, off, frag, hasFrag, err := h.Upper()
		if err != nil {
			if !isWireError(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if off < 40 || off > len(h) || (hasFrag != (frag != nil)) {
			t.Fatalf("Upper = %d, %d, %v", proto, off, hasFrag)
		}
		if hasFrag {
			_, _, _, _ = frag.NextHeader(), frag.Offset(), frag.More(), frag.ID()
		}
		n := 0
		it := h.Extensions()
		for it.Next() {
			e := it.Header()
			if e.Offset < 40 || e.Offset+len(e.Bytes) > len(h) || h[e.NextHeaderByte] != e.Type {
				t.Fatalf("header %+v", e)
			}
			n++
		}
		if p, o := it.Upper(); p != proto || o != off || it.Err() != nil || n > 16 {
			t.Fatal("iterator and Upper disagree")
		}
	})
}

func FuzzTCP(f *testing.F) {
	_, byProto := seeds(f)
	for _, p := range byProto[wire.ProtoTCP] {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := wire.ParseTCP(b)
		if err != nil {
			if !isWireError(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		_, _ = h.Payload(), h.VerifyChecksum(src4, dst4)
		var o wire.TCPOptions
		if err := h.ParseOptions(&o); err != nil {
			if !isWireError(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if o.NumSACK < 0 || o.NumSACK > wire.MaxSACKBlocks {
			t.Fatalf("NumSACK %d", o.NumSACK)
		}
		// What parsed re-encodes and parses back to the same options (SACK blocks may
		// be dropped when they no longer fit beside the others).
		buf := make([]byte, 40)
		n := o.Encode(buf)
		if n != o.EncodedLen() || n > 40 || n%4 != 0 {
			t.Fatalf("Encode %d, EncodedLen %d", n, o.EncodedLen())
		}
		var o2 wire.TCPOptions
		if err := wire.ParseTCPOptions(buf[:n], &o2); err != nil {
			t.Fatalf("re-encoded options rejected: %v", err)
		}
		if o2.NumSACK > o.NumSACK || !sackPrefix(o2, o) {
			t.Fatal("SACK blocks changed")
		}
		o2.NumSACK, o2.SACK, o.NumSACK, o.SACK = 0, [4]wire.SACKBlock{}, 0, [4]wire.SACKBlock{}
		if o2 != o {
			t.Fatalf("round trip: %+v != %+v", o2, o)
		}
	})
}

func sackPrefix(a, b wire.TCPOptions) bool {
	for i := 0; i < a.NumSACK; i++ {
		if a.SACK[i] != b.SACK[i] {
			return false
		}
	}
	return true
}

func FuzzUDP(f *testing.F) {
	_, byProto := seeds(f)
	for _, p := range byProto[wire.ProtoUDP] {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := wire.ParseUDP(b)
		if err != nil {
			if !isWireError(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(h) != h.Length() || len(h.Payload()) != h.Length()-8 {
			t.Fatal("length")
		}
		_ = h.VerifyChecksum(src6, dst6)
		c := append([]byte(nil), h...)
		wire.SetUDPChecksum(c, src6, dst6)
		if !wire.UDP(c).VerifyChecksum(src6, dst6) {
			t.Fatal("SetUDPChecksum does not verify")
		}
	})
}

func FuzzICMPv4(f *testing.F) {
	_, byProto := seeds(f)
	for _, p := range byProto[wire.ProtoICMPv4] {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := wire.ParseICMPv4(b)
		if err != nil && !isWireError(err) {
			t.Fatalf("untyped error %v", err)
		}
		if err == nil {
			_, _, _, _, _, _ = m.Type(), m.Code(), m.ID(), m.Seq(), m.MTU(), m.Pointer()
			_, _ = m.IsError(), m.Payload()
			if m.IsError() {
				if q, err := wire.ParseIPv4Quote(m.Payload()); err == nil {
					_ = q.Payload()
				}
			}
		}
		if len(b) >= 8 {
			c := append([]byte(nil), b...)
			wire.SetICMPv4Checksum(c)
			if _, err := wire.ParseICMPv4(c); err != nil {
				t.Fatalf("after SetICMPv4Checksum: %v", err)
			}
			if !bytes.Equal(c[4:], b[4:]) {
				t.Fatal("SetICMPv4Checksum changed the body")
			}
		}
	})
}

func FuzzICMPv6(f *testing.F) {
	_, byProto := seeds(f)
	for _, p := range byProto[wire.ProtoICMPv6] {
		f.Add(p)
	}
	lo := netip.IPv6Loopback()
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := wire.ParseICMPv6(b, lo, lo)
		if err != nil && !isWireError(err) {
			t.Fatalf("untyped error %v", err)
		}
		if err == nil {
			_, _, _, _, _, _ = m.Type(), m.Code(), m.ID(), m.Seq(), m.MTU(), m.Pointer()
			_, _ = m.IsError(), m.Payload()
		}
		if len(b) >= 8 {
			c := append([]byte(nil), b...)
			wire.SetICMPv6Checksum(c, src6, dst6)
			if _, err := wire.ParseICMPv6(c, src6, dst6); err != nil {
				t.Fatalf("after SetICMPv6Checksum: %v", err)
			}
		}
	})
}
