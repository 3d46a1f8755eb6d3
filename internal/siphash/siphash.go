// Package siphash is SipHash-2-4 (Aumasson and Bernstein, 2012), the keyed hash berth uses
// where a value must be unpredictable to an attacker who sees many of them: RFC 6056's
// ephemeral port offsets (ports) and TCP Fast Open cookies (tcp, RFC 7413 §4.1.2, as
// Linux computes them).
package siphash

import (
	"encoding/binary"
	"math/bits"
)

// Sum64 is SipHash-2-4 of p under the 128-bit key (k0, k1), each half read as a
// little-endian word as the reference implementation does.
func Sum64(k0, k1 uint64, p []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	compress := func(mm uint64) { // one message word, with SipHash-2-4's two rounds
		v3 ^= mm
		round()
		round()
		v0 ^= mm
	}
	n := len(p)
	for len(p) >= 8 {
		compress(binary.LittleEndian.Uint64(p))
		p = p[8:]
	}
	var last [8]byte
	copy(last[:], p)
	last[7] = byte(n)
	compress(binary.LittleEndian.Uint64(last[:]))
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}
