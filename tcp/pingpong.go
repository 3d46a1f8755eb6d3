package tcp

// Interactive ("ping-pong") mode, as Linux's: a connection that sends new data within the
// delayed-ACK timeout of receiving (or of the SYN-ACK that established it) is taken to be
// request/response, and its ACKs wait for the reply to carry them instead of going out at
// once in quick-ack mode (RFC 9293 §3.8.6.3 and RFC 1122 §4.2.3.2 allow the delay; Linux's
// tcp_event_data_sent, tcp_in_quickack_mode). The delayed-ACK timer firing with an ACK
// owed ends the mode: the reply did not come in time (Linux's tcp_delack_timer_handler).
// tcp/fastopen/client/blocking-sendto.pkt: "Ack is delayed until FIN".

// noteDataRcvd records when data (or the SYN-ACK) arrived; data arms the ACK timeout
// (Linux's icsk_ack.ato, zero until then, so that no send counts as a reply before).
// c.mu is held.
func (c *Conn) noteDataRcvd(data bool) {
	c.lastRcvd = c.now()
	if data {
		c.atoOn = true
	}
}

// SetWritePending tells the connection whether a writer waits for it to be established
// with data to send (Linux's sk_write_pending), as a socket layer that blocks its callers
// itself does. The SYN-ACK's ACK then waits for that data to carry it (or for the
// delayed-ACK timer), and the data counts as a reply (pingpong): Linux's
// tcp_rcv_synsent_state_process "saves one ACK" the same way.
func (c *Conn) SetWritePending(on bool) {
	c.mu.Lock()
	c.writePending = on
	c.mu.Unlock()
}

// noteDataSent enters interactive mode if new data goes out soon after data arrived.
// c.mu is held.
func (c *Conn) noteDataSent() {
	if !c.pingpong && c.atoOn && c.now().Sub(c.lastRcvd) < c.p.cfg.DelayedACK {
		c.pingpong = true
	}
}
