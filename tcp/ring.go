package tcp

// ring is a growable circular byte buffer. The send side keeps unacknowledged and unsent
// bytes in it; the receive side keeps in-order bytes not yet read (n of them from head)
// followed by out-of-order bytes at their offsets, so reassembly needs no other memory.
// It grows by doubling up to a limit and never shrinks while in use, so the steady state
// allocates nothing.
type ring struct {
	buf  []byte
	head int
	n    int // readable bytes from head
}

// reserve makes room for offsets [0, need) from head, keeping the first keep bytes;
// need must not exceed limit.
func (r *ring) reserve(need, limit, keep int) {
	if need <= len(r.buf) {
		return
	}
	c := max(2*len(r.buf), 1024)
	for c < need {
		c *= 2
	}
	// At most the limit, rounded up to a power of two: when auto-tuning raises the limit
	// in small steps the ring still grows by doubling, not by a copy per step.
	c = min(c, pow2Ceil(limit))
	nb := make([]byte, c)
	if keep > 0 {
		r.readAt(nb[:keep], 0)
	}
	r.buf, r.head = nb, 0
}

// readAt copies len(p) bytes from offset off after head; off+len(p) <= len(r.buf).
func (r *ring) readAt(p []byte, off int) {
	if len(p) == 0 {
		return
	}
	i := r.head + off
	if i >= len(r.buf) {
		i -= len(r.buf)
	}
	k := copy(p, r.buf[i:])
	if k < len(p) {
		copy(p[k:], r.buf)
	}
}

// writeAt copies p to offset off after head; off+len(p) <= len(r.buf).
func (r *ring) writeAt(p []byte, off int) {
	if len(p) == 0 {
		return
	}
	i := r.head + off
	if i >= len(r.buf) {
		i -= len(r.buf)
	}
	k := copy(r.buf[i:], p)
	if k < len(p) {
		copy(r.buf, p[k:])
	}
}

// slices returns the bytes at offsets [off, off+n) after head in place: one slice, or two
// where they wrap around the end of the buffer; off+n <= len(r.buf).
func (r *ring) slices(off, n int) (a, b []byte) {
	if n == 0 {
		return nil, nil
	}
	i := r.head + off
	if i >= len(r.buf) {
		i -= len(r.buf)
	}
	if i+n <= len(r.buf) {
		return r.buf[i : i+n], nil
	}
	return r.buf[i:], r.buf[:n-(len(r.buf)-i)]
}

// consume drops k bytes from the front.
func (r *ring) consume(k int) {
	if k == 0 {
		return
	}
	r.head += k
	if r.head >= len(r.buf) {
		r.head -= len(r.buf)
	}
	r.n -= k
}

func (r *ring) free() { *r = ring{} }

func pow2Ceil(n int) int {
	c := 1024
	for c < n {
		c *= 2
	}
	return c
}
