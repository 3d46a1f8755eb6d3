// Package sock emulates the Linux socket calls of one process over a berth stack that runs
// on virtual time: the layer between packetdrill's shared-object interface (the cgo
// adapter in ../adapter) and berth. Every call returns a Linux errno on failure, as the
// kernel would; blocking calls wait for the harness's next step (an injected packet, a
// sleep, another call) rather than for real time, so that a script's run is
// deterministic and takes as long as its computation.
package sock

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/tcp"
)

// Config is what a Host needs to know of the test network.
type Config struct {
	// Local is the stack's address with its prefix (packetdrill's --local_ip and
	// --netmask_ip, or the IPv6 /64 it assigns).
	Local netip.Prefix
	// MTU of the interface (packetdrill's --mtu, 1500 by default).
	MTU int
	// Sysctl reads a sysctl by its /proc/sys path below net/ (e.g. "ipv4/tcp_sack");
	// nil reads /proc/sys: each packetdrill script runs in its own network namespace, so
	// the sysctls its commands set are the namespace's own.
	Sysctl func(name string) (string, bool)
	// Reserve, if set, returns a descriptor number the process holds open (and Release
	// gives it back) for each new socket or epoll instance, so that the Host's numbers
	// are never those of the process's real files: the harness calls the C library's
	// close and getsockopt on them too (packetdrill's socket cleanup, code events), and
	// the adapter must tell its descriptors from real ones. Nil numbers them from 3 up.
	Reserve func() (int, error)
	Release func(fd int)
}

// Start is the virtual time a Host starts at.
var Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// maxIdleAdvance bounds how far the clock jumps forward waiting for a packet that no timer
// will ever send: the harness then sees no packet and fails the script, instead of
// waiting forever.
const maxIdleAdvance = 2 * time.Hour

// Host is one emulated process with its socket table, over its own berth stack.
type Host struct {
	cfg Config
	clk *VClock
	ep  *endpoint

	once  sync.Once
	st    *berth.Stack
	tcp   *tcp.Protocol
	built atomic.Pointer[tcp.Protocol] // tcp, once the stack is built (Command)

	mu      sync.Mutex
	cond    sync.Cond
	gen     uint64
	busy    int // calls under way that are not waiting
	waiters int
	files   map[int]file
	spin    int // consecutive Gettimeofday calls with nothing else between
	// woken: a call that had blocked has returned since the last settle. Its caller (a
	// packetdrill syscall thread) still has to record the result: settle gives it a
	// moment of real time.
	woken bool
	// unrecorded: the same, since the last Sleep. packetdrill holds its own lock while it
	// injects a packet, so the syscall thread can record a call that the packet woke only
	// once the main thread sleeps (wait_for_event unlocks around usleep): Sleep gives it
	// the moment of real time then, so that an event after the sleep (a code event
	// reading the accepted socket's TCP_INFO) sees the call's result.
	unrecorded bool
}

// file is an entry of the descriptor table.
type file interface {
	close(h *Host) syscall.Errno
}

// New returns a Host; its stack is built at the first socket call, after the script's
// first commands have set the sysctls it reads.
func New(cfg Config) *Host {
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.Sysctl == nil {
		cfg.Sysctl = procSysctl
	}
	clk := NewVClock(Start)
	h := &Host{cfg: cfg, clk: clk, ep: &endpoint{mtu: cfg.MTU, clk: clk}, files: map[int]file{}}
	h.cond.L = &h.mu
	clk.fired = func() {
		h.mu.Lock()
		h.kickLocked()
		h.mu.Unlock()
		h.settle()
	}
	return h
}

// stack builds the berth stack on first use.
func (h *Host) stack() *tcp.Protocol {
	h.once.Do(func() {
		h.st = berth.New(berth.WithClock(h.clk), berth.WithSeed(1), berth.WithTCPConfig(tcpConfig(h.cfg.Sysctl)))
		if err := h.st.AddInterface("pd0", h.ep); err != nil {
			panic(err)
		}
		if err := h.st.AddAddress("pd0", h.cfg.Local); err != nil {
			panic(err)
		}
		def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if h.cfg.Local.Addr().Is6() {
			def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if err := h.st.AddRoute(def, netip.Addr{}, "pd0"); err != nil {
			panic(err)
		}
		h.tcp = h.st.TCP()
		h.built.Store(h.tcp)
	})
	return h.tcp
}

// Command tells the host that the script ran a shell command: what it changed that
// berth keeps in its own stack, once built, is applied. Sysctls berth reads while it
// runs (tcp_timestamps: synack-data.pkt turns timestamps on midway; tcp_fastopen) are
// read again, and `ip tcp_metrics flush` forgets the Fast Open cookies, which Linux keeps in tcp_metrics
// (fastopen/client/fallback-exp-opt.pkt). Before the first socket there is no stack yet:
// it reads the sysctls when it is built.
func (h *Host) Command(cmd string) {
	p := h.built.Load()
	if p == nil {
		return
	}
	if v, ok := h.cfg.Sysctl("ipv4/tcp_timestamps"); ok {
		p.SetTimestamps(v != "0")
	}
	if c := tcpConfig(h.cfg.Sysctl); c.FastOpen != 0 {
		// tcp_fastopen: cookie-less-sendto.pkt drops the no-cookie bit midway
		// ("sysctl -q net.ipv4.tcp_fastopen=1"); -1 is tcp_fastopen=0.
		p.SetFastOpen(c.FastOpen)
	}
	if strings.Contains(cmd, "tcp_metrics flush") {
		p.FlushFastOpenCache()
	}
}

// Close closes the stack and every descriptor.
func (h *Host) Close() {
	h.mu.Lock()
	fds := make([]int, 0, len(h.files))
	for fd := range h.files {
		fds = append(fds, fd)
	}
	h.mu.Unlock()
	for _, fd := range fds {
		h.Close_(fd)
	}
	if h.st != nil {
		h.st.Close()
	}
}

// enter and leave bracket every call that may change the stack's state; leave wakes the
// blocked calls so that they look again.
func (h *Host) enter() {
	h.mu.Lock()
	h.busy++
	h.spin = 0
	h.mu.Unlock()
}

func (h *Host) leave() {
	h.mu.Lock()
	h.busy--
	h.kickLocked()
	h.mu.Unlock()
}

// kickLocked starts a new generation: every waiter wakes, counted busy from now on so that
// settle waits for it to look and either finish or wait again.
func (h *Host) kickLocked() {
	h.gen++
	h.busy += h.waiters
	h.waiters = 0
	h.cond.Broadcast()
}

// wait blocks a call until the next generation. Called inside enter/leave.
func (h *Host) wait(gen uint64) {
	h.mu.Lock()
	if h.gen == gen {
		h.busy--
		h.waiters++
		for h.gen == gen {
			h.cond.Wait()
		}
		h.woken = true
		h.unrecorded = true
	}
	h.mu.Unlock()
}

func (h *Host) generation() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gen
}

// settle waits until no call is running (every other call has finished or is blocked), so
// that what the last step woke has happened before time moves or packets are sniffed. It
// gives up after a second of real time: a call blocked inside berth (a lingering close)
// must not hang the harness.
func (h *Host) settle() {
	deadline := time.Now().Add(time.Second)
	h.mu.Lock()
	for h.busy > 0 && time.Now().Before(deadline) {
		h.mu.Unlock()
		time.Sleep(20 * time.Microsecond)
		h.mu.Lock()
	}
	woken := h.woken
	h.woken = false
	h.mu.Unlock()
	if woken {
		time.Sleep(2 * time.Millisecond)
	}
}

// Now is gettimeofday: the virtual time. packetdrill spins on it for the last few
// microseconds before an event; consecutive calls with nothing between move the clock
// on by a microsecond each, so that the spin ends.
func (h *Host) Now() time.Time {
	h.mu.Lock()
	h.spin++
	spin := h.spin
	h.mu.Unlock()
	if spin > 2 {
		h.advance(h.clk.Now().Add(time.Microsecond))
	}
	return h.clk.Now()
}

// Sleep is usleep: virtual time moves on by d, timers firing on the way.
func (h *Host) Sleep(d time.Duration) {
	h.settle()
	h.mu.Lock()
	unrecorded := h.unrecorded
	h.unrecorded = false
	h.mu.Unlock()
	if unrecorded {
		time.Sleep(2 * time.Millisecond)
	}
	h.advance(h.clk.Now().Add(d))
	h.settle()
}

func (h *Host) advance(to time.Time) {
	h.clk.AdvanceTo(to)
	h.mu.Lock()
	h.kickLocked()
	h.mu.Unlock()
}

// Inject hands an IP packet to the stack (packetdrill's netdev_send).
func (h *Host) Inject(b []byte) {
	h.stack()
	h.settle()
	h.enter()
	h.ep.deliver(b)
	h.leave()
	h.settle()
}

// Sniff returns the next packet the stack sent and when it sent it. With none queued it
// moves the clock to the next timer until one is sent; ok is false if none is within
// maxIdleAdvance.
func (h *Host) Sniff() (pkt []byte, at time.Time, ok bool) {
	h.stack()
	h.mu.Lock()
	h.spin = 0
	h.mu.Unlock()
	limit := h.clk.Now().Add(maxIdleAdvance)
	for {
		h.settle()
		if p, ok := h.ep.pop(); ok {
			return p.b, p.at, true
		}
		next, ok := h.clk.NextTimer()
		if !ok || next.After(limit) {
			return nil, time.Time{}, false
		}
		h.advance(next)
	}
}

// errno maps berth's errors to the errno the kernel would return.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, net.ErrClosed):
		return syscall.EBADF
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return syscall.EAGAIN
	case errors.Is(err, io.EOF):
		return 0
	}
	return syscall.EIO
}

// add installs f at the lowest free descriptor from 3 (0-2 are stdio), as the kernel does,
// or at the one Config.Reserve hands out.
func (h *Host) add(f file) int {
	if h.cfg.Reserve != nil {
		if fd, err := h.cfg.Reserve(); err == nil {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.files[fd] = f
			return fd
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	fd := 3
	for h.files[fd] != nil {
		fd++
	}
	h.files[fd] = f
	return fd
}

func (h *Host) lookup(fd int) (file, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.files[fd]
	if f == nil {
		return nil, syscall.EBADF
	}
	return f, 0
}

func (h *Host) sock(fd int) (*socket, syscall.Errno) {
	f, e := h.lookup(fd)
	if e != 0 {
		return nil, e
	}
	s, ok := f.(*socket)
	if !ok {
		return nil, syscall.ENOTSOCK
	}
	return s, 0
}

// IsFile reports whether fd is one of the Host's descriptors (a socket or an epoll
// instance).
func (h *Host) IsFile(fd int) bool {
	_, e := h.lookup(fd)
	return e == 0
}

// IsSocket reports whether fd is one of the Host's sockets.
func (h *Host) IsSocket(fd int) bool {
	_, e := h.sock(fd)
	return e == 0
}

// Close_ is close(2). (Named so as not to clash with Host.Close.)
func (h *Host) Close_(fd int) syscall.Errno {
	h.enter()
	defer h.leave()
	h.mu.Lock()
	f := h.files[fd]
	delete(h.files, fd)
	h.mu.Unlock()
	if f == nil {
		return syscall.EBADF
	}
	if h.cfg.Release != nil {
		defer h.cfg.Release(fd)
	}
	return f.close(h)
}
