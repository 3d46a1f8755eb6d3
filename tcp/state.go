package tcp

// State is a connection state (RFC 9293 §3.3.2).
type State uint8

const (
	StateClosed      State = iota // no connection (RFC 9293 §3.3.2)
	StateListen                   // waiting for a SYN
	StateSynSent                  // our SYN sent, waiting for the SYN-ACK
	StateSynReceived              // SYN received and answered, waiting for the ACK
	StateEstablished              // open: data flows both ways
	StateFinWait1                 // we closed; our FIN not yet acknowledged
	StateFinWait2                 // our FIN acknowledged; waiting for the peer's
	StateCloseWait                // the peer closed; we may still send
	StateClosing                  // both closed at once; waiting for the ACK of our FIN
	StateLastAck                  // the peer closed first, then we did; waiting for the ACK of our FIN
	StateTimeWait                 // both closed; holding the 4-tuple for 2*MSL
)

var stateNames = [...]string{
	StateClosed:      "CLOSED",
	StateListen:      "LISTEN",
	StateSynSent:     "SYN-SENT",
	StateSynReceived: "SYN-RECEIVED",
	StateEstablished: "ESTABLISHED",
	StateFinWait1:    "FIN-WAIT-1",
	StateFinWait2:    "FIN-WAIT-2",
	StateCloseWait:   "CLOSE-WAIT",
	StateClosing:     "CLOSING",
	StateLastAck:     "LAST-ACK",
	StateTimeWait:    "TIME-WAIT",
}

// String returns the RFC's name of the state ("ESTABLISHED").
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "STATE?"
}

// synchronized reports whether the state is past the handshake (RFC 9293 §3.5.2).
func (s State) synchronized() bool { return s >= StateEstablished }

// sending reports whether the connection may still send data it holds.
func (s State) sending() bool {
	switch s {
	case StateEstablished, StateCloseWait, StateFinWait1, StateClosing, StateLastAck:
		return true
	}
	return false
}

// receiving reports whether the peer may still send data.
func (s State) receiving() bool {
	switch s {
	case StateEstablished, StateFinWait1, StateFinWait2:
		return true
	}
	return false
}
