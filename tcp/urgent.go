package tcp

import "github.com/berthnet/berth/wire"

// Urgent data (RFC 9293 §3.8.5, RFC 6093). berth delivers it inline, in the stream, as
// RFC 6093 §6 asks of implementations and applications that still meet it (SO_OOBINLINE
// on Linux); what TCP owes the user is the urgent pointer (RFC 9293 §3.10.7.4, sixth:
// "signal the user", MUST-31), which Conn.UrgentMark reports. A socket layer emulating
// Linux's default (urgent byte out of band) uses it to stop reads at the mark and skip
// the byte (conformance/sock: splice(2) stops at it, tcp/splice/tcp_splice_loop_test.pkt).

// urgentInput takes the urgent pointer of a segment about to be received, as Linux's
// tcp_check_urg: the pointer names the byte after the urgent one, as BSD and Linux
// (tcp_stdurg=0) read it, not RFC 1122's last urgent byte (RFC 6093 §3 and §4: every
// implementation in use does so); a pointer before RCV.NXT (a replay: that data came
// already) and one not beyond the pending mark are ignored (RCV.UP = max(RCV.UP,
// SEG.UP)). c.mu is held.
func (c *Conn) urgentInput(s *segment) {
	if s.flags&wire.TCPFlagURG == 0 {
		return
	}
	c.urgentRead()
	up := uint32(s.hdr.Urgent())
	if up > 0 {
		up--
	}
	mark := s.seq + up
	if seqLT(mark, c.rcvNxt) { // at or before what the reader has: this data came already
		return
	}
	if c.urgOn && !seqGT(mark, c.urgSeq) {
		return
	}
	c.urgSeq, c.urgOn = mark, true
}

// urgentRead forgets the urgent mark once the reader is past the urgent byte (Linux
// clears urg_data when copied_seq passes urg_seq). c.mu is held.
func (c *Conn) urgentRead() {
	if c.urgOn && seqGT(c.rcvNxt-uint32(c.rcvBuf.n), c.urgSeq) {
		c.urgOn = false
	}
}

// UrgentMark reports the peer's urgent pointer (RFC 9293 §3.8.5): with ok, n bytes can be
// read before the urgent byte (the last byte of the urgent data), which may not have
// arrived yet; n == 0 is Linux's SIOCATMARK. Read and ReadNonblock return the urgent byte
// in the stream like any other; the mark lasts until it has been read.
func (c *Conn) UrgentMark() (n int, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.urgentRead()
	if !c.urgOn {
		return 0, false
	}
	return int(c.urgSeq - (c.rcvNxt - uint32(c.rcvBuf.n))), true
}
