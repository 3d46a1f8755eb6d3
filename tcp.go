package berth

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/berthnet/berth/tcp"
)

// WithTCPConfig sets TCP's settings (port manager, buffers, timers, congestion control).
func WithTCPConfig(c tcp.Config) Option { return func(cfg *Config) { cfg.TCP = c } }

// Go's defaults for keep-alive on dialed and accepted connections (net.Dialer and
// net.ListenConfig with KeepAlive 0).
var defaultKeepAlive = tcp.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9}

// tcpFamily picks the socket family as package net does: "tcp4" is IPv4, "tcp6" IPv6
// only, "tcp" IPv4 for an IPv4 address and otherwise (IPv6, or a wildcard when listening,
// "0.0.0.0" included) a dual-stack IPv6 socket. dual reports the last case.
func tcpFamily(network string, a netip.Addr, listen bool) (addr netip.Addr, v6only, dual bool, err error) {
	is4 := a.IsValid() && (a.Is4() || a.Is4In6())
	wild := !a.IsValid() || a.Unmap().IsUnspecified()
	switch network {
	case "tcp4":
		if a.IsValid() && !is4 {
			return a, false, false, &net.AddrError{Err: "non-IPv4 address", Addr: a.String()}
		}
		if !a.IsValid() {
			a = netip.IPv4Unspecified()
		}
		return a.Unmap(), false, false, nil
	case "tcp6":
		if is4 && !(listen && wild) {
			return a, false, false, &net.AddrError{Err: "non-IPv6 address", Addr: a.String()}
		}
		if is4 || !a.IsValid() {
			a = netip.IPv6Unspecified()
		}
		return a, true, false, nil
	case "tcp":
		if is4 && !(listen && wild) {
			return a.Unmap(), false, false, nil
		}
		if listen && wild {
			return netip.IPv6Unspecified(), false, true, nil
		}
		return a, false, false, nil
	}
	return a, false, false, net.UnknownNetworkError(network)
}

// Listen announces on the local address, as net.Listen does: network is "tcp", "tcp4" or
// "tcp6"; address is "host:port" with a literal IP, "localhost", a name the stack
// resolves (its first address), or an empty host for every address; the port is a
// number or an IANA service name. Port 0 picks a free port. Like Go, listeners set
// SO_REUSEADDR, and accepted connections have keep-alive on (15 s).
func (s *Stack) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	l, err := s.listenTCP(ctx, network, address, nil)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// ListenTCP is Listen returning the concrete type.
func (s *Stack) ListenTCP(ctx context.Context, network, address string) (*TCPListener, error) {
	return s.listenTCP(ctx, network, address, nil)
}

func (s *Stack) listenTCP(ctx context.Context, network, address string, lc *ListenConfig) (*TCPListener, error) {
	fail := func(addr net.Addr, err error) (*TCPListener, error) {
		return nil, opError("listen", network, nil, addr, "bind", err)
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fail(nil, net.UnknownNetworkError(network))
	}
	a, port, err := s.splitAddr(ctx, network, address, network == "tcp6")
	if err != nil {
		return fail(nil, err)
	}
	a, zone := zoneOf(a)
	// Control sees the address as given, before the family is chosen, as in package net.
	ctlAddr := (&net.TCPAddr{IP: a.AsSlice(), Port: int(port), Zone: zone}).String()
	a, v6only, dual, err := tcpFamily(network, a, true)
	if err != nil {
		return fail(nil, err)
	}
	laddr := &net.TCPAddr{IP: a.AsSlice(), Port: int(port), Zone: zone}
	if err := ctx.Err(); err != nil {
		return fail(laddr, err)
	}
	if err := s.checkZone(a, zone, true); err != nil {
		return fail(laddr, err)
	}
	o, err := lc.control(network, a.Is6(), ctlAddr)
	if err != nil {
		return fail(laddr, err)
	}
	if o.ReceiveBuffer > 0 {
		return nil, opError("listen", network, nil, laddr, "setsockopt", syscall.ENOPROTOOPT)
	}
	b := s.bindOptions()
	b.ReuseAddr, b.ReusePort, b.V6Only = o.ReuseAddr, o.ReusePort, v6only
	l, err := s.tcp.Listen(netip.AddrPortFrom(a, port), 0, b)
	if err != nil {
		return fail(laddr, err)
	}
	tl := newTCPListener(l, network, dual)
	tl.s, tl.zone, tl.addr.Zone = s, zone, zone
	tl.opts = o
	if lc != nil {
		tl.keepAlive = lc.keepAlive
	}
	return tl, nil
}

// dialTCP is the TCP branch of Dialer.DialContext.
func (d *Dialer) dialTCP(ctx context.Context, network, address string) (*TCPConn, error) {
	s := d.Stack
	var laddr *net.TCPAddr
	if d.LocalAddr != nil {
		a, ok := d.LocalAddr.(*net.TCPAddr)
		if !ok {
			return nil, &net.OpError{Op: "dial", Net: network, Source: d.LocalAddr, Err: &net.AddrError{Err: "mismatched local address type", Addr: d.LocalAddr.String()}}
		}
		laddr = a
	}
	var src net.Addr
	if laddr != nil {
		src = laddr
	}
	if s == nil {
		return nil, d.tcpFail(network, src, nil, syscall.EINVAL)
	}
	addrs, rport, err := d.resolve(ctx, network, address)
	if err != nil {
		return nil, d.tcpFail(network, src, nil, err)
	}
	var local netip.AddrPort
	if laddr != nil {
		la, _ := netip.AddrFromSlice(laddr.IP)
		local = netip.AddrPortFrom(la.Unmap(), uint16(laddr.Port))
		// A bound source address limits the attempts to its family, as in Go.
		if la.Unmap().IsValid() && !la.Unmap().IsUnspecified() {
			addrs = slices.DeleteFunc(addrs, func(a netip.Addr) bool { return a.Is4() != la.Unmap().Is4() })
			if len(addrs) == 0 {
				return nil, d.tcpFail(network, src, nil, &net.AddrError{Err: errNoSuitableAddress, Addr: address})
			}
		}
	}
	return happyEyeballs(ctx, d.fallbackDelay(), addrs, func(ctx context.Context, ra netip.Addr) (*TCPConn, error) {
		return d.dialTCPAddr(ctx, network, src, local, ra, rport)
	})
}

// dialTCPAddr makes one connection attempt to ra.
func (d *Dialer) dialTCPAddr(ctx context.Context, network string, src net.Addr, local netip.AddrPort, ra netip.Addr, rport uint16) (*TCPConn, error) {
	s := d.Stack
	ra, zone := zoneOf(ra)
	ra, _, _, err := tcpFamily(network, ra, false)
	if err != nil {
		return nil, d.tcpFail(network, src, nil, err)
	}
	raddr := &net.TCPAddr{IP: ra.AsSlice(), Port: int(rport), Zone: zone}
	if err := ctx.Err(); err != nil {
		return nil, d.tcpFail(network, src, raddr, err)
	}
	if zone != "" {
		zsrc, err := s.zoneSource(ra, zone)
		if err != nil {
			return nil, d.tcpFail(network, src, raddr, err)
		}
		if !local.Addr().IsValid() || local.Addr().IsUnspecified() {
			local = netip.AddrPortFrom(zsrc, local.Port())
		}
	}
	remote := netip.AddrPortFrom(ra, rport)
	o, err := d.control(network, remote)
	if err != nil {
		return nil, d.tcpFail(network, src, raddr, err)
	}
	opts := tcp.DialOptions{Bind: s.bindOptions()}
	opts.Bind.ReuseAddr, opts.Bind.ReusePort = o.ReuseAddr, o.ReusePort
	if o.ReceiveBuffer > 0 {
		opts.Setup = func(c *tcp.Conn) { c.SetBuffers(0, o.ReceiveBuffer) }
	}
	c, err := s.tcp.Dial(ctx, local, remote, opts)
	if err != nil {
		return nil, d.tcpFail(network, src, raddr, err)
	}
	if err := o.applyTCP(c); err != nil {
		c.Abort()
		return nil, d.tcpFail(network, src, raddr, err)
	}
	tc := newTCPConn(c, network, false, s.linkZone(c.LocalAddr().Addr(), zone))
	d.keepAlive(tc)
	return tc, nil
}

// tcpFail shapes a failed TCP dial as package net does.
func (d *Dialer) tcpFail(network string, src, raddr net.Addr, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &net.OpError{Op: "dial", Net: network, Source: src, Addr: raddr, Err: mapCtxErr(err)}
	}
	var se *os.SyscallError
	if errors.As(err, &se) { // the bind step failed
		return &net.OpError{Op: "dial", Net: network, Source: src, Addr: raddr, Err: se}
	}
	return opError("dial", network, src, raddr, "connect", err)
}

// netCtxErrs holds the errors package net reports for a dial ended by its context
// (unexported values: "operation was canceled" and "i/o timeout"), taken from net itself
// once: a dial with a finished context returns before any system call.
var netCtxErrs struct {
	once              sync.Once
	canceled, timeout error
}

func mapCtxErr(err error) error {
	netCtxErrs.once.Do(func() {
		get := func(ctx context.Context) error {
			_, e := (&net.Dialer{}).DialContext(ctx, "tcp", "127.0.0.1:9")
			var oe *net.OpError
			if errors.As(e, &oe) {
				return oe.Err
			}
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		netCtxErrs.canceled = get(ctx)
		ctx, cancel = context.WithDeadline(context.Background(), time.Unix(1, 0))
		defer cancel()
		netCtxErrs.timeout = get(ctx)
	})
	switch {
	case errors.Is(err, context.Canceled) && netCtxErrs.canceled != nil && errors.Is(netCtxErrs.canceled, context.Canceled):
		return netCtxErrs.canceled
	case errors.Is(err, context.DeadlineExceeded) && netCtxErrs.timeout != nil && errors.Is(netCtxErrs.timeout, context.DeadlineExceeded):
		return netCtxErrs.timeout
	}
	return err
}

// tcpStates are ss's names for the TCP states.
var tcpStates = map[tcp.State]string{
	tcp.StateClosed:      "CLOSE",
	tcp.StateListen:      "LISTEN",
	tcp.StateSynSent:     "SYN-SENT",
	tcp.StateSynReceived: "SYN-RECV",
	tcp.StateEstablished: "ESTAB",
	tcp.StateFinWait1:    "FIN-WAIT-1",
	tcp.StateFinWait2:    "FIN-WAIT-2",
	tcp.StateCloseWait:   "CLOSE-WAIT",
	tcp.StateClosing:     "CLOSING",
	tcp.StateLastAck:     "LAST-ACK",
	tcp.StateTimeWait:    "TIME-WAIT",
}

func tcpSockets(s *Stack) []SocketInfo {
	socks := s.tcp.Sockets()
	out := make([]SocketInfo, 0, len(socks))
	for i := range socks {
		si := &socks[i]
		out = append(out, SocketInfo{Protocol: "tcp", Local: si.Local, Remote: si.Remote,
			State: tcpStates[si.State], RecvQ: si.RecvQ, SendQ: si.SendQ, TCP: si})
	}
	return out
}
