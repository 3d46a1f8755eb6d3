package berth_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/berthnet/berth"
)

// TestStatsTCP: Stats holds TCP's counters under the kernel's names, and TcpCurrEstab is
// a gauge (RFC 4022 tcpCurrEstab: ESTABLISHED or CLOSE-WAIT) that follows connections up
// and down: through a handshake, a half-close, a close, a reset.
func TestStatsTCP(t *testing.T) {
	s := berth.New()
	defer s.Close()
	st := s.Stats()
	for _, n := range []string{"TcpActiveOpens", "TcpPassiveOpens", "TcpAttemptFails", "TcpEstabResets",
		"TcpCurrEstab", "TcpInSegs", "TcpOutSegs", "TcpRetransSegs", "TcpInErrs", "TcpOutRsts",
		"TcpExtListenDrops", "TcpExtTCPChallengeACK", "TcpExtSyncookiesSent", "TcpExtTCPTimeouts"} {
		if _, ok := st[n]; !ok {
			t.Errorf("Stats has no %s", n)
		}
	}
	ctx := context.Background()
	ln, err := s.Listen(ctx, "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wait := func(what string, want uint64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for s.Stats()["TcpCurrEstab"] != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: TcpCurrEstab %d, want %d", what, s.Stats()["TcpCurrEstab"], want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	var clients, servers []net.Conn
	for range 3 {
		c, err := s.DialContext(ctx, "tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		clients, servers = append(clients, c), append(servers, a)
	}
	wait("3 connections, both ends on this stack", 6)
	if st := s.Stats(); st["TcpActiveOpens"] != 3 || st["TcpPassiveOpens"] != 3 {
		t.Errorf("TcpActiveOpens %d, TcpPassiveOpens %d, want 3 each", st["TcpActiveOpens"], st["TcpPassiveOpens"])
	}
	// The client's FIN: it goes to FIN-WAIT, the server's end to CLOSE-WAIT, which counts.
	clients[0].Close()
	wait("a half-closed connection", 5)
	servers[0].Close() // LAST-ACK, then closed; the client's end waits in TIME-WAIT
	wait("a closed connection", 4)
	// A reset (SO_LINGER 0) takes both ends out at once.
	clients[1].(*berth.TCPConn).SetLinger(0)
	clients[1].Close()
	wait("a reset connection", 2)
	clients[2].Close()
	servers[2].Close()
	wait("every connection closed", 0)
}
