package sock

import (
	"syscall"

	"github.com/berthnet/berth/tcp"
)

// Urgent data as a Linux socket without SO_OOBINLINE reads it (berth's TCP delivers the
// urgent byte inline and reports the mark, tcp.Conn.UrgentMark): recv stops at the
// urgent mark after what it copied, and one that starts at the mark skips the urgent
// byte, which is out of band (Linux's tcp_recvmsg); splice stops at the mark and returns
// 0 there while data is queued (tcp_read_sock, tcp_splice_read: "we do not want to
// loop", tcp/splice/tcp_splice_loop_test.pkt).

// readMarked is one step of recv(2): total bytes were copied by earlier steps of the call.
func readMarked(c *tcp.Conn, b []byte, peek bool, total int) (int, error) {
	mark, ok := c.UrgentMark()
	if ok && mark == 0 && total == 0 && !peek && len(b) > 0 && c.Readiness().RecvQueued > 0 {
		var oob [1]byte
		if _, err := c.ReadNonblock(oob[:], false); err != nil {
			return 0, err
		}
		mark, ok = c.UrgentMark()
	}
	if ok && mark < len(b) && (mark > 0 || total > 0) {
		b = b[:mark] // at the mark after copying: the call returns what it has
	}
	return c.ReadNonblock(b, peek)
}

// maxSplice is the most one splice(2) moves: a pipe's default capacity (16 pages).
const maxSplice = 65536

// Splice is splice(2) from socket fd to a pipe, the direction packetdrill's scripts take:
// it moves up to n bytes (as many as room, the pipe's free space, allows) through out,
// which writes them to the pipe. It waits for data as recv does (the socket's O_NONBLOCK
// and SO_RCVTIMEO), returns 0 at end of stream and at the urgent mark.
func (h *Host) Splice(fd, n, room int, out func([]byte) (int, error)) (int, syscall.Errno) {
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return -1, e
	}
	s.mu.Lock()
	c, nonblock, opened, o := s.conn, s.nonblock, s.opened, s.o
	s.mu.Unlock()
	if !opened || c == nil {
		return -1, syscall.ENOTCONN
	}
	if n = min(n, maxSplice, room); n <= 0 {
		if room <= 0 {
			return -1, syscall.EAGAIN // a full pipe: nothing in virtual time drains it
		}
		return 0, 0
	}
	buf := make([]byte, n)
	return h.transfer(nonblock, h.deadline(o.rcvtimeo), func(int) (int, bool, error) {
		mark, ok := c.UrgentMark()
		queued := c.Readiness().RecvQueued
		if ok && mark == 0 && queued > 0 {
			return 0, true, nil
		}
		b := buf
		if ok && mark < len(b) && mark > 0 {
			b = b[:mark]
		}
		// Peek, then take what the pipe took: nothing is lost if the write fails.
		m, err := c.ReadNonblock(b, true)
		if err != nil || m == 0 {
			return 0, err == nil, err
		}
		w, err := out(b[:m])
		if w <= 0 {
			if err == nil {
				err = syscall.EAGAIN
			}
			return 0, false, err
		}
		if _, err := c.ReadNonblock(b[:w], false); err != nil {
			return 0, false, err
		}
		return w, true, nil
	})
}
