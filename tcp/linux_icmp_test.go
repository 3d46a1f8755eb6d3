package tcp

import (
	"context"
	"encoding/binary"
	"syscall"
	"testing"

	"github.com/berthnet/berth/wire"
)

// An ICMP host unreachable quoting our SYN-ACK drops a half-open passive connection,
// silently, back to LISTEN: the peer's ACK then finds no connection and is answered with
// RST (Linux's tcp_req_err; tcp/fastopen/server/icmp-baseline.pkt: "< icmp unreachable
// host_unreachable", "< . 1:1(0) ack 1", "> R 1:1(0)"). An error quoting another
// sequence number is ignored (RFC 5927 §4.1).
func TestLinuxICMPDropsRequest(t *testing.T) {
	s := newScript(t, Config{})
	s.listen(80, 1)
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 32792,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1460}}, nil)
	sa := s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1)})
	drops := s.p.Stats.ListenDrops.Load()
	wrong := append([]byte(nil), sa[:8]...)
	binary.BigEndian.PutUint32(wrong[4:], sa.Seq()+5000)
	s.p.HandleICMPError(scriptLocal, scriptRemote, wrong, syscall.EHOSTUNREACH, 0)
	s.p.HandleICMPError(scriptLocal, scriptRemote, sa[:8], syscall.ECONNREFUSED, 0) // not fatal for a request
	if s.p.Stats.ListenDrops.Load() != drops {
		t.Fatal("an out-of-window or soft ICMP error dropped the request")
	}
	s.p.HandleICMPError(scriptLocal, scriptRemote, sa[:8], syscall.EHOSTUNREACH, 0)
	if s.p.Stats.ListenDrops.Load() != drops+1 {
		t.Fatal("ICMP host unreachable did not drop the request")
	}
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 1, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 32792}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST), Seq: is(sa.Seq() + 1)})
}

// A Fast Open child not accepted yet fails with an ICMP host unreachable quoting its
// SYN-ACK: it stays in the accept queue, closed; the SYN's data is read, then the error,
// and a write fails with EPIPE; the peer's ACK is answered with RST
// (tcp/fastopen/server/icmp-before-accept.pkt).
func TestLinuxICMPFastOpenChild(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenServer | FastOpenServerNoSockopt, FastOpenKey: linuxTestKey})
	l := s.listen(80, 1)
	cookie := s.p.fastOpenCookie(scriptRemote, scriptLocal)
	o := &wire.TCPOptions{HasMSS: true, MSS: 1460, FastOpen: wire.TCPOptExperimental, FastOpenLen: 8}
	copy(o.FastOpenCookie[:], cookie[:])
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS, Flags: wire.TCPFlagSYN, Window: 32792, Options: o}, []byte("0123456789"))
	sa := s.expect(want{Flags: is(wire.TCPFlagSYN | wire.TCPFlagACK), Ack: is[uint32](remoteISS + 11)})
	s.p.HandleICMPError(scriptLocal, scriptRemote, sa[:8], syscall.EHOSTUNREACH, 0)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := l.Accept(done)
	if err != nil {
		t.Fatalf("the failed child left the accept queue: %v", err)
	}
	if st := c.State(); st != StateClosed {
		t.Fatalf("state %v, want CLOSED", st)
	}
	buf := make([]byte, 32)
	if n, err := c.ReadNonblock(buf, false); err != nil || string(buf[:n]) != "0123456789" {
		t.Fatalf("first read %q %v, want the SYN's data", buf[:n], err)
	}
	if _, err := c.ReadNonblock(buf, false); err != syscall.EHOSTUNREACH {
		t.Fatalf("second read: %v, want EHOSTUNREACH", err)
	}
	if _, err := c.WriteNonblock(make([]byte, 100)); err != syscall.EPIPE {
		t.Fatalf("write: %v, want EPIPE", err)
	}
	s.inject(wire.TCPFields{SrcPort: 4000, DstPort: 80, Seq: remoteISS + 11, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 32792}, nil)
	s.expect(want{Flags: is(wire.TCPFlagRST), Seq: is(sa.Seq() + 1)})
}
