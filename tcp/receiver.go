package tcp

import (
	"time"

	"github.com/berthnet/berth/clock"
)

// maxOOO bounds the out-of-order ranges a connection remembers; together with the
// receive buffer it bounds reassembly memory.
const maxOOO = 16

type span struct{ start, end uint32 }

// receiver is the receive side of a connection: the receive sequence space, the receive
// buffer with the out-of-order ranges reassembled in it, the window we offer and its
// auto-tuning, and the ACK policy (delayed ACKs, quick ACKs, D-SACK). It is embedded in
// Conn and guarded by Conn.mu.
type receiver struct {
	// Receive sequence space.
	irs, rcvNxt uint32
	rcvAdv      uint32 // right edge of the window last advertised
	rcvWscale   uint8
	rcvBuf      ring
	rcvBufMax   int
	// Auto-tuning (Config.RMem): the limit the buffer may grow to (0: fixed), and the
	// receiver's measurement of what the reader takes per RTT.
	rcvAutoMax int
	rcvCopied  int
	rcvSpaceAt time.Time
	rcvRTT     time.Duration // the receiver's RTT estimate from timestamps
	rcvRTTOK   bool
	rcvPeak    int // most unread bytes seen since the last auto-tuning step
	ooo        [maxOOO]span
	nooo       int
	oooFin     bool
	oooFinSeq  uint32
	oooHeld    int // out-of-order bytes counted in the stack-wide cap
	finRcvd    bool

	// ACK policy.
	ackPending int  // in-order segments not yet acknowledged
	ackNow     bool // an ACK must go out when the current input is done
	dack       clock.Timer
	dackOn     bool
	quickAcks  int  // in-order segments still acknowledged at once (as Linux's quickack)
	dsack      span // a D-SACK block owed to the peer (RFC 2883)
	dsackOn    bool
	oowLast    time.Time // last ACK sent for an out-of-window segment without data
}
