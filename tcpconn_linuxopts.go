package berth

import "github.com/berthnet/berth/tcp"

// Linux's TCP socket options that berth's TCP has (issue 18), on TCPConn. Each behaves as
// the option does on Linux; the packetdrill suite in conformance/ checks them against it.

// SetCork sets TCP_CORK: while on, only full segments are sent; turning it off sends the
// rest.
func (c *TCPConn) SetCork(on bool) error { return c.setErr("setsockopt", c.c.SetCork(on)) }

// WriteMore writes b as send(2) with MSG_MORE when more: a partial last segment is not
// sent by this write; the next write without MSG_MORE sends it, or an ACK does when
// Nagle's algorithm and TCP_CORK do not hold it (as on Linux).
func (c *TCPConn) WriteMore(b []byte, more bool) (int, error) {
	n, err := c.c.WriteMore(b, more)
	return n, c.opErr("write", "write", err)
}

// SetNotSentLowat sets TCP_NOTSENT_LOWAT: writes queue new data only while fewer than n
// bytes are unsent, so that a writer ahead of the network blocks (or, non-blocking, gets
// EAGAIN) instead of filling the send buffer; 0 returns to the stack's default
// (tcp.Config.NotSentLowat).
func (c *TCPConn) SetNotSentLowat(n int) error {
	return c.setErr("setsockopt", c.c.SetNotSentLowat(n))
}

// WriteEOR writes b as send(2) with MSG_EOR: b ends a record, and no segment carries both
// its last byte and data written later, retransmissions included.
func (c *TCPConn) WriteEOR(b []byte) (int, error) {
	n, err := c.c.WriteMsg(b, tcp.MsgEOR)
	return n, c.opErr("write", "write", err)
}
