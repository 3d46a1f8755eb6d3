package tcp

import (
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
)

// TestRecoveryWindow follows cwnd through NewReno fast recovery (RFC 5681 §3.2, RFC 6582
// §3.2) on top of each policy: the policy decides ssthresh (half the flight for NewReno,
// β = 0.7 of it for CUBIC), recovery the window from there, the same for both.
func TestRecoveryWindow(t *testing.T) {
	for _, tc := range []struct {
		cc       CongestionControl
		ssthresh int
	}{
		{NewNewReno(ccMSS), 10 * ccMSS},
		{NewCubic(ccMSS, clock.NewManual(time.Unix(1e9, 0))), 14 * ccMSS},
	} {
		cc := tc.cc
		cc.SetWindow(20 * ccMSS)
		step := func(what string, want int) {
			t.Helper()
			if cc.Window() != want {
				t.Fatalf("%s: %s: cwnd %d, want %d", cc.Name(), what, cc.Window(), want)
			}
		}
		recoveryStart(cc, 20*ccMSS, ccMSS)
		if cc.SSThresh() != tc.ssthresh {
			t.Fatalf("%s: ssthresh %d, want %d", cc.Name(), cc.SSThresh(), tc.ssthresh)
		}
		step("fast retransmit (ssthresh + 3*SMSS)", tc.ssthresh+3*ccMSS)
		recoveryDupAck(cc, ccMSS)
		step("a fourth duplicate (+SMSS)", tc.ssthresh+4*ccMSS)
		recoveryPartialAck(cc, 3*ccMSS, ccMSS)
		step("partial ACK of 3 SMSS (-3, +1)", tc.ssthresh+2*ccMSS)
		recoveryPartialAck(cc, ccMSS/2, ccMSS)
		step("partial ACK of half an SMSS", tc.ssthresh+2*ccMSS-ccMSS/2)
		recoveryExit(cc, 4*ccMSS, ccMSS)
		step("full ACK with 4 SMSS in flight (FlightSize + SMSS)", 5*ccMSS)
		recoveryStart(cc, 40*ccMSS, ccMSS)
		recoveryExit(cc, 40*ccMSS, ccMSS)
		step("full ACK with much in flight (ssthresh)", cc.SSThresh())
	}
}
