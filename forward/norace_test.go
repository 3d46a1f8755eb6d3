//go:build !race

package forward

const bigDownload = 256 << 20

// Flood and load sizes (issue 19 item 7).
const (
	manyConns  = 5000
	halfOpen   = 5000
	idleConns  = 500
	udpFloodN  = 20000
	pingFloodN = 2000
	// TestUDPAndPingFlood's MaxUDPFlows and MaxEchoSessions (0: the defaults)
	floodMaxUDP  = 0
	floodMaxEcho = 0
)
