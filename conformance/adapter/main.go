//go:build packetdrill

// Command adapter is berth as a packetdrill shared object: built with
// `go build -buildmode=c-shared -tags packetdrill` and packetdrill's source directory on
// the include path (CGO_CFLAGS=-I...; see ../build.sh), it is loaded by
// `packetdrill --so_filename=adapter.so --so_flags="local=ADDR/LEN mtu=N"`. The socket calls
// go to package sock's Host over a berth stack on virtual time.
package main

/*
#include <stdint.h>
#include <poll.h>
#include <sys/uio.h>
#include <sys/socket.h>
*/
import "C"

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/berthnet/berth/conformance/sock"
)

func main() {}

var host *sock.Host

// parseFlags reads --so_flags: space-separated key=value pairs.
func parseFlags(s string) sock.Config {
	var cfg sock.Config
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "local":
			if p, err := netip.ParsePrefix(v); err == nil {
				cfg.Local = p
			}
		case "mtu":
			cfg.MTU, _ = strconv.Atoi(v)
		}
	}
	if !cfg.Local.IsValid() {
		cfg.Local = netip.MustParsePrefix("192.168.0.1/16")
	}
	// Each berth descriptor holds a real one of the same number (/dev/null, closed on
	// exec), so that packetdrill's own files never share a number with berth's sockets:
	// the shim's close and getsockopt answer for berth's and pass the rest on.
	cfg.Reserve = func() (int, error) {
		return syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	}
	cfg.Release = func(fd int) { syscall.Close(fd) }
	return cfg
}

func res(n int, e syscall.Errno) C.long {
	if e != 0 {
		return C.long(-int(e))
	}
	return C.long(n)
}

//export pdInit
func pdInit(flags *C.char) {
	host = sock.New(parseFlags(C.GoString(flags)))
}

//export pdCommand
func pdCommand(cmd *C.char) {
	if host != nil {
		host.Command(C.GoString(cmd))
	}
}

//export pdFree
func pdFree() {
	if host != nil {
		host.Close()
		host = nil
	}
}

//export pdIsFile
func pdIsFile(fd C.int) C.int {
	if host != nil && host.IsFile(int(fd)) {
		return 1
	}
	return 0
}

//export pdIsSocket
func pdIsSocket(fd C.int) C.int {
	if host != nil && host.IsSocket(int(fd)) {
		return 1
	}
	return 0
}

//export pdSocket
func pdSocket(domain, typ, proto C.int) C.long {
	return res(host.Socket(int(domain), int(typ), int(proto)))
}

// sockaddr decodes a struct sockaddr_in or sockaddr_in6.
func sockaddr(p unsafe.Pointer, n C.socklen_t) (netip.AddrPort, syscall.Errno) {
	if p == nil || n < 2 {
		return netip.AddrPort{}, syscall.EINVAL
	}
	b := unsafe.Slice((*byte)(p), int(n))
	fam := binary.NativeEndian.Uint16(b)
	switch {
	case fam == syscall.AF_INET && len(b) >= 8:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:])), 0
	case fam == syscall.AF_INET6 && len(b) >= 24:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), binary.BigEndian.Uint16(b[2:])), 0
	}
	return netip.AddrPort{}, syscall.EAFNOSUPPORT
}

//export pdBind
func pdBind(fd C.int, addr unsafe.Pointer, n C.socklen_t) C.long {
	a, e := sockaddr(addr, n)
	if e != 0 {
		return res(0, e)
	}
	return res(0, host.Bind(int(fd), a))
}

//export pdListen
func pdListen(fd, backlog C.int) C.long { return res(0, host.Listen(int(fd), int(backlog))) }

//export pdAccept
func pdAccept(fd C.int, addr unsafe.Pointer, n *C.socklen_t) C.long {
	nfd, peer, e := host.Accept(int(fd))
	if e == 0 && addr != nil && n != nil {
		var b [28]byte
		l := 16
		a := peer.Addr()
		if a.Is4() {
			binary.NativeEndian.PutUint16(b[:], syscall.AF_INET)
			binary.BigEndian.PutUint16(b[2:], peer.Port())
			a4 := a.As4()
			copy(b[4:], a4[:])
		} else {
			l = 28
			binary.NativeEndian.PutUint16(b[:], syscall.AF_INET6)
			binary.BigEndian.PutUint16(b[2:], peer.Port())
			a16 := a.As16()
			copy(b[8:], a16[:])
		}
		copy(unsafe.Slice((*byte)(addr), int(*n)), b[:l])
		*n = C.socklen_t(l)
	}
	return res(nfd, e)
}

//export pdConnect
func pdConnect(fd C.int, addr unsafe.Pointer, n C.socklen_t) C.long {
	a, e := sockaddr(addr, n)
	if e != 0 {
		return res(0, e)
	}
	return res(0, host.Connect(int(fd), a))
}

func bytes(p unsafe.Pointer, n C.size_t) []byte {
	if p == nil || n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(p), int(n))
}

// badBuf is a NULL buffer with a length: the kernel's copy to or from user memory fails
// with EFAULT (tcp/syscall_bad_arg/syscall-invalid-buf-ptr.pkt).
func badBuf(p unsafe.Pointer, n C.size_t) bool { return p == nil && n > 0 }

//export pdRecv
func pdRecv(fd C.int, p unsafe.Pointer, n C.size_t, flags C.int) C.long {
	if badBuf(p, n) && host.IsSocket(int(fd)) {
		return res(0, syscall.EFAULT)
	}
	return res(host.Read(int(fd), bytes(p, n), int(flags)))
}

//export pdSend
func pdSend(fd C.int, p unsafe.Pointer, n C.size_t, flags C.int) C.long {
	if badBuf(p, n) && host.IsSocket(int(fd)) {
		return res(0, syscall.EFAULT)
	}
	return res(host.Write(int(fd), bytes(p, n), int(flags)))
}

// iovecs gathers an iovec array into one buffer (sends) or says how long it is (receives).
func iovecs(p unsafe.Pointer, cnt C.size_t) []C.struct_iovec {
	if p == nil || cnt == 0 {
		return nil
	}
	return unsafe.Slice((*C.struct_iovec)(p), int(cnt))
}

//export pdSendIov
func pdSendIov(fd C.int, p unsafe.Pointer, cnt C.size_t, flags C.int) C.long {
	var b []byte
	for _, v := range iovecs(p, cnt) {
		b = append(b, bytes(v.iov_base, v.iov_len)...)
	}
	return res(host.Write(int(fd), b, int(flags)))
}

//export pdSendTo
func pdSendTo(fd C.int, p unsafe.Pointer, n C.size_t, flags C.int, addr unsafe.Pointer, alen C.socklen_t) C.long {
	var to netip.AddrPort
	if badBuf(p, n) && host.IsSocket(int(fd)) {
		return res(0, syscall.EFAULT)
	}
	if addr != nil && alen >= 2 && binary.NativeEndian.Uint16(unsafe.Slice((*byte)(addr), 2)) == syscall.AF_UNSPEC {
		return res(0, syscall.EOPNOTSUPP)
	}
	if addr != nil && alen > 0 {
		a, e := sockaddr(addr, alen)
		if e != 0 {
			return res(0, e)
		}
		to = a
	}
	return res(host.SendTo(int(fd), bytes(p, n), int(flags), to))
}

//export pdSendIovTo
func pdSendIovTo(fd C.int, p unsafe.Pointer, cnt C.size_t, flags C.int, addr unsafe.Pointer, alen C.socklen_t) C.long {
	var b []byte
	for _, v := range iovecs(p, cnt) {
		b = append(b, bytes(v.iov_base, v.iov_len)...)
	}
	return pdSendTo(fd, unsafe.Pointer(unsafe.SliceData(b)), C.size_t(len(b)), flags, addr, alen)
}

//export pdRecvIov
func pdRecvIov(fd C.int, p unsafe.Pointer, cnt C.size_t, flags C.int) C.long {
	vs := iovecs(p, cnt)
	total := 0
	for _, v := range vs {
		total += int(v.iov_len)
	}
	b := make([]byte, total)
	n, e := host.Read(int(fd), b, int(flags))
	if e != 0 {
		return res(n, e)
	}
	rest := b[:n]
	for _, v := range vs {
		k := copy(bytes(v.iov_base, v.iov_len), rest)
		rest = rest[k:]
	}
	return res(n, 0)
}

//export pdInq
func pdInq(fd C.int) C.long {
	n, ok := host.Inq(int(fd))
	if !ok {
		return -1
	}
	return C.long(n)
}

//export pdFcntl
func pdFcntl(fd, cmd C.int, arg C.long) C.long {
	switch cmd {
	case syscall.F_GETFL:
		nb, e := host.Nonblock(int(fd))
		fl := syscall.O_RDWR
		if nb {
			fl |= syscall.O_NONBLOCK
		}
		return res(fl, e)
	case syscall.F_SETFL:
		return res(0, host.SetNonblock(int(fd), arg&syscall.O_NONBLOCK != 0))
	case syscall.F_GETFD, syscall.F_SETFD:
		return 0
	}
	return res(0, syscall.EINVAL)
}

//export pdIoctl
func pdIoctl(fd C.int, req C.ulong) C.long { return res(host.Ioctl(int(fd), uint(req))) }

//export pdClose
func pdClose(fd C.int) C.long { return res(0, host.Close_(int(fd))) }

//export pdShutdown
func pdShutdown(fd, how C.int) C.long { return res(0, host.Shutdown(int(fd), int(how))) }

//export pdGetsockopt
func pdGetsockopt(fd, level, name C.int, v unsafe.Pointer, n C.socklen_t) C.long {
	return res(host.GetSockopt(int(fd), int(level), int(name), bytes(v, C.size_t(n))))
}

//export pdSetsockopt
func pdSetsockopt(fd, level, name C.int, v unsafe.Pointer, n C.socklen_t) C.long {
	return res(0, host.SetSockopt(int(fd), int(level), int(name), bytes(v, C.size_t(n))))
}

func msTimeout(ms C.int) time.Duration {
	if ms < 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}

//export pdPoll
func pdPoll(p unsafe.Pointer, n C.nfds_t, timeout C.int) C.long {
	var cfds []C.struct_pollfd
	if p != nil && n > 0 {
		cfds = unsafe.Slice((*C.struct_pollfd)(p), int(n))
	}
	fds := make([]sock.PollFd, len(cfds))
	for i, f := range cfds {
		fds[i] = sock.PollFd{Fd: int(f.fd), Events: uint32(uint16(f.events))}
	}
	r, e := host.Poll(fds, msTimeout(timeout))
	for i := range cfds {
		cfds[i].revents = C.short(fds[i].Revents)
	}
	return res(r, e)
}

//export pdNetdevSend
func pdNetdevSend(p unsafe.Pointer, n C.size_t) C.long {
	host.Inject(append([]byte(nil), bytes(p, n)...))
	return 0
}

//export pdNetdevReceive
func pdNetdevReceive(p unsafe.Pointer, n C.size_t, at *C.longlong) C.long {
	pkt, t, ok := host.Sniff()
	if !ok {
		return 0 // nothing will ever come: packetdrill reports the missing packet
	}
	*at = C.longlong(t.UnixMicro())
	return C.long(copy(bytes(p, n), pkt))
}

//export pdUsleep
func pdUsleep(us C.uint) { host.Sleep(time.Duration(us) * time.Microsecond) }

//export pdGettimeofday
func pdGettimeofday() C.longlong { return C.longlong(host.Now().UnixMicro()) }

//export pdEpollCreate
func pdEpollCreate(size C.int) C.long {
	if size <= 0 {
		return res(0, syscall.EINVAL)
	}
	return res(host.EpollCreate())
}

//export pdEpollCtl
func pdEpollCtl(epfd, op, fd C.int, events C.uint32_t, data C.uint64_t) C.long {
	return res(0, host.EpollCtl(int(epfd), int(op), int(fd), uint32(events), uint64(data)))
}

//export pdEpollWait
func pdEpollWait(epfd C.int, ev *C.uint32_t, data *C.uint64_t, max, timeout C.int) C.long {
	out, e := host.EpollWait(int(epfd), int(max), msTimeout(timeout))
	if e != 0 {
		return res(0, e)
	}
	evs := unsafe.Slice(ev, int(max))
	ds := unsafe.Slice(data, int(max))
	for i, o := range out {
		evs[i], ds[i] = C.uint32_t(o.Events), C.uint64_t(o.Data)
	}
	return res(len(out), 0)
}

// pdSplice is splice(2). Its one use in the suite is from a berth socket to a pipe made
// by pipe(2) (a real one: the shim calls the C library's), which sock.Host.Splice does,
// writing to the pipe here. packetdrill's shared-object mode passes the offsets as
// pointers to the script's values, so a NULL offset arrives as a pointer to 0; any other
// is refused as Linux refuses an offset for a socket (EINVAL) or a pipe (ESPIPE). Between
// two descriptors that are not berth's it is the kernel's splice.
//
//export pdSplice
func pdSplice(in C.int, offIn unsafe.Pointer, out C.int, offOut unsafe.Pointer, n C.size_t, flags C.uint) C.long {
	off := func(p unsafe.Pointer) *int64 {
		if p == nil || *(*int64)(p) == 0 {
			return nil
		}
		return (*int64)(p)
	}
	fin, fout := int(in), int(out)
	if !host.IsFile(fin) && !host.IsFile(fout) {
		r, err := syscall.Splice(fin, off(offIn), fout, off(offOut), int(n), int(flags))
		if err != nil {
			return res(0, err.(syscall.Errno))
		}
		return C.long(r)
	}
	if !host.IsSocket(fin) || host.IsFile(fout) {
		return res(0, syscall.EINVAL) // neither end a pipe, or a pipe into a berth socket (not emulated)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fout, &st); err != nil {
		return res(0, err.(syscall.Errno))
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		return res(0, syscall.EINVAL)
	}
	if off(offIn) != nil {
		return res(0, syscall.EINVAL)
	}
	if off(offOut) != nil {
		return res(0, syscall.ESPIPE)
	}
	return res(host.Splice(fin, int(min(n, 1<<30)), pipeRoom(fout), func(b []byte) (int, error) {
		return syscall.Write(fout, b)
	}))
}

// pipeRoom is how many bytes pipe fd takes before it is full: its capacity
// (F_GETPIPE_SZ) less what is queued in it (FIONREAD).
func pipeRoom(fd int) int {
	const fGetPipeSz, fionread = 1032, 0x541b
	size, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), fGetPipeSz, 0)
	if e != 0 {
		return 0
	}
	var queued int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), fionread, uintptr(unsafe.Pointer(&queued))); e != 0 {
		return 0
	}
	return int(size) - int(queued)
}
