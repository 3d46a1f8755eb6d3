package tcp

import (
	"sync"
	"time"

	"github.com/berthnet/berth/clock"
)

// deadline is a read, write or accept deadline. One timer per deadline, created on first
// use and reset afterwards; when it fires it marks the deadline expired and wakes waiters.
type deadline struct {
	at      time.Time
	timer   clock.Timer
	expired bool
}

// set changes the deadline; the caller holds mu (the lock of cond).
func (d *deadline) set(clk clock.Clock, t time.Time, mu *sync.Mutex, cond *sync.Cond) {
	d.at, d.expired = t, false
	if t.IsZero() {
		if d.timer != nil {
			d.timer.Stop()
		}
		return
	}
	dur := t.Sub(clk.Now())
	if dur <= 0 {
		d.expired = true
		if d.timer != nil {
			d.timer.Stop()
		}
		cond.Broadcast()
		return
	}
	if d.timer != nil {
		d.timer.Reset(dur)
		return
	}
	d.timer = clk.AfterFunc(dur, func() {
		mu.Lock()
		defer mu.Unlock()
		if d.at.IsZero() || d.expired {
			return
		}
		if left := d.at.Sub(clk.Now()); left > 0 {
			d.timer.Reset(left)
			return
		}
		d.expired = true
		cond.Broadcast()
	})
}

func (d *deadline) stop() {
	if d.timer != nil {
		d.timer.Stop()
	}
}
