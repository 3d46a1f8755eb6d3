package sock

import (
	"net/netip"
	"syscall"
	"testing"
)

// With Config.Reserve the Host's descriptors are the numbers Reserve hands out (real
// descriptors in the adapter, so that none is also one of packetdrill's files), and
// closing one gives its number back through Release once.
func TestHostReservedDescriptors(t *testing.T) {
	next, released := 100, map[int]int{}
	h := New(Config{Local: netip.PrefixFrom(local, 16), Sysctl: sysctls(nil),
		Reserve: func() (int, error) { next++; return next, nil },
		Release: func(fd int) { released[fd]++ }})
	defer h.Close()
	fd, e := h.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if e != 0 || fd != 101 {
		t.Fatalf("socket: %d %v, want the reserved fd 101", fd, e)
	}
	ep, e := h.EpollCreate()
	if e != 0 || ep != 102 {
		t.Fatalf("epoll_create: %d %v, want the reserved fd 102", ep, e)
	}
	if !h.IsFile(fd) || !h.IsFile(ep) || h.IsSocket(ep) || h.IsFile(3) {
		t.Fatal("IsFile/IsSocket disagree with the table")
	}
	if e := h.Close_(fd); e != 0 {
		t.Fatal(e)
	}
	if e := h.Close_(fd); e != syscall.EBADF {
		t.Fatalf("second close: %v, want EBADF", e)
	}
	if released[fd] != 1 || released[ep] != 0 {
		t.Fatalf("released %v, want fd %d once and not %d", released, fd, ep)
	}
}
