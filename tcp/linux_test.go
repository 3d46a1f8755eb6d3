package tcp

import (
	"testing"

	"github.com/berthnet/berth/wire"
)

// Tests of behaviour berth shares with Linux where the RFCs leave a choice, each the
// packet expectation of one packetdrill script of the upstream suite (conformance/),
// named in the comment.

// PSH on the last segment of each burst of new data, not only on the one that empties the
// send queue (tcp/slow_start/slow-start-ack-per-1pkt.pkt, tcp/eor/no-coalesce-*.pkt: the
// initial window of a larger write goes out as "P. 1:10001(10000)").
func TestLinuxPSHBurstEnd(t *testing.T) {
	sc := dialScript(t, Config{}, nil, 65535)
	go sc.c.Write(make([]byte, 20*1460))
	for i := range 10 { // the initial window, RFC 6928
		sc.expect(want{Flags: is(wire.TCPFlagACK), PSH: is(i == 9), Seq: is(sc.iss + 1 + uint32(i*1460)), Len: is(1460)})
	}
	sc.none()
}
