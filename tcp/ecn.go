package tcp

import (
	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// Explicit Congestion Notification (RFC 3168 §6.1), as Linux's tcp_ecn: negotiated in the
// handshake (ECE and CWR on the SYN, ECE on the SYN-ACK), then new data goes out ECT(0);
// a receiver that gets a CE-marked segment sets ECE on everything it sends until a
// segment with CWR arrives; a sender that gets ECE reduces cwnd as for a loss, at most
// once per window of data, and sets CWR on its next new segment. The IP header's ECN field
// travels through the transport contract (transport.ECNNetwork out, transport.ECNHandler
// in): TCP never looks at an IP header itself.

// Config.ECN values, as Linux's tcp_ecn sysctl.
const (
	// ECNRequest (tcp_ecn=1): request ECN on active opens and accept it on passive ones.
	ECNRequest = 1
	// ECNAccept (tcp_ecn=2, Linux's default): accept ECN when a peer's SYN requests it;
	// active opens do not request it.
	ECNAccept = 2
)

// ecnState is a connection's ECN state (c.mu held).
type ecnState struct {
	ok        bool   // negotiated (RFC 3168 §6.1.1): new data is ECT(0)
	requested bool   // our SYN requested ECN (an active open with ECNRequest)
	demandCWR bool   // a CE mark arrived: ECE on every segment until the peer's CWR (§6.1.3)
	queueCWR  bool   // cwnd was reduced for an ECE: CWR on the next new data (§6.1.2)
	reducing  bool   // a reduction for ECE covers the data up to cwrHigh
	cwrHigh   uint32 // SND.MAX when the reduction began
}

// SetECN sets tcp_ecn at run time, as writing the sysctl does on Linux: 0 or negative
// turns ECN off, ECNRequest requests it on active opens and accepts it, ECNAccept only
// accepts it. It applies to handshakes that start afterwards; connections keep what they
// negotiated. Over a network that cannot mark packets (no transport.ECNNetwork) ECN stays
// off.
func (p *Protocol) SetECN(mode int) {
	if p.ecnNet != nil {
		p.ecnMode.Store(int32(max(mode, 0)))
	}
}

// ECN reports the protocol's tcp_ecn (Config.ECN, or SetECN's last value).
func (p *Protocol) ECN() int { return int(p.ecnMode.Load()) }

// ecnSYNFlags are the ECN flags of our SYN or SYN-ACK (sendSYN). An active open requests
// ECN with ECE and CWR (an "ECN-setup SYN", RFC 3168 §6.1.1) on its first SYN only: a
// retransmitted SYN goes without, in case a middlebox drops ECN-setup SYNs (§6.1.1.1, as
// Linux's tcp_ecn_fallback). A SYN-ACK carries ECE when the connection accepted ECN.
func (c *Conn) ecnSYNFlags() uint8 {
	if c.state == StateSynReceived {
		if c.ecn.ok {
			return wire.TCPFlagECE
		}
		return 0
	}
	c.ecn.requested = c.retries == 0 && c.p.ECN() == ECNRequest
	if c.ecn.requested {
		return wire.TCPFlagECE | wire.TCPFlagCWR
	}
	return 0
}

// ecnSynSent takes the peer's answer to our SYN (RFC 3168 §6.1.1): a SYN-ACK with ECE and
// without CWR agrees; in a simultaneous open the peer's own SYN must be an ECN-setup SYN.
func (c *Conn) ecnSynSent(s *segment) {
	ece, cwr := s.flags&wire.TCPFlagECE != 0, s.flags&wire.TCPFlagCWR != 0
	if s.flags&flagACK != 0 {
		c.ecn.ok = c.ecn.requested && ece && !cwr
	} else {
		c.ecn.ok = c.ecn.requested && ece && cwr
	}
}

// ecnPassive decides whether a passive open accepts the ECN its SYN s requests: the SYN
// must carry ECE and CWR, and be not-ECT itself (RFC 3168 §6.1.1: SYNs are never ECT; one
// that is was remarked on the way, as Linux's tcp_ecn_create_request judges), or carry a
// reserved header bit (a newer ECN variant's setup). tcp_ecn must be on (either value).
func (c *Conn) ecnPassive(s *segment) {
	if c.p.ECN() == 0 || s.flags&(wire.TCPFlagECE|wire.TCPFlagCWR) != wire.TCPFlagECE|wire.TCPFlagCWR {
		return
	}
	c.ecn.ok = s.ecn == transport.NotECT || s.hdr[12]&0x0f != 0
}

// ecnOut adds the ECN flags of a segment other than a SYN (emit) and returns the ECN
// codepoint it goes out with. ECE while a CE mark waits for the peer's CWR (RFC 3168
// §6.1.3). New data is ECT(0) and takes a queued CWR (§6.1.2); retransmissions, pure ACKs
// and window probes stay not-ECT (§6.1.5, §6.1.4, §6.1.6), as Linux's tcp_ecn_send.
func (c *Conn) ecnOut(seq uint32, flags *uint8, n int) transport.ECN {
	if c.ecn.demandCWR {
		*flags |= wire.TCPFlagECE
	}
	if n == 0 || seqLT(seq, c.sndMax) || c.probePush {
		return transport.NotECT
	}
	if c.ecn.queueCWR {
		c.ecn.queueCWR = false
		*flags |= wire.TCPFlagCWR
	}
	return transport.ECT0
}

// ecnReceive is the data receiver's part (RFC 3168 §6.1.3) for a segment with data: CWR
// ends the echo; a CE mark starts it, acknowledged at once so that the sender learns of
// the congestion within the RTT (Linux enters quick-ACK mode).
func (c *Conn) ecnReceive(s *segment) {
	if s.flags&wire.TCPFlagCWR != 0 {
		c.ecn.demandCWR = false
	}
	if s.ecn == transport.CE && !c.ecn.demandCWR {
		c.ecn.demandCWR = true
		c.ackNow = true
	}
}

// ecnEcho is the data sender's response to an ACK with ECE (RFC 3168 §6.1.2): cwnd is
// reduced as for a loss (the congestion control's multiplicative decrease, RFC 9438 §4.6
// for CUBIC), but not again for ECEs of the same window of data, and not during loss
// recovery, which has reduced it already. CWR goes on the next new data segment.
func (c *Conn) ecnEcho() {
	if c.inRecovery || c.ecn.reducing {
		return
	}
	c.cc.OnCongestion(int(c.sndMax - c.sndUna))
	c.cc.SetWindow(max(c.cc.SSThresh(), c.mss))
	c.ecn.reducing, c.ecn.cwrHigh, c.ecn.queueCWR = true, c.sndMax, true
}

// ecnAck is the ACK processing of ECN (processAck, for ACKs of synchronized states): the
// reduction ends when data beyond the window it covered is acknowledged, so that the
// segment with CWR has reached the receiver (ECEs until then echo the same congestion;
// Linux's TCP_CA_CWR state ends alike); an ECE (never counted on a SYN-ACK) reduces cwnd.
func (c *Conn) ecnAck(s *segment) {
	if c.ecn.reducing && seqGT(s.ack, c.ecn.cwrHigh) {
		c.ecn.reducing = false
	}
	if s.flags&(wire.TCPFlagECE|flagSYN) == wire.TCPFlagECE {
		c.ecnEcho()
	}
}
