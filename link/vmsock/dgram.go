//go:build linux

package vmsock

import (
	"bytes"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendDgram sends one frame as one datagram to the peer without blocking; false: there
// is no peer yet, or its queue is full (a datagram link loses frames, as a wire does).
func (k *conn) sendDgram(h, f []byte) bool {
	to := k.e.peer.Load()
	if to == nil {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return false
	}
	if len(h) > 0 {
		// One datagram is one frame: join header and packet (WriteFrames).
		if k.join == nil {
			k.join = make([]byte, 0, k.e.maxFrame)
		}
		k.join = append(append(k.join[:0], h...), f...)
		f = k.join
	}
	for {
		err := unix.Sendto(k.fd, f, unix.MSG_DONTWAIT, to)
		if err == unix.EINTR {
			continue
		}
		return err == nil
	}
}

// readDgrams reads datagrams until the socket closes: up to batchSize per wake-up, each
// one frame. A datagram longer than the largest frame is dropped (MSG_TRUNC tells its
// real length); a runt too.
func (k *conn) readDgrams() error {
	e := k.e
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, e.maxFrame)
	}
	sizes := make([]int, batchSize)
	batch := make([][]byte, 0, batchSize)
	var from unix.RawSockaddrUnix
	var n int
	var rerr error
	read := func(fd uintptr) bool {
		for n < batchSize {
			fromLen := uint32(unsafe.Sizeof(from))
			b := bufs[n]
			// recvfrom(2) directly: unix.Recvfrom returns the source as a new Sockaddr,
			// an allocation per datagram.
			r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
				unix.MSG_TRUNC|unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&from)), uintptr(unsafe.Pointer(&fromLen)))
			switch errno {
			case 0:
			case unix.EAGAIN:
				return n > 0
			case unix.EINTR:
				continue
			default:
				rerr = errno
				return true
			}
			m := int(r)
			switch {
			case m > len(b):
				e.rxTooLong.Add(1)
				e.rxDropped.Add(1)
				continue
			case m < EthHdrLen:
				e.rxRunt.Add(1)
				e.rxDropped.Add(1)
				continue
			}
			k.learnPeer(&from, fromLen)
			sizes[n] = m
			n++
		}
		return true
	}
	for {
		n, rerr = 0, nil
		if err := k.rc.Read(read); err != nil {
			return nil // closed
		}
		batch = batch[:0]
		for i := 0; i < n; i++ {
			batch = append(batch, bufs[i][:sizes[i]])
		}
		e.deliver(batch)
		if rerr != nil {
			return &net.OpError{Op: "read", Net: "unixgram", Err: os.NewSyscallError("recvfrom", rerr)}
		}
	}
}

// learnPeer makes the source of a received datagram the destination of frames, unless a
// peer was given or it is unchanged; an unbound sender has no address to answer.
func (k *conn) learnPeer(from *unix.RawSockaddrUnix, fromLen uint32) {
	const pathOff = uint32(unsafe.Offsetof(from.Path))
	if fromLen <= pathOff || k.e.fixedPeer {
		return
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&from.Path[0])), fromLen-pathOff)
	if i := bytes.IndexByte(raw, 0); i >= 0 && raw[0] != 0 {
		raw = raw[:i] // a path; an abstract name (raw[0] == 0) keeps its length
	}
	if len(raw) == 0 {
		return
	}
	if cur := k.e.peer.Load(); cur != nil && sameName(cur.Name, raw) {
		return
	}
	name := string(raw)
	if name[0] == 0 {
		name = "@" + name[1:] // x/sys/unix spells abstract names with a leading @
	}
	k.e.peer.Store(&unix.SockaddrUnix{Name: name})
}

// sameName reports whether name (as x/sys/unix spells it) is the raw address raw.
func sameName(name string, raw []byte) bool {
	if raw[0] == 0 {
		// The compiler compares against string(b) without making the string.
		return len(name) == len(raw) && name[0] == '@' && name[1:] == string(raw[1:])
	}
	return name == string(raw)
}
