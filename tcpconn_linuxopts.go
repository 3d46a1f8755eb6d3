package berth

// Linux's TCP socket options that berth's TCP has (issue 18), on TCPConn. Each behaves as
// the option does on Linux; the packetdrill suite in conformance/ checks them against it.

// SetCork sets TCP_CORK: while on, only full segments are sent; turning it off sends the
// rest.
func (c *TCPConn) SetCork(on bool) error { return c.setErr("setsockopt", c.c.SetCork(on)) }

// WriteMore writes b as send(2) with MSG_MORE when more: a partial last segment waits for
// the next write (without MSG_MORE) instead of going out now.
func (c *TCPConn) WriteMore(b []byte, more bool) (int, error) {
	n, err := c.c.WriteMore(b, more)
	return n, c.opErr("write", "write", err)
}
