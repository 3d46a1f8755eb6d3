package sock

import (
	"sync"
	"time"

	"github.com/berthnet/berth/clock"
)

// VClock is the virtual time a Host runs on: it moves only when the harness sleeps
// (packetdrill's usleep hook) or waits for the stack's next packet (NextTimer). Unlike
// clock.Manual it can say when its next timer falls due, so that waiting for a
// retransmission costs one step, not a spin over every millisecond.
type VClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers []*vtimer
	// fired, if set, runs after each callback (the Host lets the calls it woke finish
	// before time moves on).
	fired func()
}

// NewVClock returns a clock reading start.
func NewVClock(start time.Time) *VClock { return &VClock{now: start} }

// Now returns the virtual time.
func (v *VClock) Now() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.now
}

// AfterFunc schedules f to run inside a later Advance, on the advancing goroutine.
func (v *VClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	v.mu.Lock()
	defer v.mu.Unlock()
	t := &vtimer{v: v, f: f}
	v.schedule(t, d)
	return t
}

func (v *VClock) schedule(t *vtimer, d time.Duration) {
	v.seq++
	if !t.active {
		v.timers = append(v.timers, t)
	}
	t.when, t.seq, t.active = v.now.Add(d), v.seq, true
}

// next returns the index of the earliest active timer, dropping inactive ones; -1 if none.
func (v *VClock) next() int {
	live := v.timers[:0]
	for _, t := range v.timers {
		if t.active {
			live = append(live, t)
		}
	}
	clear(v.timers[len(live):])
	v.timers = live
	best := -1
	for i, t := range live {
		if best < 0 || t.when.Before(live[best].when) || (t.when.Equal(live[best].when) && t.seq < live[best].seq) {
			best = i
		}
	}
	return best
}

// NextTimer reports when the earliest timer falls due.
func (v *VClock) NextTimer() (time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	i := v.next()
	if i < 0 {
		return time.Time{}, false
	}
	return v.timers[i].when, true
}

// AdvanceTo moves the clock to end (never backwards), running the callbacks that fall
// due in time order; each runs with the clock reading its due time.
func (v *VClock) AdvanceTo(end time.Time) {
	v.mu.Lock()
	for {
		i := v.next()
		if i < 0 || v.timers[i].when.After(end) {
			break
		}
		t := v.timers[i]
		t.active = false
		if t.when.After(v.now) {
			v.now = t.when
		}
		fired := v.fired
		v.mu.Unlock()
		t.f()
		if fired != nil {
			fired()
		}
		v.mu.Lock()
	}
	if end.After(v.now) {
		v.now = end
	}
	v.mu.Unlock()
}

type vtimer struct {
	v      *VClock
	f      func()
	when   time.Time
	seq    uint64
	active bool
}

func (t *vtimer) Stop() bool {
	t.v.mu.Lock()
	defer t.v.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

func (t *vtimer) Reset(d time.Duration) bool {
	t.v.mu.Lock()
	defer t.v.mu.Unlock()
	was := t.active
	if !was {
		// An inactive timer may still sit in the list until the next scan drops it:
		// make sure it is listed once.
		for _, o := range t.v.timers {
			if o == t {
				t.active = true
				t.v.seq++
				t.when, t.seq = t.v.now.Add(d), t.v.seq
				return false
			}
		}
	}
	t.v.schedule(t, d)
	return was
}
