package netstack

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// A small DNS stub resolver (RFC 1035) whose queries go over the berth stack, so they
// travel inside the tunnel to the servers given to CreateNetTUN. It asks for A and AAAA
// records (RFC 3596) of the name as given (no search list: the host's resolv.conf is not
// the tunnel's), over UDP, and again over TCP when the answer is truncated (RFC 1035
// §4.2.1, RFC 7766 §5).

const (
	dnsTimeout  = 5 * time.Second // per attempt, as resolv.conf's default "timeout:5"
	dnsAttempts = 2               // per server, as resolv.conf's default "attempts:2"
	maxUDPMsg   = 1232            // RFC 9715 / DNS flag day 2020: a size that avoids fragments
)

// LookupHost returns the addresses of host, as net.LookupHost does: an IP literal is
// returned as it is; a name is resolved by the tunnel's DNS servers.
func (n *Net) LookupHost(host string) ([]string, error) {
	return n.LookupContextHost(context.Background(), host)
}

// LookupContextHost is LookupHost bounded by ctx. Errors are *net.DNSError values
// (IsNotFound for a name that does not exist or has no addresses).
func (n *Net) LookupContextHost(ctx context.Context, host string) ([]string, error) {
	addrs, err := n.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out, nil
}

// lookup resolves host to addresses, the preferred family first (IPv6 when the stack has
// an IPv6 address, RFC 6724 §6 rule 6 in its default policy table), then alternating
// between families as RFC 8305 §4 orders them for connection attempts.
func (n *Net) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if host == "" {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		// RFC 6761 §6.3: localhost is the stack's own loopback, never asked of a server.
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}, nil
	}
	name, err := dnsmessage.NewName(absName(host))
	if err != nil || !validName(host) {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	if len(n.dnsServers) == 0 {
		return nil, &net.DNSError{Err: "no DNS servers configured", Name: host}
	}
	// RFC 8305 §3: ask for AAAA and A at once (when the stack has both families).
	want4, want6 := n.has4 || !n.has6, n.has6
	var v4, v6 []netip.Addr
	err4, err6 := errNoAnswer, errNoAnswer
	var wg sync.WaitGroup
	if want4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v4, err4 = n.query(ctx, name, dnsmessage.TypeA)
		}()
	}
	if want6 {
		v6, err6 = n.query(ctx, name, dnsmessage.TypeAAAA)
	}
	wg.Wait()
	if (!want4 || err4 != nil) && (!want6 || err6 != nil) {
		err := err4
		if !want4 || (want6 && errors.Is(err6, errNXDomain)) {
			err = err6
		}
		return nil, dnsError(err, host)
	}
	first, second := v4, v6
	if n.has6 {
		first, second = v6, v4
	}
	var out []netip.Addr
	for i := 0; i < len(first) || i < len(second); i++ {
		if i < len(first) {
			out = append(out, first[i])
		}
		if i < len(second) {
			out = append(out, second[i])
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

// validName reports whether s is a DNS name (RFC 1035 §2.3.4: labels of 1 to 63 octets,
// 255 in all). Any octets are allowed in labels (RFC 2181 §11), but not empty labels.
func validName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) == 0 || len(l) > 63 {
			return false
		}
	}
	return true
}

func absName(s string) string {
	if strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

// The ways a query fails; dnsError turns them into *net.DNSError values. The texts are
// those of Go's resolver where it has one.
var (
	errNXDomain = errors.New("no such host")
	errServFail = errors.New("server misbehaving")
	errBadReply = errors.New("malformed DNS reply")
	errNoAnswer = errors.New("no answer from DNS server")
)

func dnsError(err error, host string) error {
	var de *net.DNSError
	if errors.As(err, &de) {
		de.Name = host
		return de
	}
	e := &net.DNSError{Err: err.Error(), Name: host}
	if errors.Is(err, errNXDomain) {
		e.IsNotFound = true
	}
	if isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
		e.IsTimeout = true
	}
	return e
}

// query asks each server in turn for name's records of type qt; an NXDOMAIN answer is
// final (RFC 2308 §2.1), other failures move on to the next server.
func (n *Net) query(ctx context.Context, name dnsmessage.Name, qt dnsmessage.Type) ([]netip.Addr, error) {
	var lastErr error = errNoAnswer
	for _, srv := range n.dnsServers {
		for attempt := 0; attempt < dnsAttempts; attempt++ {
			addrs, err := n.exchange(ctx, netip.AddrPortFrom(srv, 53), name, qt)
			if err == nil || errors.Is(err, errNXDomain) {
				return addrs, err
			}
			lastErr = err
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !isTimeout(err) {
				break // a reply that was an error; the next server may do better
			}
		}
	}
	return nil, lastErr
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// exchange sends one query to srv over UDP, and over TCP when the reply is truncated.
func (n *Net) exchange(ctx context.Context, srv netip.AddrPort, name dnsmessage.Name, qt dnsmessage.Type) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	id := uint16(rand.Uint32())
	q := dnsmessage.Question{Name: name, Type: qt, Class: dnsmessage.ClassINET}
	msg, err := buildQuery(id, q)
	if err != nil {
		return nil, err
	}
	addrs, err := n.exchangeUDP(ctx, srv, id, q, msg)
	if errors.Is(err, errTruncated) {
		addrs, err = n.exchangeTCP(ctx, srv, id, q, msg)
	}
	return addrs, err
}

func buildQuery(id uint16, q dnsmessage.Question) ([]byte, error) {
	b := dnsmessage.NewBuilder(make([]byte, 0, 64), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	// RFC 6891 §6.2.5: advertise the UDP payload size we accept.
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	var rh dnsmessage.ResourceHeader
	if err := rh.SetEDNS0(maxUDPMsg, dnsmessage.RCodeSuccess, false); err != nil {
		return nil, err
	}
	if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
		return nil, err
	}
	return b.Finish()
}

// dialDNS connects to srv for one exchange, bounded by ctx: its deadline becomes the
// connection's, and cancelling ctx makes blocked reads and writes fail at once. done
// closes the connection.
func (n *Net) dialDNS(ctx context.Context, network string, srv netip.AddrPort) (c net.Conn, done func(), err error) {
	c, err = n.s.DialContext(ctx, network, srv.String())
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	return c, func() { stop(); c.Close() }, nil
}

func (n *Net) exchangeUDP(ctx context.Context, srv netip.AddrPort, id uint16, q dnsmessage.Question, msg []byte) ([]netip.Addr, error) {
	c, done, err := n.dialDNS(ctx, udpNet(srv.Addr()), srv)
	if err != nil {
		return nil, err
	}
	defer done()
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	buf := make([]byte, maxUDPMsg)
	for {
		m, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		addrs, err := parseReply(buf[:m], id, q)
		if errors.Is(err, errMismatched) || errors.Is(err, errBadReply) {
			// RFC 5452 §9.1: a reply that does not match is not ours (or forged); keep
			// waiting for the real one.
			continue
		}
		return addrs, err
	}
}

func (n *Net) exchangeTCP(ctx context.Context, srv netip.AddrPort, id uint16, q dnsmessage.Question, msg []byte) ([]netip.Addr, error) {
	c, done, err := n.dialDNS(ctx, tcpNet(srv.Addr()), srv)
	if err != nil {
		return nil, err
	}
	defer done()
	// RFC 1035 §4.2.2: over TCP each message is preceded by its 2-byte length.
	framed := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(framed, uint16(len(msg)))
	copy(framed[2:], msg)
	if _, err := c.Write(framed); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	addrs, err := parseReply(buf, id, q)
	if errors.Is(err, errTruncated) {
		return nil, errBadReply
	}
	return addrs, err
}

// Replies that exchangeUDP does not take: one for another query (or forged), and one that
// must be asked again over TCP.
var errMismatched, errTruncated = errors.New("reply does not match the query"), errors.New("truncated reply")

// parseReply checks that msg answers query id for q and returns the addresses it gives
// for q's name, following CNAME records within the answer section (RFC 1034 §3.6.2).
func parseReply(msg []byte, id uint16, q dnsmessage.Question) ([]netip.Addr, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil, errBadReply
	}
	if h.ID != id || !h.Response {
		return nil, errMismatched
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, errBadReply
	}
	if len(qs) != 1 || qs[0].Type != q.Type || qs[0].Class != q.Class || !strings.EqualFold(qs[0].Name.String(), q.Name.String()) {
		return nil, errMismatched
	}
	if h.Truncated {
		return nil, errTruncated
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, errNXDomain
	default:
		return nil, errServFail
	}
	want := q.Name.String()
	var addrs []netip.Addr
	for hops := 0; ; {
		r, err := p.Answer()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			return nil, errBadReply
		}
		if r.Header.Class != dnsmessage.ClassINET || !strings.EqualFold(r.Header.Name.String(), want) {
			continue
		}
		switch body := r.Body.(type) {
		case *dnsmessage.AResource:
			if q.Type == dnsmessage.TypeA {
				addrs = append(addrs, netip.AddrFrom4(body.A))
			}
		case *dnsmessage.AAAAResource:
			if q.Type == dnsmessage.TypeAAAA {
				addrs = append(addrs, netip.AddrFrom16(body.AAAA))
			}
		case *dnsmessage.CNAMEResource:
			if hops++; hops > 8 {
				return nil, errBadReply // a CNAME loop
			}
			want = body.CNAME.String()
		}
	}
	return addrs, nil
}
