package tcp

import (
	"syscall"

	"github.com/berthnet/berth/wire"
)

// Send-side socket features of Linux's TCP: TCP_NOTSENT_LOWAT and MSG_EOR (MSG_MORE and
// TCP_CORK are in cork.go).
//
// TCP_NOTSENT_LOWAT bounds the data queued but not yet sent, so that an application that
// writes ahead of the network keeps its data (and its choice of what to send next) to
// itself instead of in the send buffer. As Linux's tcp_sendmsg, a write fills its data in
// chunks of the size a segment burst takes (the send "size goal", tcp_xmit_size_goal): it
// may always finish the unsent chunk it began, and begins a new one only while less than
// the mark is unsent (tcp_stream_memory_free). poll reports writable only when less than
// half the mark is unsent (tcp_poll's __sk_stream_is_writeable(sk, 1)), so that a writer
// is not woken for every ACK.
//
// MSG_EOR ends a record: data written after it never shares a segment with the record's
// data, neither when first sent nor when retransmitted (Linux's tcp_skb_can_collapse_to:
// the skb that ends a record takes no more data and is never collapsed).

// SetNotSentLowat sets TCP_NOTSENT_LOWAT: writes queue new data only while fewer than n
// bytes are unsent, and Readiness reports the connection writable only while fewer than
// n/2 are. 0 returns to Config.NotSentLowat (tcp_notsent_lowat); a negative n is EINVAL.
func (c *Conn) SetNotSentLowat(n int) error {
	if n < 0 {
		return syscall.EINVAL
	}
	return c.setOpt(func() {
		c.lowat = n
		c.cond.Broadcast() // a higher mark may let a blocked writer go on (Linux's sk_write_space)
	})
}

// NotSentLowat returns the TCP_NOTSENT_LOWAT set with SetNotSentLowat (0 if none: the
// connection then follows Config.NotSentLowat), as getsockopt reports it.
func (c *Conn) NotSentLowat() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lowat
}

// MsgFlags are the flags of WriteMsg and WriteMsgNonblock, as send(2)'s.
type MsgFlags uint8

const (
	// MsgMore is MSG_MORE: more data follows, so a partial last segment of this write
	// waits for it (see WriteMore).
	MsgMore MsgFlags = 1 << iota
	// MsgEOR is MSG_EOR: the write ends a record; no segment carries both its last byte
	// and data written later, retransmissions included.
	MsgEOR
)

// WriteMsg is Write with send(2)'s flags: MsgMore (as WriteMore) and MsgEOR. The record
// ends after the last byte of b, once all of b is queued.
func (c *Conn) WriteMsg(b []byte, flags MsgFlags) (int, error) {
	return c.writeMsg(b, flags&MsgMore != 0, flags&MsgEOR != 0)
}

// WriteMsgNonblock is WriteNonblock with send(2)'s flags (see WriteMsg). With MsgEOR the
// record ends only if all of b was queued: a caller that writes the rest later passes
// MsgEOR again then, as a blocking send(2) ends the record after its last byte.
func (c *Conn) WriteMsgNonblock(b []byte, flags MsgFlags) (int, error) {
	return c.writeNonblockMsg(b, flags&MsgMore != 0, flags&MsgEOR != 0)
}

// notSentLowat is the mark in force: the connection's, else the stack's; 0 for none.
func (c *Conn) notSentLowat() int {
	if c.lowat > 0 {
		return c.lowat
	}
	return max(c.p.cfg.NotSentLowat, 0)
}

// notSent is the data queued and never sent (Linux's write_seq - snd_nxt: SND.MAX, not
// SND.NXT, which a timeout moves back).
func (s *sender) notSent() int {
	if bufEnd := s.sndUna + uint32(s.sndBuf.n); seqLT(s.sndMax, bufEnd) {
		return int(bufEnd - s.sndMax)
	}
	return 0
}

// lowatWritable reports whether the mark lets poll report the connection writable.
func (c *Conn) lowatWritable() bool {
	l := c.notSentLowat()
	return l <= 0 || 2*c.notSent() < l
}

// sizeGoal is how much data Linux's tcp_sendmsg puts in one skb: the largest super-segment
// (64 KB), at most half the largest window the peer offered (tcp_bound_to_half_wnd), in
// whole segments.
func (c *Conn) sizeGoal() int {
	goal := 65536 - 1 - wire.TCPMinHeaderLen - tsOptLen - c.sackOptLen()
	cut := int(c.maxSndWnd)
	if cut > 536 {
		cut /= 2
	}
	if cut > 0 && goal > cut {
		goal = cut
	}
	return max(goal/c.mss*c.mss, c.mss)
}

// queue appends up to space bytes of b to the send buffer and sends what the windows let
// go; it returns how many it took, and 0 only when TCP_NOTSENT_LOWAT holds the write back.
func (c *Conn) queue(b []byte, space int) int {
	lowat := c.notSentLowat()
	if lowat <= 0 {
		k := min(space, len(b))
		c.appendSnd(b[:k])
		c.output()
		return k
	}
	n := 0
	for n < len(b) && space > 0 {
		k := min(c.lowatRoom(lowat), space, len(b)-n)
		if k <= 0 {
			break
		}
		c.appendSnd(b[n : n+k])
		n += k
		space -= k
		c.output()
	}
	return n
}

// lowatRoom is what a write may append now under the mark lowat: the rest of the unsent
// chunk being filled (a chunk whose head went out is what is left of it, as Linux's
// tso_fragment leaves the unsent part as the tail skb), or, while less than lowat is
// unsent, a new chunk of sizeGoal.
func (c *Conn) lowatRoom(lowat int) int {
	bufEnd := c.sndUna + uint32(c.sndBuf.n)
	goal := c.sizeGoal()
	closed := len(c.eor) > 0 && c.eor[len(c.eor)-1] == bufEnd // a record ends the tail
	if ns := c.notSent(); ns > 0 && !closed {
		start := c.lowChunk
		if seqLT(start, c.sndMax) {
			start = c.sndMax
		}
		if fill := goal - int(bufEnd-start); fill > 0 {
			return fill
		}
	}
	if c.notSent() >= lowat {
		return 0
	}
	c.lowChunk = bufEnd
	return goal
}

// appendSnd copies b to the end of the send buffer, which has room for it.
func (c *Conn) appendSnd(b []byte) {
	c.sndBuf.reserve(c.sndBuf.n+len(b), c.sndBufMax, c.sndBuf.n)
	c.sndBuf.writeAt(b, c.sndBuf.n)
	c.sndBuf.n += len(b)
	c.chronoStart(chronoBusy)
}

// markEOR ends a record after the data queued so far.
func (c *Conn) markEOR() {
	end := c.sndUna + uint32(c.sndBuf.n)
	if c.sndBuf.n == 0 || (len(c.eor) > 0 && c.eor[len(c.eor)-1] == end) {
		return
	}
	c.eor = append(c.eor, end)
}

// eorLimit is how many bytes a segment at seq may carry before a record ends; 0 if no
// record end lies ahead.
func (s *sender) eorLimit(seq uint32) int {
	for _, e := range s.eor {
		if seqGT(e, seq) {
			return int(e - seq)
		}
	}
	return 0
}

// eorAcked drops the record ends the peer has acknowledged.
func (s *sender) eorAcked() {
	k := 0
	for k < len(s.eor) && seqLEQ(s.eor[k], s.sndUna) {
		k++
	}
	if k > 0 {
		s.eor = s.eor[:copy(s.eor, s.eor[k:])]
	}
}
