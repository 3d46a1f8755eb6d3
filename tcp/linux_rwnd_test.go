package tcp

import (
	"context"
	"testing"

	"github.com/berthnet/berth/wire"
)

// Without window scale the window field caps the window at 65535: a read does not make a
// buffer larger than that look like room for a doubled window, so it sends no window
// update that would only offer the bytes read (tcp/ioctl/ioctl-siocinq-fin.pkt: after
// "< P. 1:1001(1000)" and read(4, ..., 1000) the next segment is the ACK of the FIN).
func TestLinuxNoUpdateBeyondUnscaledWindow(t *testing.T) {
	s := newScript(t, Config{RMem: [3]int{4096, 540000, 15 << 20}})
	l := s.listen(80, 1)
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 20000,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1000, SACKPermitted: true}}, nil)
	sa := s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), HasWS: is(false)})
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 20000}, nil)
	c, err := l.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK | wire.TCPFlagPSH, Window: 257}, make([]byte, 1000))
	s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1001), Win: is[uint16](65535)})
	if n, err := c.ReadNonblock(make([]byte, 1000), false); n != 1000 || err != nil {
		t.Fatalf("read %d %v", n, err)
	}
	s.none()
}
