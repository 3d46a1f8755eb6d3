package sock

import (
	"sync"
	"time"

	"github.com/berthnet/berth/link"
)

// endpoint is the Host's one interface: packets the stack sends queue here, stamped with
// the virtual time, until the harness sniffs them; packets the harness injects are
// delivered synchronously, so that everything they cause happens before Inject returns.
type endpoint struct {
	mtu int
	clk *VClock

	mu     sync.Mutex
	disp   link.Dispatcher
	out    []outPacket
	closed bool
}

type outPacket struct {
	b  []byte
	at time.Time
}

func (e *endpoint) MTU() int { return e.mtu }

func (e *endpoint) Attach(d link.Dispatcher) {
	e.mu.Lock()
	e.disp = d
	e.mu.Unlock()
}

func (e *endpoint) WritePackets(pkts [][]byte) (int, error) {
	now := e.clk.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return 0, nil
	}
	for _, p := range pkts {
		e.out = append(e.out, outPacket{b: append([]byte(nil), p...), at: now})
	}
	return len(pkts), nil
}

func (e *endpoint) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	return nil
}

// pop takes the oldest outbound packet.
func (e *endpoint) pop() (outPacket, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.out) == 0 {
		return outPacket{}, false
	}
	p := e.out[0]
	e.out[0] = outPacket{}
	e.out = e.out[1:]
	return p, true
}

func (e *endpoint) deliver(b []byte) {
	e.mu.Lock()
	d := e.disp
	e.mu.Unlock()
	if d != nil {
		d.DeliverPackets([][]byte{b})
	}
}
