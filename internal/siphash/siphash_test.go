package siphash

import "testing"

func TestSum64(t *testing.T) {
	// Reference vectors from the SipHash paper, appendix A (key 00..0f, message 00..0e),
	// and the reference implementation's vectors for the empty and an 8-byte message.
	key0, key1 := uint64(0x0706050403020100), uint64(0x0f0e0d0c0b0a0908)
	msg := make([]byte, 15)
	for i := range msg {
		msg[i] = byte(i)
	}
	for _, c := range []struct {
		n    int
		want uint64
	}{{15, 0xa129ca6149be45e5}, {0, 0x726fdb47dd0e0e31}, {8, 0x93f5f5799a932462}} {
		if got := Sum64(key0, key1, msg[:c.n]); got != c.want {
			t.Errorf("SipHash-2-4 of %d bytes = %#x, want %#x", c.n, got, c.want)
		}
	}
}
