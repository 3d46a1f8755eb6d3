package tcp

import (
	"time"

	"github.com/berthnet/berth/clock"
)

type timerKind uint8

const (
	timerNone       timerKind = iota
	timerRetransmit           // RFC 6298; also SYN and SYN-ACK retransmission
	timerPersist              // RFC 9293 §3.8.6.1 zero-window probes, and SWS override
	timerFinWait2             // orphaned FIN-WAIT-2 (tcp_fin_timeout)
	timerTimeWait             // 2*MSL
	timerKeepalive            // RFC 9293 §3.8.4 keep-alives, while idle
	timerReorder              // RFC 8985 §6.2 RACK reordering window
	timerTLP                  // RFC 8985 §7 tail loss probe
)

var timerNames = [...]string{"off", "on", "persist", "timewait", "timewait", "keepalive", "on", "on"}

// timers is a connection's one timer, multiplexed over the kinds above (the delayed ACK
// has its own, receiver.dack), with the RTT estimate and RTO (RFC 6298) and the backoff
// and probe counts. It is embedded in Conn and guarded by Conn.mu.
type timers struct {
	timer    clock.Timer
	tkind    timerKind
	tat      time.Time // when the current timer kind is due
	tsched   time.Time // when the underlying timer will fire; zero if not scheduled
	retries  int       // consecutive retransmission timeouts
	probes   int       // unanswered zero-window probes
	pbackoff int       // persist timer backoff, kept while the window stays shut
	srtt     time.Duration
	rttvar   time.Duration
	rto      time.Duration
	rttOn    bool
	rttSeq   uint32
	rttStart time.Time
	twStart  time.Time
	kaSeen   bool // a segment arrived since the keep-alive timer was armed
	kaProbes int
}
