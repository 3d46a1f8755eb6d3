package wire

import "testing"

func TestIPv4BadOption(t *testing.T) {
	for _, tc := range []struct {
		opts []byte
		want int
	}{
		{nil, -1},
		{[]byte{1, 1, 1, 0}, -1},
		{[]byte{0x07, 3, 4, 0}, -1},
		{[]byte{0x07, 4, 4, 0}, -1},
		{[]byte{0, 0x44, 0, 0}, -1}, // after EOL nothing counts
		{[]byte{0x44, 0, 0, 0}, 20},
		{[]byte{0x44, 1, 0, 0}, 20},
		{[]byte{0x07, 5, 4, 0}, 20},
		{[]byte{1, 1, 1, 0x07}, 23},
		{[]byte{1, 0x07, 3, 4, 0x44, 0, 0, 0}, 24},
	} {
		h := make([]byte, 20+len(tc.opts))
		h[0] = 0x40 | byte(len(h)/4)
		copy(h[20:], tc.opts)
		if got := IPv4(h).BadOption(); got != tc.want {
			t.Errorf("options %x: BadOption %d, want %d", tc.opts, got, tc.want)
		}
	}
}

func TestUnrecognizedIPv6Option(t *testing.T) {
	for _, tc := range []struct {
		hdr    []byte
		action uint8
		at     int
	}{
		{[]byte{59, 0, 1, 4, 0, 0, 0, 0}, 0, -1},      // PadN
		{[]byte{59, 0, 0, 0, 0, 0, 0, 0}, 0, -1},      // Pad1s
		{[]byte{59, 0, 0x1e, 2, 0, 0, 1, 0}, 0, -1},   // 00: skipped
		{[]byte{59, 0, 0, 0x5e, 1, 0, 1, 0}, 1, 3},    // 01 after a Pad1
		{[]byte{59, 0, 0x1e, 0, 0x9e, 0, 1, 0}, 2, 4}, // 10 after a skipped one
		{[]byte{59, 0, 0xde, 4, 0, 0, 0, 0}, 3, 2},    // 11
		{[]byte{59, 0, 0xc2, 4, 0, 1, 0, 0}, 3, 2},    // Jumbo Payload
		{[]byte{59, 0, 1, 0, 1, 0, 1, 0}, 0, -1},      // three PadN
		{[]byte{59, 0, 1, 0, 1, 0, 0, 0x9e}, 0, -1},   // a truncated last option is the walk's to refuse
	} {
		a, at := UnrecognizedIPv6Option(tc.hdr)
		if at != tc.at || (at >= 0 && a != tc.action) {
			t.Errorf("%x: action %d at %d, want %d at %d", tc.hdr, a, at, tc.action, tc.at)
		}
	}
}

func FuzzIPv6Options(f *testing.F) {
	f.Add([]byte{59, 0, 0x9e, 2, 0, 0, 1, 0})
	f.Add([]byte{59, 0, 0, 0, 0, 0xde})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, at := UnrecognizedIPv6Option(b); at >= len(b) || (at >= 0 && at < 2) {
			t.Fatalf("offset %d outside the options of %d bytes", at, len(b))
		}
		if len(b) >= 20 {
			b[0] = 0x40 | byte(min(len(b), 60)/4)
			if at := IPv4(b).BadOption(); at >= IPv4(b).HeaderLen() || (at >= 0 && at < 20) {
				t.Fatalf("BadOption %d outside the options", at)
			}
		}
	})
}

func TestUpperHeaderMin(t *testing.T) {
	for proto, want := range map[uint8]int{ProtoTCP: 20, ProtoUDP: 8, ProtoICMPv6: 8, ProtoNoNext: 0, 200: 1} {
		if got := UpperHeaderMin(proto); got != want {
			t.Errorf("UpperHeaderMin(%d) = %d, want %d", proto, got, want)
		}
	}
}
