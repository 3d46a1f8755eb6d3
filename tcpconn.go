package berth

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/berthnet/berth/tcp"
)

// TCPConn is a TCP connection on a berth Stack. Like *net.TCPConn it implements net.Conn,
// with half-close, Nagle, linger and keep-alive controls; errors are *net.OpError values
// shaped exactly as the net package's.
type TCPConn struct {
	c       *tcp.Conn
	network string // "tcp", "tcp4" or "tcp6", as given to Dial or Listen
	laddr   *net.TCPAddr
	raddr   *net.TCPAddr
}

var _ net.Conn = (*TCPConn)(nil)

// newTCPConn wraps c; link-local addresses show zone. On a dual-stack socket (accepted by a "tcp" listener on the
// wildcard address) IPv4 addresses show as IPv4-mapped IPv6 ones, as in Go.
func newTCPConn(c *tcp.Conn, network string, dual bool, zone string) *TCPConn {
	m := func(ap netip.AddrPort) *net.TCPAddr {
		if dual && ap.Addr().Is4() {
			ap = netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port())
		}
		return net.TCPAddrFromAddrPort(withZone(ap, zone))
	}
	return &TCPConn{c: c, network: network, laddr: m(c.LocalAddr()), raddr: m(c.RemoteAddr())}
}

// tcpSyscallErr wraps an errno as the system call that would have returned it.
func tcpSyscallErr(syscallName string, err error) error {
	var errno syscall.Errno
	if syscallName != "" && errors.As(err, &errno) {
		return os.NewSyscallError(syscallName, errno)
	}
	return err
}

func (c *TCPConn) opErr(op, syscallName string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: c.network, Source: c.laddr, Addr: c.raddr, Err: tcpSyscallErr(syscallName, err)}
}

func (c *TCPConn) setErr(syscallName string, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: "set", Net: c.network, Source: nil, Addr: c.laddr, Err: tcpSyscallErr(syscallName, err)}
}

// Read implements net.Conn: io.EOF after the peer's FIN.
func (c *TCPConn) Read(b []byte) (int, error) {
	n, err := c.c.Read(b)
	return n, c.opErr("read", "read", err)
}

// Write implements net.Conn.
func (c *TCPConn) Write(b []byte) (int, error) {
	n, err := c.c.Write(b)
	return n, c.opErr("write", "write", err)
}

// Close closes the connection: queued data and a FIN go out in the background, unless
// linger is 0 or unread data remains, when the connection is reset.
func (c *TCPConn) Close() error { return c.opErr("close", "close", c.c.Close()) }

// CloseRead shuts down the reading side (shutdown(SHUT_RD)).
func (c *TCPConn) CloseRead() error { return c.opErr("close", "shutdown", c.c.CloseRead()) }

// CloseWrite shuts down the writing side (shutdown(SHUT_WR)): a FIN follows the queued data;
// reading goes on.
func (c *TCPConn) CloseWrite() error { return c.opErr("close", "shutdown", c.c.CloseWrite()) }

// LocalAddr returns the connection's local *net.TCPAddr.
func (c *TCPConn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the peer's *net.TCPAddr.
func (c *TCPConn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline sets both deadlines (net.Conn): blocked and later reads and writes fail with
// os.ErrDeadlineExceeded once t passes; the zero time clears them.
func (c *TCPConn) SetDeadline(t time.Time) error {
	return c.setErr("setsockopt", c.c.SetDeadline(t))
}

// SetReadDeadline sets the read deadline (net.Conn): reads fail with
// os.ErrDeadlineExceeded once t passes; the zero time clears it.
func (c *TCPConn) SetReadDeadline(t time.Time) error {
	return c.setErr("setsockopt", c.c.SetReadDeadline(t))
}

// SetWriteDeadline sets the write deadline (net.Conn): writes blocked on a full send
// buffer fail with os.ErrDeadlineExceeded once t passes; the zero time clears it.
func (c *TCPConn) SetWriteDeadline(t time.Time) error {
	return c.setErr("setsockopt", c.c.SetWriteDeadline(t))
}

// SetNoDelay controls Nagle's algorithm; true (no delay) is the default, as in Go.
func (c *TCPConn) SetNoDelay(noDelay bool) error {
	return c.setErr("setsockopt", c.c.SetNoDelay(noDelay))
}

// SetCongestionControl chooses the connection's congestion control, like Linux's
// TCP_CONGESTION: "cubic" (the default, RFC 9438) or "reno"/"newreno". An unknown name
// fails with ENOENT. Set it before data flows.
func (c *TCPConn) SetCongestionControl(name string) error {
	return c.setErr("setsockopt", c.c.SetCongestionControl(name))
}

// CongestionControl returns the name of the connection's congestion control.
func (c *TCPConn) CongestionControl() string { return c.c.CongestionControl() }

// SetLinger sets SO_LINGER: sec < 0 (default) closes in the background, 0 resets on Close,
// sec > 0 makes Close wait up to sec seconds for the peer to acknowledge what was sent
// (as on Linux), after which the connection goes on closing in the background.
func (c *TCPConn) SetLinger(sec int) error { return c.setErr("setsockopt", c.c.SetLinger(sec)) }

// SetKeepAlive turns keep-alive probes on or off.
func (c *TCPConn) SetKeepAlive(on bool) error {
	k := c.keepAlive()
	k.Enable = on
	return c.setErr("setsockopt", c.c.SetKeepAliveConfig(k))
}

// SetKeepAlivePeriod sets the idle time and probe interval, as Go's TCPConn does.
func (c *TCPConn) SetKeepAlivePeriod(d time.Duration) error {
	k := c.keepAlive()
	k.Idle, k.Interval = d, d
	return c.setErr("setsockopt", c.c.SetKeepAliveConfig(k))
}

// SetKeepAliveConfig applies a net.KeepAliveConfig: zero fields take Go's defaults, -1
// leaves a field unchanged.
func (c *TCPConn) SetKeepAliveConfig(cfg net.KeepAliveConfig) error {
	k := c.keepAlive()
	k.Enable = cfg.Enable
	if cfg.Idle >= 0 {
		k.Idle = cfg.Idle
	}
	if cfg.Interval >= 0 {
		k.Interval = cfg.Interval
	}
	if cfg.Count >= 0 {
		k.Count = cfg.Count
	}
	return c.setErr("setsockopt", c.c.SetKeepAliveConfig(k))
}

func (c *TCPConn) keepAlive() tcp.KeepAliveConfig { return c.c.KeepAliveConfig() }

// Info returns the connection's socket line (state, queues, timers, RTT, windows).
func (c *TCPConn) Info() tcp.SocketInfo { return c.c.Info() }

// TCPListener is a TCP listener on a berth Stack; it implements net.Listener.
type TCPListener struct {
	l         *tcp.Listener
	network   string
	dual      bool
	addr      *net.TCPAddr
	s         *Stack
	zone      string         // of a link-local address listened on
	opts      SocketOptions  // applied to accepted connections
	keepAlive func(*TCPConn) // nil: Go's default keep-alive
}

var _ net.Listener = (*TCPListener)(nil)

func newTCPListener(l *tcp.Listener, network string, dual bool) *TCPListener {
	return &TCPListener{l: l, network: network, dual: dual, addr: net.TCPAddrFromAddrPort(l.Addr())}
}

func (l *TCPListener) opErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: l.network, Source: nil, Addr: l.addr, Err: err}
}

// Accept waits for the next connection.
func (l *TCPListener) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptTCP is Accept returning the concrete type.
func (l *TCPListener) AcceptTCP() (*TCPConn, error) {
	c, err := l.l.Accept(context.Background())
	if err != nil {
		return nil, l.opErr("accept", err)
	}
	if err := l.opts.applyTCP(c); err != nil {
		c.Abort()
		return nil, l.opErr("accept", err)
	}
	tc := newTCPConn(c, l.network, l.dual, l.s.linkZone(c.LocalAddr().Addr(), l.zone))
	if l.keepAlive != nil {
		l.keepAlive(tc)
	} else {
		c.SetKeepAliveConfig(defaultKeepAlive)
	}
	return tc, nil
}

// Close stops listening; connections not yet accepted are reset.
func (l *TCPListener) Close() error { return l.opErr("close", l.l.Close()) }

// Addr returns the listener's *net.TCPAddr.
func (l *TCPListener) Addr() net.Addr { return l.addr }

// SetDeadline sets the deadline for Accept.
func (l *TCPListener) SetDeadline(t time.Time) error { return l.opErr("set", l.l.SetDeadline(t)) }
