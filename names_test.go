package berth_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/vnet"
	"golang.org/x/net/dns/dnsmessage"
)

// serveDNS answers A and AAAA queries from zone (names with the trailing dot) on pc until
// it closes; other names get NXDOMAIN. It counts the queries it saw on queries.
func serveDNS(pc net.PacketConn, zone map[string][]netip.Addr, queries chan<- string) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		if queries != nil {
			select {
			case queries <- q.Name.String() + " " + q.Type.String():
			default:
			}
		}
		addrs, ok := zone[strings.ToLower(q.Name.String())]
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
		if !ok {
			rh.RCode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.EnableCompression()
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		for _, a := range addrs {
			rrh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
			switch {
			case q.Type == dnsmessage.TypeA && a.Is4():
				b.AResource(rrh, dnsmessage.AResource{A: a.As4()})
			case q.Type == dnsmessage.TypeAAAA && a.Is6():
				b.AAAAResource(rrh, dnsmessage.AAAAResource{AAAA: a.As16()})
			}
		}
		msg, err := b.Finish()
		if err != nil {
			continue
		}
		pc.WriteTo(msg, from)
	}
}

// dnsPair is a vnet.Pair whose stacks use a DNS server on a (10.0.0.1:53) serving zone.
func dnsPair(t *testing.T, zone map[string][]netip.Addr, opts ...berth.Option) (a, b *berth.Stack, queries chan string) {
	t.Helper()
	// Port 0 stands for 53.
	opts = append([]berth.Option{berth.WithDNS(netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), 0))}, opts...)
	a, b = pair(t, vnet.WithStackOptions(opts...))
	pc, err := a.ListenPacket(context.Background(), "udp", "10.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	queries = make(chan string, 64)
	go serveDNS(pc, zone, queries)
	return a, b, queries
}

// An http.Client on one stack fetches http://server.test/ from the other: the name is
// looked up by Go's resolver over berth's UDP, the port is the scheme's.
func TestHTTPClientByName(t *testing.T) {
	a, b, queries := dnsPair(t, map[string][]netip.Addr{
		"server.test.": {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
	})
	l, err := a.Listen(context.Background(), "tcp", ":http")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.Host+" via "+r.RemoteAddr[:strings.LastIndex(r.RemoteAddr, ":")])
	})}
	go srv.Serve(l)
	defer srv.Close()
	tr := &http.Transport{DialContext: b.DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://server.test/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// RFC 8305: IPv6 first, and it answers.
	if got, want := string(body), "hello from server.test via [fd00::2]"; got != want {
		t.Errorf("body = %q, want %q", got, want)
	}
	seen := map[string]bool{}
	for len(queries) > 0 {
		seen[<-queries] = true
	}
	if !seen["server.test. TypeA"] || !seen["server.test. TypeAAAA"] {
		t.Errorf("queries seen by the server: %v, want A and AAAA for server.test.", seen)
	}
}

func TestLookupNetIP(t *testing.T) {
	_, b, _ := dnsPair(t, map[string][]netip.Addr{
		"both.test.": {netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("fd00::9")},
	}, berth.WithHosts(map[string][]netip.Addr{"Static.Test.": {netip.MustParseAddr("192.0.2.7")}}))
	ctx := context.Background()
	got, err := b.LookupNetIP(ctx, "ip", "both.test")
	if err != nil || len(got) != 2 {
		t.Fatalf("LookupNetIP(both.test) = %v, %v; want both addresses", got, err)
	}
	if got, err := b.LookupNetIP(ctx, "ip6", "both.test"); err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("fd00::9") {
		t.Errorf("LookupNetIP(ip6, both.test) = %v, %v; want [fd00::9]", got, err)
	}
	// Static entries: case-insensitive, trailing dot or not, never asked of DNS.
	for _, name := range []string{"static.test", "STATIC.TEST."} {
		if got, err := b.LookupNetIP(ctx, "ip", name); err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.7") {
			t.Errorf("LookupNetIP(%s) = %v, %v; want the static entry", name, got, err)
		}
	}
	_, err = b.LookupNetIP(ctx, "ip", "missing.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("LookupNetIP(missing.test) error = %#v, want a *net.DNSError with IsNotFound", err)
	}
	// The resolver itself, as a library would use it.
	names, err := b.Resolver().LookupHost(ctx, "both.test")
	if err != nil || len(names) != 2 {
		t.Errorf("Resolver().LookupHost = %v, %v", names, err)
	}
}

// A stack without DNS servers fails a name at once, with package net's error shape.
func TestDialNameWithoutServers(t *testing.T) {
	_, b := pair(t)
	_, err := b.DialContext(context.Background(), "tcp", "server.test:80")
	var oe *net.OpError
	var de *net.DNSError
	if !errors.As(err, &oe) || oe.Op != "dial" || !errors.As(err, &de) || !de.IsNotFound {
		t.Fatalf("dial error = %v, want *net.OpError wrapping *net.DNSError (not found)", err)
	}
	if got, want := err.Error(), "dial tcp: lookup server.test: no such host"; got != want {
		t.Errorf("error text = %q, want %q (as net.Dial)", got, want)
	}
}

// RFC 8305: a silent IPv6 address delays the dial by the Connection Attempt Delay, not by
// a connect timeout; a refused one does not delay it at all.
func TestHappyEyeballs(t *testing.T) {
	a, b, _ := dnsPair(t, map[string][]netip.Addr{
		// fd00::99 is on the link but nobody has it: the SYN goes unanswered.
		"silent6.test.":  {netip.MustParseAddr("fd00::99"), netip.MustParseAddr("10.0.0.1")},
		"refused6.test.": {netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.0.0.1")},
		"dead.test.":     {netip.MustParseAddr("fd00::99"), netip.MustParseAddr("10.0.0.99")},
	})
	l, err := a.Listen(context.Background(), "tcp4", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go closeEach(l)
	for _, tc := range []struct {
		name     string
		min, max time.Duration
	}{
		{"silent6.test", 200 * time.Millisecond, 3 * time.Second},
		{"refused6.test", 0, 200 * time.Millisecond},
	} {
		start := time.Now()
		c, err := b.DialContext(context.Background(), "tcp", tc.name+":8080")
		el := time.Since(start)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := c.RemoteAddr().String(); got != "10.0.0.1:8080" {
			t.Errorf("%s: connected to %s, want 10.0.0.1:8080", tc.name, got)
		}
		c.Close()
		if el < tc.min || el > tc.max {
			t.Errorf("%s: dial took %v, want %v..%v", tc.name, el, tc.min, tc.max)
		}
	}
	// All addresses dead: the error is the first attempt's (IPv6), as in package net.
	d := berth.Dialer{Stack: b, Timeout: 1500 * time.Millisecond}
	_, err = d.DialContext(context.Background(), "tcp", "dead.test:8080")
	if err == nil || !strings.Contains(err.Error(), "[fd00::99]:8080") {
		t.Errorf("dial dead.test: %v, want the IPv6 attempt's error", err)
	}
}

// Named ports come from berth's IANA registry, not the host's /etc/services.
func TestNamedPorts(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	l, err := a.Listen(ctx, "tcp", ":pcsync-https")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Addr().String(); got != "[::]:8443" {
		t.Errorf("Listen(:pcsync-https).Addr() = %s, want [::]:8443", got)
	}
	c, err := b.DialContext(ctx, "tcp4", "10.0.0.1:PCSYNC-HTTPS")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	pc, err := a.ListenPacket(ctx, "udp", ":domain")
	if err != nil {
		t.Fatal(err)
	}
	if got := pc.LocalAddr().String(); got != "[::]:53" {
		t.Errorf("ListenPacket(:domain) = %s, want [::]:53", got)
	}
	pc.Close()
	_, err = a.Listen(ctx, "tcp", ":no-such-service-x")
	_, nerr := net.Listen("tcp", ":no-such-service-x")
	if err == nil || nerr == nil || err.Error() != nerr.Error() {
		t.Errorf("unknown service: berth %q, net %q", err, nerr)
	}
}

// A truncated UDP answer makes Go's resolver ask again over TCP: both go over berth.
func TestResolverFallsBackToTCP(t *testing.T) {
	a, b := pair(t, vnet.WithStackOptions(berth.WithDNS(netip.MustParseAddrPort("10.0.0.1:53"))))
	ctx := context.Background()
	pc, err := a.ListenPacket(ctx, "udp", "10.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	l, err := a.Listen(ctx, "tcp", "10.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	answer := func(q []byte, truncated bool) []byte {
		var p dnsmessage.Parser
		h, err := p.Start(q)
		if err != nil {
			return nil
		}
		qq, err := p.Question()
		if err != nil {
			return nil
		}
		bld := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Truncated: truncated, RecursionDesired: h.RecursionDesired})
		bld.StartQuestions()
		bld.Question(qq)
		bld.StartAnswers()
		if !truncated && qq.Type == dnsmessage.TypeA {
			bld.AResource(dnsmessage.ResourceHeader{Name: qq.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: [4]byte{10, 0, 0, 1}})
		}
		m, _ := bld.Finish()
		return m
	}
	go func() { // UDP: every answer truncated
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(answer(buf[:n], true), from)
		}
	}()
	var tcpQueries atomic.Int32
	go func() { // TCP: two-byte length prefix (RFC 1035 §4.2.2)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					var lb [2]byte
					if _, err := io.ReadFull(c, lb[:]); err != nil {
						return
					}
					q := make([]byte, int(lb[0])<<8|int(lb[1]))
					if _, err := io.ReadFull(c, q); err != nil {
						return
					}
					tcpQueries.Add(1)
					m := answer(q, false)
					c.Write(append([]byte{byte(len(m) >> 8), byte(len(m))}, m...))
				}
			}()
		}
	}()
	got, err := b.LookupNetIP(ctx, "ip4", "big.test")
	if err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("LookupNetIP = %v, %v", got, err)
	}
	if tcpQueries.Load() == 0 {
		t.Error("no query came over TCP")
	}
}

// Dialer.Resolver replaces the stack's resolver for names the static entries lack.
func TestDialerResolver(t *testing.T) {
	a, b, _ := dnsPair(t, map[string][]netip.Addr{"svc.test.": {netip.MustParseAddr("10.0.0.1")}})
	ctx := context.Background()
	l, err := a.Listen(ctx, "tcp4", ":8081")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go closeEach(l)
	if _, err := (&berth.Dialer{Stack: b}).DialContext(ctx, "tcp", "svc.test:8081"); err != nil {
		t.Fatalf("dial with the stack's resolver: %v", err)
	}
	bare := berth.Dialer{Stack: b, Resolver: &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return nil, errors.New("resolver used")
	}}}
	if _, err := bare.DialContext(ctx, "tcp", "svc.test:8081"); err == nil || !strings.Contains(err.Error(), "resolver used") {
		t.Errorf("dial with Dialer.Resolver: %v, want the Dialer's resolver's error", err)
	}
}

// FuzzDialAddress feeds arbitrary addresses to Listen, ListenPacket and DialContext: they
// fail with an error or succeed, never panic.
func FuzzDialAddress(f *testing.F) {
	for _, s := range []string{":80", "[fe80::1%eth0]:80", "10.0.0.1:https", "[::1%]:1", "localhost:0", "name.test:pcsync-https", "[%]:", "1.2.3.4:99999"} {
		f.Add(s)
	}
	s := berth.New(berth.WithHosts(map[string][]netip.Addr{"name.test": {netip.MustParseAddr("127.0.0.1")}}))
	defer s.Close()
	f.Fuzz(func(t *testing.T, addr string) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if l, err := s.Listen(ctx, "tcp", addr); err == nil {
			l.Close()
		}
		if pc, err := s.ListenPacket(ctx, "udp", addr); err == nil {
			pc.Close()
		}
		if c, err := s.DialContext(ctx, "udp", addr); err == nil {
			c.Close()
		}
	})
}

// closeEach accepts connections on l and closes them at once, until l closes.
func closeEach(l net.Listener) {
	for c, err := l.Accept(); err == nil; c, err = l.Accept() {
		c.Close()
	}
}

// Stack.Resolver answers the static entries itself, with or without DNS servers, and
// still asks the servers for other names.
func TestResolverSeesStaticEntries(t *testing.T) {
	hosts := berth.WithHosts(map[string][]netip.Addr{"static.test": {netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")}})
	_, b, _ := dnsPair(t, map[string][]netip.Addr{"dns.test.": {netip.MustParseAddr("10.0.0.5")}}, hosts)
	ctx := context.Background()
	for _, s := range []*berth.Stack{b, berth.New(hosts)} {
		r := s.Resolver()
		got, err := r.LookupNetIP(ctx, "ip", "static.test")
		if err != nil || len(got) != 2 {
			t.Errorf("Resolver().LookupNetIP(static.test) = %v, %v; want both static addresses", got, err)
		}
		if got, err := r.LookupNetIP(ctx, "ip6", "STATIC.test."); err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("2001:db8::7") {
			t.Errorf("Resolver().LookupNetIP(ip6, STATIC.test.) = %v, %v", got, err)
		}
		if s != b {
			s.Close()
		}
	}
	if got, err := b.Resolver().LookupHost(ctx, "dns.test"); err != nil || len(got) != 1 || got[0] != "10.0.0.5" {
		t.Errorf("Resolver().LookupHost(dns.test) = %v, %v; want the server's answer", got, err)
	}
}
