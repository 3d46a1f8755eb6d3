package tcp

// countDelivered adds to the count of segments the peer has acknowledged (Linux's
// tcp_info.tcpi_delivered, the delivery rate's numerator, RFC 9293 leaves it to the
// implementation): the SYN counts as one, data as the MSS-sized segments it was sent in.
// berth counts data when the cumulative ACK covers it (Linux counts SACKed segments when
// they are SACKed); the totals agree. c.mu is held.
func (c *Conn) countDelivered(syn bool, data int) {
	if syn {
		c.delivered++
	}
	if data > 0 {
		c.delivered += uint32((data + c.mss - 1) / max(c.mss, 1))
	}
}
