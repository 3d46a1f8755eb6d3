// Package deadline is a resettable read or write deadline on an injectable clock, for
// sockets whose blocked callers select on a channel (UDP and raw ICMP endpoints).
package deadline

import (
	"sync"
	"time"

	"github.com/berthnet/berth/clock"
)

// Deadline's channel closes when the deadline passes and is replaced only after that, so
// blocked readers always wait on the channel the next expiry closes. The zero value is not
// ready: call Init first.
type Deadline struct {
	mu        sync.Mutex
	clk       clock.Clock
	t         clock.Timer
	gen       uint64 // invalidates callbacks of timers replaced by Set
	ch        chan struct{}
	isExpired bool
}

// Init readies d to run on clock c.
func (d *Deadline) Init(c clock.Clock) {
	d.clk = c
	d.ch = make(chan struct{})
}

// Set moves the deadline to t; the zero time means none. A time in the past expires it now.
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.t != nil {
		d.t.Stop()
		d.t = nil
	}
	if d.isExpired {
		d.ch = make(chan struct{})
		d.isExpired = false
	}
	if t.IsZero() {
		return
	}
	dur := t.Sub(d.clk.Now())
	if dur <= 0 {
		close(d.ch)
		d.isExpired = true
		return
	}
	gen := d.gen
	d.t = d.clk.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen && !d.isExpired {
			close(d.ch)
			d.isExpired = true
		}
	})
}

// Channel returns the channel that closes when the current deadline passes.
func (d *Deadline) Channel() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// Expired reports whether the deadline has passed.
func (d *Deadline) Expired() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.isExpired
}

// Stop cancels the pending timer (on close of the socket).
func (d *Deadline) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.t != nil {
		d.t.Stop()
		d.t = nil
	}
}
