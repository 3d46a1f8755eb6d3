package tcp

import (
	"context"
	"net/netip"
	"testing"

	"github.com/berthnet/berth/wire"
)

// fastOpenSYN opens a Fast Open connection with a cookie cached for scriptRemote and data
// in the SYN; it returns the connection and the SYN.
func fastOpenSYN(t *testing.T, s *script, data string) (*Conn, wire.TCP) {
	t.Helper()
	s.p.mu.Lock()
	if s.p.foCache == nil {
		s.p.foCache = make(map[netip.Addr]foEntry)
	}
	s.p.foCache[scriptRemote] = foEntry{cookie: [16]byte{0xab, 0xcd, 0x12, 0x34}, n: 4, kind: wire.TCPOptFastOpen, mss: 1460}
	s.p.mu.Unlock()
	c := s.p.Socket()
	if n, err := c.ConnectData(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(scriptRemote, 80), DialOptions{}, []byte(data), false); n != len(data) || err != nil {
		t.Fatalf("ConnectData: %d %v, want %d bytes in the SYN", n, err, len(data))
	}
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN), Payload: is(data)})
	if c.Info().SynData {
		t.Fatal("SynData set before the SYN-ACK")
	}
	return c, syn
}

// Info().SynData (TCPI_OPT_SYN_DATA) is set when the SYN-ACK acknowledges all of the SYN's
// data, and only then: not while the SYN is out, not when the SYN-ACK acknowledges the
// SYN alone, not after a reset (tcp/fastopen/client/blocking-connect-bypass-errno.pkt:
// "< R. 0:0(0) ack 1", "assert (tcpi_options & TCPI_OPT_SYN_DATA) == 0";
// nonblocking-sendto.pkt: "!= 0" after "< S. 0:0(0) ack 1001").
func TestLinuxFastOpenSynDataAcked(t *testing.T) {
	for _, tc := range []struct {
		name  string
		acked uint32 // of the SYN's 5 bytes
		want  bool
	}{{"all", 5, true}, {"partly", 2, false}, {"SYN only", 0, false}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
			c, syn := fastOpenSYN(t, s, "hello")
			s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1 + tc.acked,
				Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535, Options: &wire.TCPOptions{HasMSS: true, MSS: 1460}}, nil)
			s.expect(want{Flags: is(wire.TCPFlagACK), Ack: is[uint32](remoteISS + 1)})
			if got := c.Info().SynData; got != tc.want {
				t.Fatalf("SynData %v after a SYN-ACK acknowledging %d of 5 bytes, want %v", got, tc.acked, tc.want)
			}
			c.Abort()
		})
	}
	t.Run("reset", func(t *testing.T) {
		s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
		c, syn := fastOpenSYN(t, s, "hello")
		s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Ack: syn.Seq() + 1,
			Flags: wire.TCPFlagRST | wire.TCPFlagACK}, nil)
		if c.Info().SynData {
			t.Fatal("SynData set after a RST answered the SYN")
		}
	})
}

// A SYN-ACK's cookie is cached only when it is 4 to 16 bytes of even length (RFC 7413
// §4.1.1); an invalid one leaves the cached cookie in place but updates the server's MSS,
// which sizes the next SYN's data (tcp/fastopen/client/valid-cookie-format.pkt:
// "< S. ... <mss 940,...,FO 1122>", then "sendto(5, ..., 1000, MSG_FASTOPEN) = 900" with
// "FO 00000000").
func TestLinuxFastOpenInvalidCookie(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
	c, syn := fastOpenSYN(t, s, "hello")
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 6,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535, Options: &wire.TCPOptions{HasMSS: true, MSS: 940,
			FastOpen: wire.TCPOptFastOpen, FastOpenLen: 2, FastOpenCookie: [16]byte{0x11, 0x22}}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK)})
	c.Abort()
	s.p.mu.Lock()
	e := s.p.foCache[scriptRemote]
	s.p.mu.Unlock()
	if e.n != 4 || e.cookie[0] != 0xab || e.mss != 940 {
		t.Fatalf("cache %+v: want the old 4-byte cookie with MSS 940", e)
	}
}

// With FastOpenClientNoCookie the SYN carries data and no option; the SYN-ACK's MSS is
// cached (sizing the next SYN's data) but a cookie it carries unasked is not
// (tcp/fastopen/client/cookie-less-sendto.pkt: "Unsolicited cookies is not cached", and
// "940 - 40 (max tcp hdr) = 900").
func TestLinuxFastOpenNoCookieMSS(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenClient | FastOpenClientNoCookie, NoTimestamps: true})
	remote := netip.AddrPortFrom(scriptRemote, 80)
	c := s.p.Socket()
	if n, err := c.ConnectData(context.Background(), netip.AddrPort{}, remote, DialOptions{}, []byte("hello"), false); n != 5 || err != nil {
		t.Fatalf("ConnectData: %d %v, want 5 bytes in the SYN", n, err)
	}
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN), Payload: is("hello")})
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 6,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535, Options: &wire.TCPOptions{HasMSS: true, MSS: 940,
			FastOpen: wire.TCPOptFastOpen, FastOpenLen: 4, FastOpenCookie: [16]byte{0xab, 0xcd, 0x12, 0x34}}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK)})
	if s.p.HasFastOpenCookie(scriptRemote) {
		t.Fatal("an unsolicited cookie was cached")
	}
	c2 := s.p.Socket()
	if n, err := c2.ConnectData(context.Background(), netip.AddrPort{}, remote, DialOptions{}, make([]byte, 2000), false); n != 900 || err != nil {
		t.Fatalf("second ConnectData: %d %v, want 900 (the cached MSS 940 less 40 bytes of options)", n, err)
	}
	c.Abort()
	c2.Abort()
}
