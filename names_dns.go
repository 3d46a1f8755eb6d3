package berth

import (
	"context"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// hostsConn is the datagram connection Stack.Resolver's Dial returns: it answers queries
// for the stack's static entries (WithHosts) itself, so that Go's resolver sees them as
// LookupNetIP does, and passes every other query to a DNS server over the stack's UDP,
// dialed on first use. Go's resolver writes one query and reads its answer on each
// connection (dnsPacketRoundTrip), which is all this supports.
type hostsConn struct {
	s       *Stack
	ctx     context.Context
	mu      sync.Mutex
	answer  []byte   // a local answer waiting for Read
	real    net.Conn // the server's connection, once a query needed it
	rdl     time.Time
	wdl     time.Time
	closed  bool
	network string
}

var (
	_ net.Conn       = (*hostsConn)(nil)
	_ net.PacketConn = (*hostsConn)(nil) // tells Go's resolver to use datagram framing
)

// localAnswer builds the answer to query from the static entries, or returns nil when the
// name is not one of them (or the query is not a plain A or AAAA question).
func (s *Stack) localAnswer(query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil || q.Class != dnsmessage.ClassINET || (q.Type != dnsmessage.TypeA && q.Type != dnsmessage.TypeAAAA) {
		return nil
	}
	addrs, ok := s.names.hosts[hostKey(q.Name.String())]
	if !ok {
		return nil
	}
	// Authoritative, so that a name without records of the asked type is NODATA, not a
	// lame referral (RFC 2308 §2.2).
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true,
		RecursionDesired: h.RecursionDesired, RecursionAvailable: true})
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil
	}
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}
	for _, a := range addrs {
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			err = b.AResource(rh, dnsmessage.AResource{A: a.As4()})
		case q.Type == dnsmessage.TypeAAAA && a.Is6():
			err = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil
		}
	}
	msg, err := b.Finish()
	if err != nil {
		return nil
	}
	return msg
}

// Write takes one query: answered locally, or sent to a server.
func (c *hostsConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if ans := c.s.localAnswer(b); ans != nil {
		c.answer = ans
		c.mu.Unlock()
		return len(b), nil
	}
	real := c.real
	c.mu.Unlock()
	if real == nil {
		var err error
		if real, err = c.s.dialServer(c.ctx, c.network); err != nil {
			return 0, err
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			real.Close()
			return 0, net.ErrClosed
		}
		c.real = real
		real.SetReadDeadline(c.rdl)
		real.SetWriteDeadline(c.wdl)
		c.mu.Unlock()
	}
	return real.Write(b)
}

// Read returns the local answer, or the server's.
func (c *hostsConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if ans := c.answer; ans != nil {
		c.answer = nil
		c.mu.Unlock()
		return copy(b, ans), nil
	}
	real, closed, dl := c.real, c.closed, c.rdl
	c.mu.Unlock()
	switch {
	case closed:
		return 0, net.ErrClosed
	case real == nil:
		// Nothing was asked: wait out the deadline as a socket with no reply would.
		if !dl.IsZero() {
			time.Sleep(time.Until(dl))
		}
		return 0, os.ErrDeadlineExceeded
	}
	return real.Read(b)
}

// ReadFrom and WriteTo complete net.PacketConn; the resolver only uses Read and Write.
func (c *hostsConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := c.Read(b)
	return n, c.RemoteAddr(), err
}

func (c *hostsConn) WriteTo(b []byte, _ net.Addr) (int, error) { return c.Write(b) }

func (c *hostsConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.closed = true
	if c.real != nil {
		return c.real.Close()
	}
	return nil
}

func (c *hostsConn) LocalAddr() net.Addr { return &net.UDPAddr{} }

func (c *hostsConn) RemoteAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real != nil {
		return c.real.RemoteAddr()
	}
	return &net.UDPAddr{}
}

func (c *hostsConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *hostsConn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(&c.rdl, t, net.Conn.SetReadDeadline)
}

func (c *hostsConn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(&c.wdl, t, net.Conn.SetWriteDeadline)
}

// setDeadline keeps a deadline for the server's connection, set now or once it is dialed.
func (c *hostsConn) setDeadline(keep *time.Time, t time.Time, set func(net.Conn, time.Time) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	*keep = t
	if c.real != nil {
		return set(c.real, t)
	}
	return nil
}
