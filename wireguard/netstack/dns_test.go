package netstack

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// testZone answers the DNS server in the tests: names and their A records. "big.test" is
// answered truncated over UDP (so the client must retry over TCP), "alias.test" is a
// CNAME for "server.test", and any other name does not exist.
func testAnswer(q dnsmessage.Question, id uint16, overTCP bool) []byte {
	h := dnsmessage.Header{ID: id, Response: true, Authoritative: true}
	name := strings.ToLower(q.Name.String())
	type rec struct {
		name  string
		cname string
		a     netip.Addr
	}
	var recs []rec
	switch name {
	case "server.test.":
		recs = []rec{{name: name, a: addrB}, {name: name, a: addr6B}}
	case "alias.test.":
		recs = []rec{{name: name, cname: "server.test."}, {name: "server.test.", a: addrB}}
	case "big.test.":
		if !overTCP {
			h.Truncated = true
		} else {
			recs = []rec{{name: name, a: netip.MustParseAddr("10.77.0.9")}, {name: name, a: addrB}}
		}
	default:
		h.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, h)
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	for _, r := range recs {
		rh := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(r.name), Class: dnsmessage.ClassINET, TTL: 60}
		switch {
		case r.cname != "":
			b.CNAMEResource(rh, dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(r.cname)})
		case q.Type == dnsmessage.TypeA && r.a.Is4():
			b.AResource(rh, dnsmessage.AResource{A: r.a.As4()})
		case q.Type == dnsmessage.TypeAAAA && r.a.Is6():
			b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: r.a.As16()})
		}
	}
	msg, _ := b.Finish()
	return msg
}

func answer(req []byte, overTCP bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	return testAnswer(q, h.ID, overTCP)
}

// serveDNS runs the test zone's server on srv's port 53, UDP and TCP, inside the tunnel.
func serveDNS(t *testing.T, srv side) {
	t.Helper()
	pc, err := srv.berth.ListenUDPAddrPort(netip.AddrPortFrom(srv.addr, 53))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.listen(53)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if resp := answer(buf[:n], false); resp != nil {
				pc.WriteToUDPAddrPort(resp, from)
			}
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err == nil {
				req := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, req); err == nil {
					resp := answer(req, true)
					c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(resp))))
					c.Write(resp)
				}
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		ln.Close()
		<-done
		<-done
	})
}

func TestDNSThroughTunnel(t *testing.T) {
	a, b := tunnel(t, berthSide, berthSide, []netip.Addr{addrB})
	serveDNS(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, c := range []struct {
		name string
		want []string
	}{
		{"server.test", []string{addrB.String()}},
		{"SERVER.test.", []string{addrB.String()}},
		{"alias.test", []string{addrB.String()}},
		{"big.test", []string{"10.77.0.9", addrB.String()}}, // truncated over UDP, then TCP
		{"10.1.2.3", []string{"10.1.2.3"}},
	} {
		got, err := a.berth.LookupContextHost(ctx, c.name)
		if err != nil {
			t.Errorf("LookupHost(%q): %v", c.name, err)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("LookupHost(%q) = %v, want %v", c.name, got, c.want)
		}
	}

	_, err := a.berth.LookupContextHost(ctx, "missing.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound || de.Name != "missing.test" {
		t.Errorf("LookupHost(missing.test) = %v (%T), want a *net.DNSError with IsNotFound", err, err)
	}

	// A client that names the server: http.Client through DialContext.
	body := payload(64 << 10)
	serveHTTP(t, b, body)
	checkBody(t, fetch(t, a, "http://server.test/"), body)
	checkBody(t, fetch(t, a, "http://alias.test:80/"), body)
	// big.test's first address has nobody behind it; Happy Eyeballs starts the second
	// 250 ms later, and it wins.
	dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
	defer dcancel()
	c, err := a.dial(dctx, "tcp", "big.test:80")
	if err != nil {
		t.Fatalf("dial big.test:80: %v", err)
	}
	if got := c.RemoteAddr().String(); got != addrB.String()+":80" {
		t.Errorf("dial big.test:80 reached %s", got)
	}
	c.Close()

	// Nobody listens on port 81: the second address refuses, the first never answers;
	// the dial fails with the refusal once the first attempt gives up too.
	dctx2, dcancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel2()
	if _, err := a.dial(dctx2, "tcp", "big.test:81"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial big.test:81 = %v, want ECONNREFUSED", err)
	}

	// A ping socket by name, as wireguard-go's ping example dials one.
	pc, err := a.dial(ctx, "ping4", "server.test")
	if err != nil {
		t.Fatalf("dial ping4 server.test: %v", err)
	}
	pingOnce(t, pc, []byte("by name"))
	pc.Close()
	if _, err := a.dial(ctx, "ping6", "server.test"); err == nil {
		t.Error("dial ping6 to a name with only an A record succeeded")
	}

	_, err = a.dial(ctx, "tcp", "missing.test:80")
	var oe *net.OpError
	if !errors.As(err, &oe) || !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("dial missing.test:80 = %v, want a *net.OpError wrapping a not-found *net.DNSError", err)
	}
}

// TestDNSDualStack: a tunnel with both families asks for AAAA and A, lists the IPv6
// address first (RFC 6724's default policy, RFC 8305 §4), and a dial by name connects
// over IPv6.
func TestDNSDualStack(t *testing.T) {
	a, b := tunnelWith(t, berthSide, berthSide, []netip.Addr{addrA, addr6A}, []netip.Addr{addrB, addr6B}, []netip.Addr{addrB})
	serveDNS(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := a.berth.LookupContextHost(ctx, "server.test")
	if want := []string{addr6B.String(), addrB.String()}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("LookupHost(server.test) = %v, %v; want %v", got, err, want)
	}
	// Only an A record: the IPv4 address alone.
	if got, err := a.berth.LookupContextHost(ctx, "alias.test"); err != nil || !slices.Equal(got, []string{addrB.String()}) {
		t.Errorf("LookupHost(alias.test) = %v, %v", got, err)
	}
	b.serve(t, "discard") // 9/tcp on both families
	for _, c := range []struct {
		network string
		want    netip.Addr
	}{{"tcp", addr6B}, {"tcp4", addrB}, {"tcp6", addr6B}} {
		conn, err := a.dial(ctx, c.network, "server.test:9")
		if err != nil {
			t.Fatalf("dial %s server.test:9: %v", c.network, err)
		}
		if got, want := conn.RemoteAddr().String(), netip.AddrPortFrom(c.want, 9).String(); got != want {
			t.Errorf("dial %s server.test:9 reached %s, want %s", c.network, got, want)
		}
		conn.Close()
	}
}

func TestLookupWithoutServers(t *testing.T) {
	dev, tnet, err := CreateNetTUN([]netip.Addr{addrA}, nil, tunnelMTU)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := tnet.LookupHost("server.test"); err == nil {
		t.Fatal("lookup with no DNS servers succeeded")
	}
	got, err := tnet.LookupHost("localhost")
	if err != nil || !slices.Equal(got, []string{"127.0.0.1", "::1"}) {
		t.Fatalf("LookupHost(localhost) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "a..b", strings.Repeat("x", 64) + ".test"} {
		if _, err := tnet.LookupHost(bad); err == nil {
			t.Errorf("LookupHost(%q) succeeded", bad)
		}
	}
}

// FuzzParseReply feeds arbitrary bytes to the reply parser as if a server had sent them:
// it must never panic, and whatever it accepts must carry addresses of the asked type.
func FuzzParseReply(f *testing.F) {
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("server.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	for _, name := range []string{"server.test.", "alias.test.", "big.test.", "nope.test."} {
		qq := q
		qq.Name = dnsmessage.MustNewName(name)
		f.Add(testAnswer(qq, 7, true), uint16(7))
		f.Add(testAnswer(qq, 7, false), uint16(7))
	}
	f.Fuzz(func(t *testing.T, msg []byte, id uint16) {
		addrs, err := parseReply(msg, id, q)
		if err != nil {
			return
		}
		for _, a := range addrs {
			if !a.Is4() {
				t.Fatalf("A query returned %v", a)
			}
		}
	})
}
