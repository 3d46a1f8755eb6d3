package tcp

// TCP_CORK and MSG_MORE (Linux's): while corked, only full segments go out; what is left
// waits for more data, the cork's removal, TCP_NODELAY, or the persist timer (which sends
// it after an RTO, as Linux's probe timer does). A write with MSG_MORE corks its own
// output only (Linux's tcp_push with TCP_NAGLE_CORK for the call): an ACK later sends what
// it left by the socket's Nagle and cork settings. Data written with MSG_MORE is not
// marked PSH until a write without it.

// SetCork sets TCP_CORK. Removing the cork sends what waited.
func (c *Conn) SetCork(on bool) error {
	return c.setOpt(func() {
		c.cork = on
		if !on {
			c.output()
		}
	})
}

// WriteMore is Write with MSG_MORE when more: more data follows, so a partial segment
// is not sent by this write; the next write without MSG_MORE releases it, and so does an
// ACK when Nagle's algorithm (SetNoDelay(false) with data in flight) and TCP_CORK do not
// hold it.
func (c *Conn) WriteMore(b []byte, more bool) (int, error) { return c.writeMsg(b, more, false) }

// WriteNonblockMore is WriteNonblock with MSG_MORE when more (see WriteMore).
func (c *Conn) WriteNonblockMore(b []byte, more bool) (int, error) {
	return c.writeNonblockMsg(b, more, false)
}
