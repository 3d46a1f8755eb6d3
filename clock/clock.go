// Package clock makes time injectable. Stacks use Real by default; packet-script tests use a
// Manual clock and advance it by hand, so retransmission and TIME-WAIT tests run in
// milliseconds and repeat exactly. (Whole virtual networks can also run under
// testing/synctest with the Real clock.)
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells time and schedules callbacks.
type Clock interface {
	Now() time.Time // current time
	// AfterFunc calls f on its own goroutine after d.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a scheduled callback.
type Timer interface {
	// Stop prevents the call if it has not happened; it reports whether it did so.
	Stop() bool
	// Reset reschedules the call to d from now; it reports whether the timer was active.
	Reset(d time.Duration) bool
}

// Real is the system clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Manual is a clock that moves only when Advance is called. Callbacks due run synchronously
// inside Advance, in time order, on the caller's goroutine.
type Manual struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers []*manualTimer
}

// NewManual returns a Manual clock reading start.
func NewManual(start time.Time) *Manual { return &Manual{now: start} }

// Now returns the clock's current time, which moves only with Advance.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// AfterFunc arranges for f to run, on the goroutine calling Advance, once the clock has
// moved d or more past its current time.
func (m *Manual) AfterFunc(d time.Duration, f func()) Timer {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTimer{m: m, f: f}
	m.schedule(t, d)
	return t
}

func (m *Manual) schedule(t *manualTimer, d time.Duration) {
	m.seq++
	t.when, t.seq, t.active = m.now.Add(d), m.seq, true
	m.timers = append(m.timers, t)
}

// Advance moves the clock forward by d, running every callback that falls due.
func (m *Manual) Advance(d time.Duration) {
	m.mu.Lock()
	end := m.now.Add(d)
	for {
		t := m.nextDue(end)
		if t == nil {
			break
		}
		m.now = t.when
		t.active = false
		m.mu.Unlock()
		t.f()
		m.mu.Lock()
	}
	m.now = end
	m.mu.Unlock()
}

// nextDue removes and returns the earliest active timer due by end.
func (m *Manual) nextDue(end time.Time) *manualTimer {
	live := m.timers[:0]
	for _, t := range m.timers {
		if t.active {
			live = append(live, t)
		}
	}
	m.timers = live
	if len(live) == 0 {
		return nil
	}
	sort.Slice(live, func(i, j int) bool {
		if !live[i].when.Equal(live[j].when) {
			return live[i].when.Before(live[j].when)
		}
		return live[i].seq < live[j].seq
	})
	if live[0].when.After(end) {
		return nil
	}
	t := live[0]
	m.timers = live[1:]
	return t
}

// Pending reports how many timers are scheduled.
func (m *Manual) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, t := range m.timers {
		if t.active {
			n++
		}
	}
	return n
}

type manualTimer struct {
	m      *Manual
	f      func()
	when   time.Time
	seq    uint64
	active bool
}

func (t *manualTimer) Stop() bool {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

func (t *manualTimer) Reset(d time.Duration) bool {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	was := t.active
	// Drop the old entry so the timer is listed (and fires) once.
	live := t.m.timers[:0]
	for _, o := range t.m.timers {
		if o != t {
			live = append(live, o)
		}
	}
	t.m.timers = live
	t.m.schedule(t, d)
	return was
}
