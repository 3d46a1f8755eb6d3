package sock

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
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

// gsoMax is the largest super-segment the endpoint takes: packetdrill's TUN device in the
// kernel's mode hands over TSO/GSO packets unsegmented, and the scripts expect them so
// (a 10-segment initial burst is one "P. 1:10001(10000)" line).
const gsoMax = 65535

func (e *endpoint) GSOMaxSize() int { return gsoMax }

// WriteGSO queues the super-segment whole, as the kernel's TUN shows it, with its TCP
// checksum completed.
func (e *endpoint) WriteGSO(pkt []byte, mss int) error {
	b := append([]byte(nil), pkt...)
	var src, dst netip.Addr
	var off int
	switch b[0] >> 4 {
	case 4:
		off = int(b[0]&0xf) * 4
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
	case 6:
		off = 40
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return nil
	}
	seg := b[off:]
	seg[16], seg[17] = 0, 0
	sum := wire.Checksum(seg, wire.PseudoHeaderChecksum(wire.ProtoTCP, src, dst, len(seg)))
	binary.BigEndian.PutUint16(seg[16:], ^sum)
	now := e.clk.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		e.out = append(e.out, outPacket{b: b, at: now})
	}
	return nil
}
