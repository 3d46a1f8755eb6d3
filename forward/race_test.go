//go:build race

package forward

// bigDownload is the byte-exact transfer's size: smaller under the race detector, which
// makes bulk transfers ~10x slower.
const bigDownload = 16 << 20

// Flood and load sizes: the race detector allows 8,128 goroutines, and each forwarded
// connection has several.
const (
	manyConns  = 1000
	halfOpen   = 2000
	idleConns  = 200
	udpFloodN  = 1500
	pingFloodN = 150
	// TestUDPAndPingFlood's MaxUDPFlows and MaxEchoSessions (0: the defaults)
	floodMaxUDP  = 1024
	floodMaxEcho = 64
)
