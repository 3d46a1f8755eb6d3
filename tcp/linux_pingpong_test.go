package tcp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/berthnet/berth/wire"
)

// dialPP opens a connection to scriptRemote:80 through the handshake (no timestamps,
// no SACK) and returns it with the peer's next sequence number and ours.
func dialPP(t *testing.T, s *script) (c *Conn, peer, our uint32, port uint16) {
	t.Helper()
	ch := s.dialAsync()
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN)})
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535, Options: &wire.TCPOptions{HasMSS: true, MSS: 1000}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK)})
	c = <-ch
	if c == nil {
		t.FailNow()
	}
	return c, remoteISS + 1, syn.Seq() + 1, syn.SrcPort()
}

// A writer waiting for the connection (SetWritePending, Linux's sk_write_pending) makes
// the SYN-ACK's ACK wait for its data, and that data, sent within the delayed-ACK timeout
// of the SYN-ACK, makes the connection interactive as Linux's ping-pong mode: the peer's
// reply is not quick-acknowledged but waits for the delayed ACK or our next segment
// (tcp/fastopen/client/blocking-sendto.pkt: "> P. 901:1901(1000) ack 1", "< P. 1:501(500)
// ack 1901", "Ack is delayed until FIN", "> F. 1901:1901(0) ack 501"). Without a waiting
// writer the SYN-ACK is acknowledged at once and data written right after it is no reply:
// no data has arrived yet (Linux's ato is still zero), the reply is quick-acknowledged
// (nonblocking-sendto-over-mss.pkt: "> . 1421:1421(0) ack 1", "write", "> P.",
// "< P. 1:1001(1000)", "> . 5001:5001(0) ack 1001").
func TestLinuxPingPong(t *testing.T) {
	for _, pending := range []bool{true, false} {
		s := newScript(t, Config{NoTimestamps: true, NoSACK: true, DelayedACK: 40 * time.Millisecond})
		c := s.p.Socket()
		if err := c.Connect(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{}, false); err != nil {
			t.Fatal(err)
		}
		c.SetWritePending(pending)
		syn := s.expect(want{Flags: is(wire.TCPFlagSYN)})
		peer, our, port := uint32(remoteISS+1), syn.Seq()+1, syn.SrcPort()
		s.inject(wire.TCPFields{SrcPort: 80, DstPort: port, Seq: remoteISS, Ack: our,
			Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535, Options: &wire.TCPOptions{HasMSS: true, MSS: 1000}}, nil)
		if pending {
			s.none() // the ACK waits for the writer's data
		} else {
			s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(peer), Len: is(0)})
		}
		c.SetWritePending(false)
		c.Write([]byte("request"))
		s.expect(want{Ack: is(peer), Payload: is("request")})
		our += 7
		s.inject(wire.TCPFields{SrcPort: 80, DstPort: port, Seq: peer, Ack: our, Flags: wire.TCPFlagACK | wire.TCPFlagPSH, Window: 65535}, []byte("reply"))
		if !pending {
			s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(peer + 5), Len: is(0)})
			c.Abort()
			continue
		}
		s.none() // no quick ACK: the reply waits for our next segment
		// The delayed-ACK timer firing with the ACK owed ends the interactive mode.
		s.clk.Advance(40 * time.Millisecond)
		s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is(peer + 5), Len: is(0)})
		c.mu.Lock()
		pp := c.pingpong
		c.mu.Unlock()
		if pp {
			t.Fatal("still interactive after the delayed ACK fired")
		}
		c.Abort()
	}
}

// Info().Delivered (tcpi_delivered) counts the SYN and then each MSS-sized segment
// acknowledged (tcp/fastopen/client/blocking-sendto.pkt: 1 after the SYN-ACK, 2 after
// the ACK of one more segment).
func TestLinuxDelivered(t *testing.T) {
	s := newScript(t, Config{NoTimestamps: true, NoSACK: true})
	c, peer, our, port := dialPP(t, s)
	if got := c.Info().Delivered; got != 1 {
		t.Fatalf("Delivered %d after the handshake, want 1 (the SYN)", got)
	}
	c.Write(make([]byte, 2500)) // three segments of MSS 1000
	for range 3 {
		s.next()
	}
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: port, Seq: peer, Ack: our + 2500, Flags: wire.TCPFlagACK, Window: 65535}, nil)
	if got := c.Info().Delivered; got != 4 {
		t.Fatalf("Delivered %d after 2500 bytes in MSS 1000 were acknowledged, want 4", got)
	}
	c.Abort()
}
