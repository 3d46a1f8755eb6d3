package tcp

import (
	"syscall"
	"testing"

	"github.com/berthnet/berth/wire"
)

// drain takes the segments the stack has sent by now, returning their payload bytes.
func (sc *scriptConn) drain() int {
	n := 0
	for {
		select {
		case b := <-sc.out:
			n += len(wire.TCP(b).Payload())
		default:
			return n
		}
	}
}

// MSG_EOR ends a record: data written after it goes in a segment of its own, also when
// the record is retransmitted (tcp/eor/no-coalesce-small.pkt: "send(4, ..., 400,
// MSG_EOR)", "write(4, ..., 10000)", then "> P. 10001:10801(800)",
// "> P. 10801:20801(10000)"; no-coalesce-retrans.pkt for retransmissions).
func TestLinuxEOR(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	// Nagle, in Minshall's variant as Linux's, holds partial segments while a partial
	// segment is in flight.
	sc.c.SetNoDelay(false)
	const head = 50
	sc.c.Write(make([]byte, head))
	sc.expect(want{Len: is(head)})
	if n, err := sc.c.WriteMsg(make([]byte, 100), MsgEOR); n != 100 || err != nil {
		t.Fatal(n, err)
	}
	sc.none() // Nagle: the record is the last of the queue
	sc.c.Write(make([]byte, 100))
	// Not the last any more: the record goes alone, not coalesced with the new data,
	// which Nagle holds.
	rec := sc.expect(want{Seq: is(sc.iss + 1 + head), Len: is(100), PSH: is(true)})
	sc.none()
	// The retransmission timeout resends the record alone, not an MSS's worth.
	sc.sndNxt += head
	sc.send(wire.TCPFlagACK, nil)
	sc.none()
	sc.clk.Advance(sc.c.Info().RTO)
	sc.expect(want{Seq: is(rec.Seq()), Len: is(100), PSH: is(true)})
}

// MSG_MORE corks only the write that carries it: the ACK of data in flight sends what it
// left, without PSH, when TCP_NODELAY is on (tcp/nagle/sendmsg_msg_more.pkt: "< . 1:1(0)
// ack 2801", "> . 3801:3951(150)").
func TestLinuxMsgMoreAck(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	mss := sc.c.Info().MSS
	sc.c.Write(make([]byte, mss))
	sc.expect(want{Len: is(mss)})
	sc.c.WriteMore(make([]byte, 100), true)
	sc.none() // held by MSG_MORE (not by Nagle: TCP_NODELAY is on)
	sc.sndNxt += uint32(mss)
	sc.send(wire.TCPFlagACK, nil)
	sc.expect(want{Seq: is(sc.sndNxt), Len: is(100), PSH: is(false)})
}

// TCP_NOTSENT_LOWAT: a write queues a new chunk only while less than the mark is unsent,
// and the connection polls writable only while less than half of it is
// (tcp/notsent_lowat/notsent-lowat-setsockopt.pkt: "write(4, ..., 59000) = 26000", the
// POLLOUT once the unsent data is below 2000 of 4000).
func TestLinuxNotSentLowat(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	const lowat = 2000
	if err := sc.c.SetNotSentLowat(lowat); err != nil {
		t.Fatal(err)
	}
	if got := sc.c.NotSentLowat(); got != lowat {
		t.Fatalf("NotSentLowat %d", got)
	}
	sc.c.mu.Lock()
	goal := sc.c.sizeGoal()
	sc.c.mu.Unlock()
	n, err := sc.c.WriteNonblock(make([]byte, 200000))
	sent := sc.drain()
	// The first chunk, its sent head replaced by more data up to the goal: Linux's tail
	// skb after tso_fragment.
	if err != nil || n != sent+goal {
		t.Fatalf("write %d %v, want %d (sent %d + goal %d)", n, err, sent+goal, sent, goal)
	}
	if _, err := sc.c.WriteNonblock(make([]byte, 1)); err != syscall.EAGAIN {
		t.Fatalf("second write: %v, want EAGAIN", err)
	}
	for acked := 0; sent < n; {
		notsent := n - sent
		if r := sc.c.Readiness(); r.Writable != (2*notsent < lowat) {
			t.Fatalf("writable %v with %d unsent", r.Writable, notsent)
		}
		if acked == sent {
			t.Fatalf("stalled with %d unsent", notsent)
		}
		sc.sndNxt += uint32(sent - acked)
		acked = sent
		sc.send(wire.TCPFlagACK, nil)
		sent += sc.drain()
	}
	if r := sc.c.Readiness(); !r.Writable {
		t.Fatal("not writable with nothing unsent")
	}
}
