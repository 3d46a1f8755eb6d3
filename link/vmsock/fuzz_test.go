//go:build linux

package vmsock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// parseAll runs the parser over b as readStream does when the bytes arrive in pieces cut
// at the offsets in cuts: frames complete in what has arrived are taken, the rest waits
// for more. It returns the frames (copied), the runts skipped, and the error that ended
// the stream.
func parseAll(b []byte, cuts []int, maxFrame int) ([][]byte, uint64, error) {
	p := streamParser{maxFrame: maxFrame}
	var out [][]byte
	var pending []byte
	prev := 0
	for _, c := range append(cuts, len(b)) {
		if c < prev || c > len(b) {
			continue
		}
		pending = append(pending, b[prev:c]...)
		prev = c
		for {
			batch := make([][]byte, 0, 3)
			n, err := p.parse(pending, &batch, 3) // small batches: the loop in readStream
			for _, f := range batch {
				out = append(out, append([]byte(nil), f...))
			}
			pending = pending[n:]
			if err != nil {
				return out, p.runts, err
			}
			if len(batch) < 3 {
				break
			}
		}
	}
	return out, p.runts, nil
}

// FuzzStream feeds arbitrary bytes as QEMU's stream framing from a hostile peer: no
// panic; every frame delivered is 14..maxFrame bytes and is what the bytes held; the
// result does not depend on how the bytes were cut into reads; a length field over the
// largest frame ends the stream with ErrBadLength.
func FuzzStream(f *testing.F) {
	seed := func(fs ...[]byte) []byte {
		var b []byte
		for _, x := range fs {
			b = binary.BigEndian.AppendUint32(b, uint32(len(x)))
			b = append(b, x...)
		}
		return b
	}
	f.Add(seed(make([]byte, 60), make([]byte, 14)), uint16(3))
	f.Add(seed(make([]byte, 5), make([]byte, 0), make([]byte, 100)), uint16(70))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0}, uint16(2))
	f.Add(append(seed(make([]byte, 20)), 0, 0, 0x06), uint16(1))
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		const maxFrame = 1500 + EthHdrLen + vlanTagLen
		whole, runts, err := parseAll(b, nil, maxFrame)
		pieces, runts2, err2 := parseAll(b, []int{int(cut) % (len(b) + 1)}, maxFrame)
		if len(whole) != len(pieces) || runts != runts2 || (err == nil) != (err2 == nil) {
			t.Fatalf("whole: %d frames %d runts %v; in two pieces: %d frames %d runts %v", len(whole), runts, err, len(pieces), runts2, err2)
		}
		// Walk the bytes independently and compare.
		off, i := 0, 0
		for off+4 <= len(b) {
			n := int(binary.BigEndian.Uint32(b[off:]))
			if n > maxFrame {
				if !errors.Is(err, ErrBadLength) {
					t.Fatalf("length %d at %d: err %v", n, off, err)
				}
				return
			}
			if off+4+n > len(b) {
				break
			}
			if n >= EthHdrLen {
				if i >= len(whole) || !bytes.Equal(whole[i], b[off+4:off+4+n]) || !bytes.Equal(pieces[i], whole[i]) {
					t.Fatalf("frame %d at %d (%d bytes) not delivered as sent", i, off, n)
				}
				i++
			}
			off += 4 + n
		}
		if err != nil || i != len(whole) {
			t.Fatalf("%d frames expected, %d delivered, err %v", i, len(whole), err)
		}
	})
}
