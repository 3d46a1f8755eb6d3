package forward

import (
	"errors"
	"io"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errWouldBlock is what an fdReader's Read returns when the socket has nothing more now.
var errWouldBlock = errors.New("forward: would block")

// fdReader reads a host socket without blocking, and waits for it to become readable
// without reading, so that a copy takes its buffer only when there is data for it.
type fdReader struct {
	rc     syscall.RawConn
	stream bool // TCP: a read of 0 bytes is the end of the stream
	p      []byte
	n      int
	err    error
	peek   [1]byte
	inq    int32
	total  int64                           // bytes read: past bulkBytes, Len stops asking the kernel
	count  interface{ Add(uint64) uint64 } // bytes read, if not nil
	readFn func(fd uintptr) bool           // made once: a closure per call would allocate
	waitFn func(fd uintptr) bool
	lenFn  func(fd uintptr)
	// idle, if set, runs once per wait when the socket turns out to have nothing, before
	// the wait parks in the poller: the copy to the namespace releases its cork there.
	idle  func()
	idled bool
}

// rawConn is c's descriptor for raw reads and writes: ErrUnsupported unless c is a
// syscall.Conn (a *net.TCPConn or *net.UDPConn of the host's).
func rawConn(c any) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// newFDReader returns a reader of c's socket; stream for TCP.
func newFDReader(c any, stream bool) (*fdReader, error) {
	rc, err := rawConn(c)
	if err != nil {
		return nil, err
	}
	r := &fdReader{rc: rc, stream: stream}
	r.readFn = r.read
	r.waitFn = r.poll
	r.lenFn = r.ioctlInq
	return r, nil
}

// rawRead is read(2) as a raw system call, without telling the scheduler: the host
// sockets are non-blocking (the runtime's poller waits for them), so it never blocks,
// and a bulk copy that enters the scheduler's system-call state thousands of times a
// second keeps the runtime's monitor (sysmon) waking every 20 µs to retake the P (see
// link/tun's writev). The peek and SIOCINQ below are raw for the same reason.
func rawRead(fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func (r *fdReader) read(fd uintptr) bool {
	for {
		n, err := rawRead(fd, r.p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			r.n, r.err = 0, errWouldBlock
		case err != nil:
			r.n, r.err = 0, err
		case n == 0 && r.stream && len(r.p) > 0:
			r.n, r.err = 0, io.EOF
		case r.stream && n < len(r.p):
			// Short: the socket had no more (or hardly any) just now. Saying so saves
			// the read that would find it empty; wait's peek tells for sure.
			r.n, r.err = n, errWouldBlock
		default:
			r.n, r.err = n, nil
		}
		return true
	}
}

// poll reports readiness: a peek at one byte (MSG_PEEK|MSG_DONTWAIT) that would block
// sends RawConn.Read to wait for the poller; data, the end of the stream or a pending
// error end the wait. The error of a peek (a UDP socket's ICMP error) is the socket's
// pending error, consumed by it: wait returns it.
func (r *fdReader) poll(fd uintptr) bool {
	for {
		_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&r.peek[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if r.idle != nil && !r.idled {
				// Nothing now: what the caller held back goes before we sleep, and
				// a second look follows, as data may have come meanwhile.
				r.idled = true
				r.idle()
				continue
			}
			return false
		case 0:
			r.err = nil
		default:
			r.err = e
		}
		return true
	}
}

// Read reads what the socket has now into p: errWouldBlock when it has nothing.
func (r *fdReader) Read(p []byte) (int, error) {
	r.p = p
	err := r.rc.Read(r.readFn)
	r.p = nil
	if err != nil {
		return 0, err
	}
	if r.n > 0 {
		r.total += int64(r.n)
		if r.count != nil {
			r.count.Add(uint64(r.n))
		}
	}
	return r.n, r.err
}

// bulkBytes: a flow that has carried this much is a bulk transfer, whose send buffer
// grows to its limit anyway.
const bulkBytes = 1 << 20

func (r *fdReader) ioctlInq(fd uintptr) {
	r.inq = 0
	syscall.RawSyscall(syscall.SYS_IOCTL, fd, unix.SIOCINQ, uintptr(unsafe.Pointer(&r.inq)))
}

// Len is how many bytes the socket has to read now (SIOCINQ): tcp.Conn.ReadFrom sizes
// its send buffer by it.
func (r *fdReader) Len() int {
	if r.total >= bulkBytes {
		return bulkBytes
	}
	if r.rc.Control(r.lenFn) != nil {
		return 0
	}
	return int(r.inq)
}

// wait blocks until the socket is readable (or has an error, returned).
func (r *fdReader) wait() error {
	r.err, r.idled = nil, false
	if err := r.rc.Read(r.waitFn); err != nil {
		return err
	}
	return r.err
}

// fdWriter writes a host socket with raw system calls (see rawRead), waiting in the
// runtime's poller when the socket's buffer is full, as net.Conn's Write does.
type fdWriter struct {
	rc      syscall.RawConn
	p       []byte
	n       int
	err     error
	writeFn func(fd uintptr) bool // made once: a closure per call would allocate
}

// newFDWriter returns a writer of c's socket.
func newFDWriter(c any) (*fdWriter, error) {
	rc, err := rawConn(c)
	if err != nil {
		return nil, err
	}
	w := &fdWriter{rc: rc}
	w.writeFn = w.write
	return w, nil
}

func (w *fdWriter) write(fd uintptr) bool {
	for len(w.p) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(w.p))), uintptr(len(w.p)))
		switch e {
		case 0:
			w.n += int(n)
			w.p = w.p[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the socket's buffer is full: wait in the poller
		default:
			w.err = e
			return true
		}
	}
	return true
}

// Write writes all of p, blocking while the socket's buffer is full.
func (w *fdWriter) Write(p []byte) (int, error) {
	w.p, w.n, w.err = p, 0, nil
	err := w.rc.Write(w.writeFn)
	w.p = nil
	if err == nil {
		err = w.err
	}
	return w.n, err
}
