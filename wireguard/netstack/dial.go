package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Dial is DialContext with a background context.
func (n *Net) Dial(network, address string) (net.Conn, error) {
	return n.DialContext(context.Background(), network, address)
}

// DialContext connects to address on network ("tcp", "tcp4", "tcp6", "udp", "udp4",
// "udp6") through the tunnel, as net.Dialer.DialContext does; with "ping", "ping4" or
// "ping6" the address is a host without a port and the connection a *PingConn, as in
// wireguard-go's netstack. A host name is resolved by
// LookupContextHost; TCP races its addresses with Happy Eyeballs (RFC 8305: a new attempt
// every 250 ms until one connects), UDP takes the first.
func (n *Net) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "ping", "ping4", "ping6":
		return n.dialPing(ctx, network, address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if _, err := netip.ParseAddr(host); err == nil || host == "" {
		return n.s.DialContext(ctx, network, address)
	}
	addrs, err := n.lookup(ctx, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	addrs = filterFamily(network, addrs)
	if len(addrs) == 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: errNoSuitable.Error(), Name: host, IsNotFound: true}}
	}
	if len(addrs) > 1 && strings.HasPrefix(network, "tcp") {
		return n.dialHappyEyeballs(ctx, network, port, addrs)
	}
	var first error
	for i, a := range addrs {
		dctx := ctx
		cancel := context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			// As Go's dialer does (net/dial.go partialDeadline): each remaining address
			// gets an equal share of the time left.
			left := time.Until(dl)
			dctx, cancel = context.WithTimeout(ctx, left/time.Duration(len(addrs)-i))
		}
		c, err := n.s.DialContext(dctx, network, net.JoinHostPort(a.String(), port))
		cancel()
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// connectionAttemptDelay is RFC 8305 §5's recommended Connection Attempt Delay: how long
// one connection attempt has before the next address is tried alongside it.
const connectionAttemptDelay = 250 * time.Millisecond

// dialHappyEyeballs connects to one of addrs (already in RFC 8305 §4's order) as RFC 8305
// §5 races them: an attempt starts every connectionAttemptDelay, or at once when the
// previous one fails; the first to connect wins and the others are abandoned.
func (n *Net) dialHappyEyeballs(ctx context.Context, network, port string, addrs []netip.Addr) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		c   net.Conn
		err error
	}
	results := make(chan result, len(addrs))
	started, done := 0, 0
	start := func() {
		a := addrs[started]
		started++
		go func() {
			c, err := n.s.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
			results <- result{c, err}
		}()
	}
	start()
	timer := time.NewTimer(connectionAttemptDelay)
	defer timer.Stop()
	var first error
	for {
		select {
		case r := <-results:
			done++
			if r.err == nil {
				// Abandon the others and wait for them, so that no attempt outlives
				// the call (and a late winner is closed, not leaked).
				cancel()
				for ; done < started; done++ {
					if o := <-results; o.c != nil {
						o.c.Close()
					}
				}
				return r.c, nil
			}
			if first == nil {
				first = r.err
			}
			if started < len(addrs) && ctx.Err() == nil {
				start()
				timer.Reset(connectionAttemptDelay)
			} else if done == started {
				return nil, first
			}
		case <-timer.C:
			if started < len(addrs) {
				start()
				timer.Reset(connectionAttemptDelay)
			}
		}
	}
}

// dialPing opens a PingConn to host, a literal address or a name.
func (n *Net) dialPing(ctx context.Context, network, host string) (net.Conn, error) {
	addrs, err := n.lookup(ctx, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if addrs = filterFamily(network, addrs); len(addrs) == 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: errNoSuitable.Error(), Name: host, IsNotFound: true}}
	}
	return n.DialPingAddr(netip.Addr{}, addrs[0])
}

var errNoSuitable = errors.New("no suitable address found")

// filterFamily keeps the addresses network can reach ("tcp4": IPv4 only).
func filterFamily(network string, addrs []netip.Addr) []netip.Addr {
	var keep []netip.Addr
	for _, a := range addrs {
		switch network[len(network)-1] {
		case '4':
			if !a.Is4() {
				continue
			}
		case '6':
			if !a.Is6() {
				continue
			}
		}
		keep = append(keep, a)
	}
	return keep
}
