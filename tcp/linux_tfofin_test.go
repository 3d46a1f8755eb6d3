package tcp

import (
	"context"
	"testing"

	"github.com/berthnet/berth/wire"
)

// The ACK that completes a Fast Open child's handshake does not queue the child for
// accept again: it is there since its SYN. With a backlog of one, the child's own entry
// filled the queue, and the ACK (here with a FIN) was dropped as if the queue were full
// (tcp/fastopen/server/fin-close-socket.pkt: listen(3, 1), "< F. 11:11(0) ack 1" then
// "> . 1:1(0) ack 12", the child in CLOSE-WAIT with its SYN's data readable).
func TestLinuxFastOpenChildQueuedOnce(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenServer, FastOpenKey: linuxTestKey})
	l := s.listen(80, 1)
	l.SetFastOpen(2)
	cookie := s.p.fastOpenCookie(scriptRemote, scriptLocal)
	o := &wire.TCPOptions{HasMSS: true, MSS: 1460, SACKPermitted: true, FastOpen: wire.TCPOptExperimental, FastOpenLen: 8}
	copy(o.FastOpenCookie[:], cookie[:])
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 32792, Options: o}, []byte("0123456789"))
	sa := s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), Ack: is[uint32](remoteISS + 11), Len: is(0)})
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 11, Ack: sa.Seq() + 1, Flags: wire.TCPFlagFIN | wire.TCPFlagACK, Window: 32792}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 12), Len: is(0)})
	done, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := l.Accept(done)
	if err != nil {
		t.Fatal(err)
	}
	if st := c.State(); st != StateCloseWait {
		t.Fatalf("state %v, want CLOSE-WAIT", st)
	}
	buf := make([]byte, 32)
	if n, err := c.ReadNonblock(buf, false); err != nil || string(buf[:n]) != "0123456789" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	if n, err := c.ReadNonblock(buf, false); n != 0 || err != nil {
		t.Fatalf("read after the data: %d %v, want 0 (EOF)", n, err)
	}
	if c2, err := l.Accept(done); err == nil {
		t.Fatalf("the child was accepted twice (%p, %p)", c, c2)
	}
}
