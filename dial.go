package berth

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// Dialer dials on a Stack, like net.Dialer. The zero value of every field but Stack is
// net.Dialer's default.
type Dialer struct {
	Stack *Stack // the stack to dial on; required
	// LocalAddr is the local address to bind (a *net.UDPAddr for UDP); nil picks one.
	LocalAddr net.Addr
	// Timeout and Deadline bound the whole dial, name lookup included, as in net.Dialer.
	Timeout  time.Duration
	Deadline time.Time
	// Resolver looks up host names that the stack's static entries (WithHosts) do not
	// have; nil uses the stack's own (Stack.Resolver, when it has DNS servers).
	Resolver *net.Resolver
	// FallbackDelay is RFC 8305's Connection Attempt Delay: when a name has several
	// addresses, a TCP dial starts the next attempt when the last one has not connected
	// within this time, or at once when it fails; the first connection wins and the others
	// are abandoned. Zero means 250 ms (RFC 8305 §5); negative makes the attempts one
	// after another.
	FallbackDelay time.Duration
	// KeepAlive and KeepAliveConfig set keep-alive on TCP connections exactly as in
	// net.Dialer: by default probes start after 15 s idle, every 15 s, 9 of them; a
	// negative KeepAlive with KeepAliveConfig.Enable false turns them off.
	KeepAlive       time.Duration
	KeepAliveConfig net.KeepAliveConfig
	// Control, if not nil, is called for every connection attempt before the socket binds
	// or connects, with the network of the socket ("tcp4", "udp6", ...), the address it
	// connects to ("10.0.0.1:80") and its options, which it may change. An error ends the
	// attempt. It stands in for net.Dialer.Control (see SocketOptions).
	Control func(network, address string, o *SocketOptions) error
}

// control runs the Control hook for an attempt to ra.
func (d *Dialer) control(network string, ra netip.AddrPort) (SocketOptions, error) {
	o := defaultSocketOptions(network, false)
	if d.Control == nil {
		return o, nil
	}
	fam := network[:3]
	if ra.Addr().Is4() {
		fam += "4"
	} else {
		fam += "6"
	}
	err := d.Control(fam, ra.String(), &o)
	return o, err
}

// DialContext connects to address on network ("udp", "udp4", "udp6", "tcp", "tcp4",
// "tcp6"), as net.Dialer.DialContext does.
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d := Dialer{Stack: s}
	return d.DialContext(ctx, network, address)
}

// Dial is DialContext with a background context.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialContext connects to address on network: "tcp", "tcp4", "tcp6", "udp", "udp4" or
// "udp6". address is "host:port"; the host is a literal address, "localhost", a static
// entry (WithHosts) or a name looked up with Resolver, and the port a number or an IANA
// service name ("https"). TCP tries a name's addresses as RFC 8305 says (see
// FallbackDelay), UDP the first one that has a route. Errors are *net.OpError values
// as package net returns them; a failed lookup wraps a *net.DNSError.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	if !d.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Deadline)
		defer cancel()
	}
	switch network {
	case "udp", "udp4", "udp6":
		c, err := d.dialUDP(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return c, nil
	case "tcp", "tcp4", "tcp6":
		c, err := d.dialTCP(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
}

// resolve turns a dial address into the addresses to try and the port. Like net.Dial
// (and Linux's connect), an empty or unspecified host means the local system; so does
// "localhost", which is the loopback address of the network's family (IPv4 for "tcp"
// and "udp").
func (d *Dialer) resolve(ctx context.Context, network, address string) ([]netip.Addr, uint16, error) {
	host, port, err := splitHostPort(network, address)
	if err != nil {
		return nil, 0, err
	}
	v6 := network[len(network)-1] == '6'
	loopback := func() []netip.Addr {
		if v6 {
			return []netip.Addr{netip.IPv6Loopback()}
		}
		return []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	}
	if host == "" || host == "localhost" {
		return loopback(), port, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.IsUnspecified() {
			if a.Is6() && !a.Is4In6() {
				v6 = true
			}
			return loopback(), port, nil
		}
		return []netip.Addr{a}, port, nil
	}
	addrs, err := d.Stack.lookup(ctx, d.Resolver, ipNetwork(network), host)
	if err != nil {
		return nil, 0, err
	}
	return happyOrder(addrs), port, nil
}

// fallbackDelay is FallbackDelay with its default.
func (d *Dialer) fallbackDelay() time.Duration {
	if d.FallbackDelay == 0 {
		return connectionAttemptDelay
	}
	return d.FallbackDelay
}

// connectionAttemptDelay is RFC 8305 §5's recommended default.
const connectionAttemptDelay = 250 * time.Millisecond

// keepAlive applies the Dialer's keep-alive settings to a new connection, with
// net.Dialer's rules.
func (d *Dialer) keepAlive(c *TCPConn) {
	cfg := d.KeepAliveConfig
	if !cfg.Enable {
		if d.KeepAlive < 0 {
			c.SetKeepAlive(false)
			return
		}
		cfg = net.KeepAliveConfig{Enable: true, Idle: d.KeepAlive}
	}
	c.SetKeepAliveConfig(cfg)
}

// happyEyeballs runs connection attempts to addrs (already in RFC 8305 §4 order) as
// RFC 8305 §5 says: one at a time, the next one delay after the last one started or as
// soon as it failed, and returns the first that connects, closing the
// others. With a negative delay the attempts run one after another. If all fail, the
// error is the one of the first address that failed, as in package net.
func happyEyeballs[C interface{ Close() error }](ctx context.Context, delay time.Duration, addrs []netip.Addr, attempt func(context.Context, netip.Addr) (C, error)) (C, error) {
	var zero C
	if len(addrs) == 1 || delay < 0 {
		var first error
		for _, a := range addrs {
			c, err := attempt(ctx, a)
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
		return zero, first
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		c   C
		err error
		i   int
	}
	results := make(chan result, len(addrs))
	timer := time.NewTimer(delay)
	defer timer.Stop()
	next, running := 0, 0
	start := func() {
		i := next
		next++
		running++
		go func() {
			c, err := attempt(ctx, addrs[i])
			results <- result{c, err, i}
		}()
		timer.Reset(delay)
	}
	start()
	first, firstIdx := error(nil), len(addrs)
	for running > 0 {
		select {
		case r := <-results:
			running--
			if r.err == nil {
				cancel()
				// Attempts still running end promptly now (their context is done); one
				// that connected meanwhile is closed.
				go func(n int) {
					for ; n > 0; n-- {
						if r := <-results; r.err == nil {
							r.c.Close()
						}
					}
				}(running)
				return r.c, nil
			}
			if r.i < firstIdx {
				first, firstIdx = r.err, r.i
			}
			if next < len(addrs) && ctx.Err() == nil {
				start()
			}
		case <-timer.C:
			if next < len(addrs) {
				start()
			}
		}
	}
	return zero, first
}
