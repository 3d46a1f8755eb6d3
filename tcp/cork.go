package tcp

// TCP_CORK and MSG_MORE (Linux's): while corked, only full segments go out; what is left
// waits for more data, the cork's removal, TCP_NODELAY, or the persist timer (which sends
// it after an RTO, as Linux's probe timer does). A write with MSG_MORE corks until the
// next write without it; such data is not marked PSH.

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
// waits for it; the next write without MSG_MORE releases it.
func (c *Conn) WriteMore(b []byte, more bool) (int, error) { return c.write(b, more) }

// WriteNonblockMore is WriteNonblock with MSG_MORE when more (see WriteMore).
func (c *Conn) WriteNonblockMore(b []byte, more bool) (int, error) {
	return c.writeNonblock(b, more)
}
