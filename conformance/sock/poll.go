package sock

import (
	"slices"
	"syscall"
	"time"
)

// poll(2) and epoll(7) event bits.
const (
	PollIn     = 0x1
	PollPri    = 0x2
	PollOut    = 0x4
	PollErr    = 0x8
	PollHup    = 0x10
	PollNval   = 0x20
	PollRdNorm = 0x40
	PollWrNorm = 0x100
	PollRdHup  = 0x2000

	epollET      = 1 << 31
	epollOneshot = 1 << 30
)

// events returns the poll bits of fd now, as Linux's tcp_poll computes them.
func (h *Host) events(fd int) uint32 {
	s, e := h.sock(fd)
	if e != 0 {
		return PollNval
	}
	s.mu.Lock()
	c, ln, opened := s.conn, s.ln, s.opened
	s.mu.Unlock()
	if ln != nil {
		if n, _ := ln.QueueLen(); n > 0 {
			return PollIn | PollRdNorm
		}
		return 0
	}
	if !opened {
		s.mu.Lock()
		deferred := s.deferTo.IsValid()
		s.mu.Unlock()
		if deferred {
			return PollOut | PollWrNorm // TCP_FASTOPEN_CONNECT: the SYN waits for a write
		}
		return PollOut | PollWrNorm | PollHup // TCP_CLOSE: no data, writable, hung up
	}
	r := c.Readiness()
	var ev uint32
	if r.Readable {
		ev |= PollIn | PollRdNorm
	}
	if r.Writable {
		ev |= PollOut | PollWrNorm
	}
	if r.RdHup {
		ev |= PollRdHup
	}
	if r.Hup {
		ev |= PollHup
	}
	if r.Err {
		ev |= PollErr
	}
	return ev
}

// PollFd is one entry of poll(2)'s array.
type PollFd struct {
	Fd              int
	Events, Revents uint32
}

// Poll is poll(2); timeout < 0 waits for ever.
func (h *Host) Poll(fds []PollFd, timeout time.Duration) (int, syscall.Errno) {
	h.enter()
	defer h.leave()
	var deadline time.Time
	if timeout > 0 {
		deadline = h.deadline(timeout)
	}
	for {
		gen := h.generation()
		n := 0
		for i := range fds {
			fds[i].Revents = 0
			if fds[i].Fd < 0 {
				continue
			}
			ev := h.events(fds[i].Fd) & (fds[i].Events | PollErr | PollHup | PollNval)
			fds[i].Revents = ev
			if ev != 0 {
				n++
			}
		}
		if n > 0 || timeout == 0 || h.expired(deadline) {
			return n, 0
		}
		h.wait(gen)
	}
}

// epoll is an epoll instance: the descriptors it watches.
type epoll struct {
	items map[int]*epollItem
}

type epollItem struct {
	events uint32
	data   uint64
	last   uint32 // the bits reported last (edge-triggered)
	seen   uint64 // generation of the last report (edge-triggered)
	off    bool   // EPOLLONESHOT fired
}

func (e *epoll) close(*Host) syscall.Errno { return 0 }

// EpollCreate is epoll_create(2).
func (h *Host) EpollCreate() (int, syscall.Errno) {
	return h.add(&epoll{items: map[int]*epollItem{}}), 0
}

// EpollCtl is epoll_ctl(2).
func (h *Host) EpollCtl(epfd, op, fd int, events uint32, data uint64) syscall.Errno {
	h.enter()
	defer h.leave()
	f, e := h.lookup(epfd)
	if e != 0 {
		return e
	}
	ep, ok := f.(*epoll)
	if !ok || epfd == fd {
		return syscall.EINVAL
	}
	if _, e := h.lookup(fd); e != 0 {
		return e
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	it := ep.items[fd]
	switch op {
	case syscall.EPOLL_CTL_ADD:
		if it != nil {
			return syscall.EEXIST
		}
		ep.items[fd] = &epollItem{events: events, data: data}
	case syscall.EPOLL_CTL_MOD:
		if it == nil {
			return syscall.ENOENT
		}
		*it = epollItem{events: events, data: data}
	case syscall.EPOLL_CTL_DEL:
		if it == nil {
			return syscall.ENOENT
		}
		delete(ep.items, fd)
	default:
		return syscall.EINVAL
	}
	return 0
}

// EpollEvent is one result of EpollWait.
type EpollEvent struct {
	Events uint32
	Data   uint64
}

// EpollWait is epoll_wait(2); timeout < 0 waits for ever. Edge-triggered items report
// again only when their bits grew or the stack changed since their last report.
func (h *Host) EpollWait(epfd int, max int, timeout time.Duration) ([]EpollEvent, syscall.Errno) {
	h.enter()
	defer h.leave()
	f, e := h.lookup(epfd)
	if e != 0 {
		return nil, e
	}
	ep, ok := f.(*epoll)
	if !ok || max <= 0 {
		return nil, syscall.EINVAL
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = h.deadline(timeout)
	}
	for {
		gen := h.generation()
		h.mu.Lock()
		fds := make([]int, 0, len(ep.items))
		for fd := range ep.items {
			fds = append(fds, fd)
		}
		h.mu.Unlock()
		slices.Sort(fds)
		var out []EpollEvent
		for _, fd := range fds {
			if len(out) == max {
				break
			}
			h.mu.Lock()
			it := ep.items[fd]
			h.mu.Unlock()
			if it == nil || it.off {
				continue
			}
			ev := h.events(fd) & (it.events | PollErr | PollHup)
			if ev == 0 {
				it.last = 0
				continue
			}
			if it.events&epollET != 0 && ev&^it.last == 0 && it.seen == gen {
				continue
			}
			it.last, it.seen = ev, gen
			if it.events&epollOneshot != 0 {
				it.off = true
			}
			out = append(out, EpollEvent{Events: ev, Data: it.data})
		}
		if len(out) > 0 || timeout == 0 || h.expired(deadline) {
			return out, 0
		}
		h.wait(gen)
	}
}
