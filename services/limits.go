package services

import (
	"net"
	"sync"
	"time"
)

// Defaults for Config's connection limits. A service must not be held by clients that
// stop talking: nginx's keepalive_timeout and send_timeout are 75 s and 60 s; these are
// of that order.
const (
	// DefaultIdleTimeout is how long a connection may wait for its client: between
	// HTTP requests, or for the next bytes sent to echo or discard.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultWriteTimeout is how long one write may wait for the client to take data
	// (a client that stops reading a chargen, echo or /bytes/N stream).
	DefaultWriteTimeout = 60 * time.Second
	// DefaultMaxConns is how many connections one TCP service serves at once; past it
	// the service stops accepting, so the stack's listen backlog (and SYN cookies) take
	// the excess, as for a kernel server at its limit.
	DefaultMaxConns = 4096
)

// orDefault is d, def when d is 0, and 0 (off) when d is negative.
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// guardedConn bounds how long the client may keep one operation waiting: each Read must
// complete within idle, each Write within write (0 means no bound for that side). The
// deadlines are moved forward only once an eighth of their span has passed, so a stream
// of small operations does not reset a timer on every call. Read and Write may run
// concurrently (as net.Conn allows): each touches only its own side's fields.
type guardedConn struct {
	net.Conn
	idle, write    time.Duration
	rdSet, wrSet   time.Time // when each deadline was last moved
	readsGuarded   bool      // false for HTTP, whose server manages read deadlines
	closeWriteConn interface{ CloseWrite() error }
}

func guard(c net.Conn, idle, write time.Duration, guardReads bool) net.Conn {
	if (idle == 0 || !guardReads) && write == 0 {
		return c
	}
	g := &guardedConn{Conn: c, idle: idle, write: write, readsGuarded: guardReads && idle > 0}
	g.closeWriteConn, _ = c.(interface{ CloseWrite() error })
	return g
}

func (g *guardedConn) Read(p []byte) (int, error) {
	if g.readsGuarded {
		if now := time.Now(); now.Sub(g.rdSet) > g.idle/8 {
			g.rdSet = now
			g.Conn.SetReadDeadline(now.Add(g.idle))
		}
	}
	return g.Conn.Read(p)
}

func (g *guardedConn) Write(p []byte) (int, error) {
	if g.write > 0 {
		if now := time.Now(); now.Sub(g.wrSet) > g.write/8 {
			g.wrSet = now
			g.Conn.SetWriteDeadline(now.Add(g.write))
		}
	}
	return g.Conn.Write(p)
}

// CloseWrite half-closes the connection when the underlying one can (net/http uses it to
// end a response cleanly); otherwise it is a no-op.
func (g *guardedConn) CloseWrite() error {
	if g.closeWriteConn != nil {
		return g.closeWriteConn.CloseWrite()
	}
	return nil
}

// limitListener lets at most n connections be open at once: Accept waits for a slot.
// Closing the listener ends a waiting Accept with net.ErrClosed.
type limitListener struct {
	net.Listener
	sem    chan struct{}
	closed chan struct{}
}

func limit(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), closed: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &slotConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return l.Listener.Close()
}

// slotConn gives its listener slot back when first closed (servers may close a
// connection from two goroutines at once).
type slotConn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite passes a half-close through.
func (c *slotConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// guardListener wraps every accepted connection with guard.
type guardListener struct {
	net.Listener
	idle, write time.Duration
	guardReads  bool
}

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return guard(c, l.idle, l.write, l.guardReads), nil
}
