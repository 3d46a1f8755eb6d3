package sock

import (
	"context"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/tcp"
)

// Linux's flag values the calls take (golang.org/x/sys spells them too; syscall lacks a
// few).
const (
	sockNonblock = 0x800 // SOCK_NONBLOCK, O_NONBLOCK
	sockCloexec  = 0x80000

	msgPeek     = 0x2
	msgDontwait = 0x40
	msgWaitall  = 0x100
	msgEOR      = 0x80
	msgMore     = 0x8000
	msgFastOpen = 0x20000000

	siocInq    = 0x541b // SIOCINQ, FIONREAD
	siocOutq   = 0x5411 // SIOCOUTQ, TIOCOUTQ
	siocAtmark = 0x8905 // SIOCATMARK
)

// socket is a TCP socket: unopened (conn made by tcp.Socket, options collect on it),
// listening (ln), or a connection (conn, dialed or accepted).
type socket struct {
	mu       sync.Mutex
	family   int
	nonblock bool
	conn     *tcp.Conn
	ln       *tcp.Listener
	local    netip.AddrPort
	bound    bool
	bind     ports.BindOptions
	opened   bool // connect was called or the socket was accepted
	// deferTo: connect with TCP_FASTOPEN_CONNECT and a cookie cached returned at once;
	// the SYN goes out with the first write, to this address.
	deferTo netip.AddrPort
	o       sockOpts
}

// sockOpts are the options a socket keeps for itself (reported by getsockopt, inherited by
// accepted sockets).
type sockOpts struct {
	sndbuf, rcvbuf     int // as set, before the kernel's doubling
	nodelay, keepalive bool
	linger             int // -1: off
	keepIdle           time.Duration
	keepIntvl          time.Duration
	keepCnt            int
	rcvtimeo, sndtimeo time.Duration
	cc                 string
	fastOpen           int // TCP_FASTOPEN's queue length on a listener
	foConnect          bool
	inq                bool // TCP_INQ
	cork               bool // TCP_CORK
	userTimeout        time.Duration
	maxSeg             int // TCP_MAXSEG
	synCnt             int
	notSentLowat       int // TCP_NOTSENT_LOWAT as set (0: the sysctl's)
}

func (s *socket) close(h *Host) syscall.Errno {
	s.mu.Lock()
	c, ln := s.conn, s.ln
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	if c != nil && s.opened {
		c.Close()
	}
	return 0
}

// Socket is socket(2): only TCP stream sockets of the Host's family.
func (h *Host) Socket(domain, typ, proto int) (int, syscall.Errno) {
	p := h.stack()
	// tcp_ecn is read again for every socket: scripts change it between connections
	// (tcp/fastopen/server/pure-syn-data.pkt), and Linux reads it at each handshake.
	p.SetECN(ecnSysctl(h.cfg.Sysctl))
	h.enter()
	defer h.leave()
	if domain != syscall.AF_INET && domain != syscall.AF_INET6 {
		return -1, syscall.EAFNOSUPPORT
	}
	if typ&^(sockNonblock|sockCloexec) != syscall.SOCK_STREAM {
		return -1, syscall.EPROTONOSUPPORT
	}
	if proto != 0 && proto != syscall.IPPROTO_TCP {
		return -1, syscall.EPROTONOSUPPORT
	}
	s := &socket{family: domain, nonblock: typ&sockNonblock != 0, conn: p.Socket()}
	s.o.linger = -1
	s.o.nodelay = false // Linux sockets start with Nagle on; berth's conns without
	s.conn.SetNoDelay(false)
	return h.add(s), 0
}

// Bind is bind(2). The port is taken by listen or connect; bind records the address.
func (h *Host) Bind(fd int, a netip.AddrPort) syscall.Errno {
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bound || s.opened || s.ln != nil {
		return syscall.EINVAL
	}
	if ad := a.Addr().Unmap(); ad.IsValid() && !ad.IsUnspecified() && !h.local(ad) {
		return syscall.EADDRNOTAVAIL
	}
	s.local, s.bound = a, true
	return 0
}

func (h *Host) local(a netip.Addr) bool { return a == h.cfg.Local.Addr() || a.IsLoopback() }

// Listen is listen(2).
func (h *Host) Listen(fd, backlog int) syscall.Errno {
	p := h.stack()
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return 0
	}
	if s.opened {
		return syscall.EINVAL
	}
	local := s.local
	if !s.bound {
		local = netip.AddrPortFrom(h.unspecified(s.family), 0)
	}
	if backlog <= 0 {
		backlog = 1
	}
	bo := s.bind
	bo.V6Only = bo.V6Only || s.family == syscall.AF_INET
	ln, err := p.Listen(local, backlog, bo)
	if err != nil {
		return errno(err)
	}
	if s.o.fastOpen > 0 {
		ln.SetFastOpen(s.o.fastOpen)
	}
	if s.o.maxSeg > 0 {
		ln.SetMaxSeg(s.o.maxSeg)
	}
	s.ln = ln
	return 0
}

func (h *Host) unspecified(family int) netip.Addr {
	if family == syscall.AF_INET6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// Accept is accept(2); the peer's address comes back.
func (h *Host) Accept(fd int) (int, netip.AddrPort, syscall.Errno) {
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	s.mu.Lock()
	ln, nonblock, o := s.ln, s.nonblock, s.o
	s.mu.Unlock()
	if ln == nil {
		return -1, netip.AddrPort{}, syscall.EINVAL
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	deadline := h.deadline(o.rcvtimeo)
	for {
		gen := h.generation()
		c, err := ln.Accept(done)
		if err == nil {
			ns := &socket{family: s.family, conn: c, opened: true, o: o}
			ns.apply()
			return h.add(ns), c.RemoteAddr(), 0
		}
		if err != context.Canceled {
			return -1, netip.AddrPort{}, errno(err)
		}
		if nonblock || h.expired(deadline) {
			return -1, netip.AddrPort{}, syscall.EAGAIN
		}
		h.wait(gen)
	}
}

// apply sets the socket's options on its connection.
func (s *socket) apply() {
	c := s.conn
	c.SetNoDelay(s.o.nodelay)
	c.SetLinger(s.o.linger)
	if s.o.sndbuf > 0 || s.o.rcvbuf > 0 {
		c.SetBuffers(s.o.sndbuf, s.o.rcvbuf)
	}
	if s.o.keepalive {
		c.SetKeepAliveConfig(tcp.KeepAliveConfig{Enable: true, Idle: s.o.keepIdle, Interval: s.o.keepIntvl, Count: s.o.keepCnt})
	}
	if s.o.cc != "" {
		c.SetCongestionControl(s.o.cc)
	}
	if s.o.maxSeg > 0 {
		c.SetMaxSeg(s.o.maxSeg)
	}
	if s.o.userTimeout > 0 {
		c.SetUserTimeout(s.o.userTimeout)
	}
	if s.o.notSentLowat > 0 {
		c.SetNotSentLowat(s.o.notSentLowat)
	}
}

// deadline returns when a blocking call with timeout d (SO_RCVTIMEO, SO_SNDTIMEO; 0 is
// none) gives up, and arms a timer that wakes it then.
func (h *Host) deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	h.clk.AfterFunc(d, func() {})
	return h.clk.Now().Add(d)
}

func (h *Host) expired(deadline time.Time) bool {
	return !deadline.IsZero() && !h.clk.Now().Before(deadline)
}

// Connect is connect(2).
func (h *Host) Connect(fd int, remote netip.AddrPort) syscall.Errno {
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return e
	}
	s.mu.Lock()
	if s.ln != nil {
		s.mu.Unlock()
		return syscall.EISCONN
	}
	c, nonblock, local, bo := s.conn, s.nonblock, s.local, s.bind
	if !s.bound {
		local = netip.AddrPort{}
	}
	first := !s.opened
	if first && s.deferTo.IsValid() {
		s.mu.Unlock()
		return syscall.EISCONN
	}
	if first && s.o.foConnect && h.tcp.HasFastOpenCookie(remote.Addr()) {
		// Linux's TCP_FASTOPEN_CONNECT: with a cookie, connect succeeds at once and the
		// SYN carries the first write.
		s.deferTo = remote
		s.mu.Unlock()
		return 0
	}
	if first {
		s.apply()
	}
	s.opened = true
	o := s.o
	foConnect := s.o.foConnect
	s.mu.Unlock()
	if first {
		var err error
		if foConnect {
			_, err = c.ConnectData(context.Background(), local, remote, tcp.DialOptions{Bind: bo}, nil, false)
		} else {
			err = c.Connect(context.Background(), local, remote, tcp.DialOptions{Bind: bo}, false)
		}
		if err != nil {
			return errno(err)
		}
		if nonblock {
			return syscall.EINPROGRESS
		}
	} else {
		r := c.Readiness()
		switch {
		case r.Opening && nonblock:
			return syscall.EALREADY
		case r.Opened && !r.Err:
			return syscall.EISCONN
		}
	}
	deadline := h.deadline(o.sndtimeo)
	for {
		gen := h.generation()
		r := c.Readiness()
		switch {
		case r.Err:
			return errno(c.TakeError())
		case r.Opened:
			return 0
		case !r.Opening:
			return syscall.ECONNREFUSED
		}
		if h.expired(deadline) {
			return syscall.EINPROGRESS
		}
		h.wait(gen)
	}
}

// transfer runs a blocking read or write as Linux's loop does: step moves what it can at
// total bytes done and says whether the call is complete. An error other than EAGAIN ends
// the call (with the bytes moved, if any, as Linux returns a short count before the
// error); a non-blocking socket or an expired SO_RCVTIMEO/SO_SNDTIMEO returns what was
// moved, or EAGAIN; otherwise the call waits for the harness's next step when nothing
// moved.
func (h *Host) transfer(nonblock bool, deadline time.Time, step func(total int) (n int, done bool, err error)) (int, syscall.Errno) {
	total := 0
	for {
		gen := h.generation()
		n, done, err := step(total)
		total += n
		if done {
			return total, 0
		}
		if err != nil && err != syscall.EAGAIN {
			if total > 0 {
				return total, 0
			}
			return -1, errno(err)
		}
		if nonblock || h.expired(deadline) {
			if total > 0 {
				return total, 0
			}
			return -1, syscall.EAGAIN
		}
		if n == 0 {
			h.wait(gen)
		}
	}
}

// Read is recv(2) with flags (read(2) has none).
func (h *Host) Read(fd int, b []byte, flags int) (int, syscall.Errno) {
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return -1, e
	}
	s.mu.Lock()
	c, nonblock, opened, o := s.conn, s.nonblock || flags&msgDontwait != 0, s.opened, s.o
	deferred := s.deferTo.IsValid()
	s.mu.Unlock()
	if deferred {
		return -1, syscall.EAGAIN // TCP_FASTOPEN_CONNECT: "connected", nothing to read yet
	}
	if !opened || c == nil {
		return -1, syscall.ENOTCONN
	}
	return h.transfer(nonblock, h.deadline(o.rcvtimeo), func(total int) (int, bool, error) {
		n, err := readMarked(c, b[total:], flags&msgPeek != 0, total) // urgent.go
		return n, err == nil && (n == 0 || flags&msgWaitall == 0 || total+n == len(b) || flags&msgPeek != 0), err
	})
}

// SendTo is sendto(2): Write, but with MSG_FASTOPEN (or after a TCP_FASTOPEN_CONNECT
// connect) on a socket not yet opened it opens it with the data in the SYN.
func (h *Host) SendTo(fd int, b []byte, flags int, to netip.AddrPort) (int, syscall.Errno) {
	s, e := h.sock(fd)
	if e != 0 {
		return -1, e
	}
	s.mu.Lock()
	opened, deferTo := s.opened, s.deferTo
	s.mu.Unlock()
	switch {
	case !opened && deferTo.IsValid():
		return h.fastOpen(s, deferTo, b, flags)
	case opened && flags&msgFastOpen != 0 && s.conn.Readiness().Opening:
		return -1, syscall.EALREADY // a second Fast Open sendto while the first connects
	case !opened && flags&msgFastOpen != 0:
		if !h.fastOpenClient() {
			return -1, syscall.EOPNOTSUPP
		}
		if !to.IsValid() {
			return -1, syscall.EDESTADDRREQ
		}
		if a := to.Addr(); a.Unmap().IsUnspecified() || (!a.Is4() && !a.Is6()) {
			return -1, syscall.EOPNOTSUPP
		}
		return h.fastOpen(s, to, b, flags)
	}
	return h.Write(fd, b, flags&^msgFastOpen)
}

// fastOpenClient reports whether tcp_fastopen enables the client now: scripts turn it off
// and on as they go.
func (h *Host) fastOpenClient() bool {
	v, ok := h.cfg.Sysctl("ipv4/tcp_fastopen")
	if !ok {
		return true
	}
	n, err := strconv.Atoi(v)
	return err != nil || n&tcp.FastOpenClient != 0
}

// fastOpen opens s with Fast Open, data b in the SYN as far as a cookie allows.
func (h *Host) fastOpen(s *socket, to netip.AddrPort, b []byte, flags int) (int, syscall.Errno) {
	h.enter()
	defer h.leave()
	s.mu.Lock()
	c, nonblock, local, bo := s.conn, s.nonblock || flags&msgDontwait != 0, s.local, s.bind
	if !s.bound {
		local = netip.AddrPort{}
	}
	s.apply()
	s.opened, s.deferTo = true, netip.AddrPort{}
	o := s.o
	s.mu.Unlock()
	n, err := c.ConnectData(context.Background(), local, to, tcp.DialOptions{Bind: bo}, b, false)
	if err != nil {
		return -1, errno(err)
	}
	if nonblock {
		if n == 0 && len(b) > 0 || n == 0 && len(b) == 0 {
			return -1, syscall.EINPROGRESS
		}
		return n, 0
	}
	deadline := h.deadline(o.sndtimeo)
	// Linux's sk_write_pending while the rest of b waits for the connection.
	c.SetWritePending(n < len(b))
	defer c.SetWritePending(false)
	for {
		gen := h.generation()
		r := c.Readiness()
		if r.Err {
			return -1, errno(c.TakeError())
		}
		if r.Opened || !r.Opening {
			break
		}
		if h.expired(deadline) {
			return -1, syscall.EAGAIN
		}
		h.wait(gen)
	}
	for n < len(b) {
		gen := h.generation()
		k, err := c.WriteNonblock(b[n:])
		n += k
		if err != nil && err != syscall.EAGAIN {
			if n > 0 {
				return n, 0
			}
			return -1, errno(err)
		}
		if k == 0 {
			h.wait(gen)
		}
	}
	return n, 0
}

// Write is send(2) with flags (write(2) has none). A blocking write returns once every
// byte is queued, as Linux's does.
func (h *Host) Write(fd int, b []byte, flags int) (int, syscall.Errno) {
	if s, e := h.sock(fd); e == 0 {
		s.mu.Lock()
		deferTo, opened := s.deferTo, s.opened
		s.mu.Unlock()
		if !opened && deferTo.IsValid() {
			return h.fastOpen(s, deferTo, b, flags)
		}
	}
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return -1, e
	}
	s.mu.Lock()
	c, nonblock, opened, o := s.conn, s.nonblock || flags&msgDontwait != 0, s.opened, s.o
	s.mu.Unlock()
	if !opened || c == nil {
		return -1, syscall.EPIPE
	}
	return h.transfer(nonblock, h.deadline(o.sndtimeo), func(total int) (int, bool, error) {
		var f tcp.MsgFlags
		if flags&msgMore != 0 {
			f |= tcp.MsgMore
		}
		if flags&msgEOR != 0 {
			f |= tcp.MsgEOR // the record ends once the last byte is queued
		}
		n, err := c.WriteMsgNonblock(b[total:], f)
		return n, err == nil && total+n == len(b), err
	})
}

// Inq reports, for a socket with TCP_INQ on, what is left to read after a recvmsg (1 at
// EOF with nothing left, as Linux's tcp_inq_hint).
func (h *Host) Inq(fd int) (int, bool) {
	s, e := h.sock(fd)
	if e != 0 {
		return 0, false
	}
	s.mu.Lock()
	c, on := s.conn, s.o.inq
	s.mu.Unlock()
	if !on || c == nil {
		return 0, false
	}
	r := c.Readiness()
	if r.RecvQueued == 0 && r.RdHup {
		return 1, true
	}
	return r.RecvQueued, true
}

// Shutdown is shutdown(2).
func (h *Host) Shutdown(fd, how int) syscall.Errno {
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return e
	}
	s.mu.Lock()
	c, ln, opened := s.conn, s.ln, s.opened
	s.mu.Unlock()
	if how < 0 || how > 2 {
		return syscall.EINVAL
	}
	if ln != nil {
		if how != syscall.SHUT_WR {
			ln.Close()
			return 0
		}
		return syscall.ENOTCONN
	}
	if !opened {
		return syscall.ENOTCONN
	}
	if how == syscall.SHUT_RD || how == syscall.SHUT_RDWR {
		if err := c.CloseRead(); err != nil {
			return errno(err)
		}
	}
	if how == syscall.SHUT_WR || how == syscall.SHUT_RDWR {
		if err := c.CloseWrite(); err != nil {
			return errno(err)
		}
	}
	return 0
}

// SetNonblock is fcntl(F_SETFL) with or without O_NONBLOCK; Nonblock is F_GETFL's.
func (h *Host) SetNonblock(fd int, on bool) syscall.Errno {
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return e
	}
	s.mu.Lock()
	s.nonblock = on
	s.mu.Unlock()
	return 0
}

// Nonblock reports O_NONBLOCK.
func (h *Host) Nonblock(fd int) (bool, syscall.Errno) {
	s, e := h.sock(fd)
	if e != 0 {
		return false, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nonblock, 0
}

// Ioctl answers FIONREAD/SIOCINQ, SIOCOUTQ and SIOCATMARK (1 when the next byte to read is
// the urgent one, as Linux's tcp_ioctl).
func (h *Host) Ioctl(fd int, req uint) (int, syscall.Errno) {
	s, e := h.sock(fd)
	if e != 0 {
		return -1, e
	}
	s.mu.Lock()
	c, ln, opened := s.conn, s.ln, s.opened
	s.mu.Unlock()
	if ln != nil || !opened {
		return -1, syscall.EINVAL
	}
	r := c.Readiness()
	switch req {
	case siocInq:
		return r.RecvQueued, 0
	case siocOutq:
		return r.SendQueued, 0
	case siocAtmark:
		n, ok := c.UrgentMark()
		if ok && n == 0 {
			return 1, 0
		}
		return 0, 0
	}
	return -1, syscall.ENOTTY
}
