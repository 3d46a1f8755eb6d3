package berth

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/berthnet/berth/tcp"
)

// The parts of *net.TCPConn, *net.UDPConn and package net's constructors that libraries
// reach by type assertion or call by name: io.Copy's fast paths, buffer sizes, the
// message forms of UDP reads and writes, and netip.AddrPort forms of Dial and Listen.

var (
	_ io.ReaderFrom = (*TCPConn)(nil)
	_ io.WriterTo   = (*TCPConn)(nil)
)

// ReadFrom implements io.ReaderFrom, io.Copy's fast path: it reads r until EOF straight
// into the connection's send buffer, with no intermediate buffer, blocking as Write does.
// It returns the bytes taken and nil at r's EOF; errors (r's or the connection's) are
// *net.OpError values with Op "readfrom", as from *net.TCPConn.
func (c *TCPConn) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.c.ReadFrom(r)
	if err != nil {
		err = &net.OpError{Op: "readfrom", Net: c.network, Source: c.laddr, Addr: c.raddr, Err: tcpSyscallErr("write", err)}
	}
	return n, err
}

// WriteTo implements io.WriterTo: it copies what the connection receives to w until the
// peer's FIN (nil error). Into another berth TCPConn the data goes from one receive
// buffer straight into the other's send buffer. Errors are *net.OpError values with Op
// "writeto", as from *net.TCPConn.
func (c *TCPConn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	var err error
	if dst, ok := w.(*TCPConn); ok {
		n, err = dst.c.ReadFrom(readerOnly{c.c})
	} else {
		n, err = io.Copy(w, readerOnly{c.c})
	}
	if err != nil {
		err = &net.OpError{Op: "writeto", Net: c.network, Source: c.laddr, Addr: c.raddr, Err: tcpSyscallErr("read", err)}
	}
	return n, err
}

// readerOnly hides every method but Read, so that io.Copy cannot call back into WriteTo.
type readerOnly struct{ io.Reader }

// SetReadBuffer sets the receive buffer size (SO_RCVBUF) in bytes; the size is kept, not
// auto-tuned. The window scale is fixed by the handshake (RFC 7323 §2.2), so a size set on
// an open connection is capped by the window it can announce: set it before connecting
// with Dialer.Control. Sizes <= 0 change nothing, as Linux clamps them.
func (c *TCPConn) SetReadBuffer(bytes int) error {
	return c.setErr("setsockopt", c.c.SetBuffers(0, bytes))
}

// SetWriteBuffer sets the send buffer size (SO_SNDBUF) in bytes; the size is kept, not
// auto-tuned. Sizes <= 0 change nothing.
func (c *TCPConn) SetWriteBuffer(bytes int) error {
	return c.setErr("setsockopt", c.c.SetBuffers(bytes, 0))
}

// SetReadBuffer sets how many bytes of datagrams the receive queue holds (SO_RCVBUF; each
// datagram also counts a fixed overhead, as skbs do on Linux); datagrams beyond it are
// dropped and counted (Drops). bytes <= 0 restores the stack's default.
func (c *UDPConn) SetReadBuffer(bytes int) error {
	c.ep.SetReceiveBuffer(bytes)
	return nil
}

// SetWriteBuffer is accepted for net.UDPConn's sake (SO_SNDBUF): a berth UDP send goes to
// the link before it returns and never waits in a socket buffer, so there is nothing to
// size.
func (c *UDPConn) SetWriteBuffer(bytes int) error { return nil }

// ReadMsgUDPAddrPort reads one datagram like ReadFromUDPAddrPort and returns recvmsg(2)'s
// flags: syscall.MSG_TRUNC when the datagram was longer than b and was cut. berth has no
// ancillary data to deliver: oobn is always 0 and oob is left untouched. It does not
// allocate.
func (c *UDPConn) ReadMsgUDPAddrPort(b, oob []byte) (n, oobn, flags int, addr netip.AddrPort, err error) {
	n, from, trunc, err := c.ep.RecvMsg(b)
	if err != nil {
		return 0, 0, 0, netip.AddrPort{}, c.readErr("recvmsg", err)
	}
	if trunc {
		flags |= syscall.MSG_TRUNC
	}
	return n, 0, flags, c.mapAddr(from), nil
}

// ReadMsgUDP is ReadMsgUDPAddrPort returning a *net.UDPAddr.
func (c *UDPConn) ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	n, oobn, flags, ap, err := c.ReadMsgUDPAddrPort(b, oob)
	if err != nil {
		return n, oobn, flags, nil, err
	}
	return n, oobn, flags, net.UDPAddrFromAddrPort(ap), nil
}

// WriteMsgUDPAddrPort sends b to addr as sendmsg(2) does: on a connected socket addr must
// be the zero AddrPort (else net.ErrWriteToConnected), on an unconnected one it is
// required. berth takes no ancillary data: a non-empty oob fails with EOPNOTSUPP and
// nothing is sent. It does not allocate.
func (c *UDPConn) WriteMsgUDPAddrPort(b, oob []byte, addr netip.AddrPort) (n, oobn int, err error) {
	// The destination as a net.Addr is built only for an error: it allocates.
	to := func() net.Addr {
		if addr.IsValid() {
			return net.UDPAddrFromAddrPort(addr)
		}
		return addrOrNil(c.raddr)
	}
	switch {
	case c.raddr != nil && addr.IsValid():
		return 0, 0, c.writeErr("", to(), net.ErrWriteToConnected)
	case c.raddr == nil && !addr.IsValid():
		return 0, 0, c.writeErr("", nil, errMissingAddress)
	case len(oob) > 0:
		return 0, 0, c.writeErr("sendmsg", to(), syscall.EOPNOTSUPP)
	}
	n, err = c.ep.SendTo(b, stripZone(addr))
	if err != nil {
		return n, 0, c.writeErr("sendmsg", to(), err)
	}
	return n, 0, nil
}

// WriteMsgUDP is WriteMsgUDPAddrPort with a *net.UDPAddr (nil on a connected socket).
func (c *UDPConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	var ap netip.AddrPort
	if addr != nil {
		ap = addr.AddrPort()
	}
	return c.WriteMsgUDPAddrPort(b, oob, ap)
}

// addrPortNetwork is the network of an AddrPort form: the address's family, or both for
// the zero (wildcard) address.
func addrPortNetwork(proto string, a netip.AddrPort) (network, address string) {
	switch {
	case !a.Addr().IsValid():
		return proto, ":" + strconv.Itoa(int(a.Port()))
	case a.Addr().Is4():
		return proto + "4", a.String()
	}
	return proto + "6", a.String()
}

// DialContextTCPAddrPort connects to addr over TCP ("tcp4" or "tcp6" by its family), as
// wireguard-go's netstack.Net offers it.
func (s *Stack) DialContextTCPAddrPort(ctx context.Context, addr netip.AddrPort) (*TCPConn, error) {
	network, address := addrPortNetwork("tcp", addr)
	d := Dialer{Stack: s}
	return d.dialTCP(ctx, network, address)
}

// DialTCPAddrPort is DialContextTCPAddrPort with a background context.
func (s *Stack) DialTCPAddrPort(addr netip.AddrPort) (*TCPConn, error) {
	return s.DialContextTCPAddrPort(context.Background(), addr)
}

// ListenTCPAddrPort listens on addr over TCP; the zero address (netip.AddrPort{} or with
// only a port) is every address of both families.
func (s *Stack) ListenTCPAddrPort(addr netip.AddrPort) (*TCPListener, error) {
	network, address := addrPortNetwork("tcp", addr)
	return s.ListenTCP(context.Background(), network, address)
}

// ListenUDPAddrPort opens a UDP socket bound to laddr (zero address: both families).
func (s *Stack) ListenUDPAddrPort(laddr netip.AddrPort) (*UDPConn, error) {
	network, address := addrPortNetwork("udp", laddr)
	return s.ListenUDP(context.Background(), network, address)
}

// DialUDPAddrPort opens a UDP socket connected to raddr, bound to laddr unless laddr is
// the zero AddrPort.
func (s *Stack) DialUDPAddrPort(laddr, raddr netip.AddrPort) (*UDPConn, error) {
	network, address := addrPortNetwork("udp", raddr)
	d := Dialer{Stack: s}
	if laddr.IsValid() || laddr.Port() != 0 {
		d.LocalAddr = net.UDPAddrFromAddrPort(laddr)
	}
	return d.dialUDP(context.Background(), network, address)
}

// SocketOptions are the settings a Control function may make on a new socket before it
// binds (Listen) or connects (Dial). They stand in for the syscall.RawConn that
// net.Dialer.Control and net.ListenConfig.Control receive: a berth socket has no file
// descriptor and there is no setsockopt to call, so the options berth has are typed
// fields. Control sees them preset to the socket's defaults.
type SocketOptions struct {
	ReuseAddr bool // SO_REUSEADDR (set by default on TCP listeners, as in Go)
	// ReusePort is SO_REUSEPORT: sockets sharing a port form a group that divides the
	// incoming connections or datagrams by a hash of the 4-tuple.
	ReusePort bool
	// SendBuffer and ReceiveBuffer are SO_SNDBUF and SO_RCVBUF in bytes; 0 keeps the
	// stack's auto-tuned default. A TCP listener takes no ReceiveBuffer (Listen fails
	// with ENOPROTOOPT): set TCP's default with WithTCPConfig instead.
	SendBuffer, ReceiveBuffer int
	// NoDelay is TCP_NODELAY: true (the default, as in Go) disables Nagle's algorithm.
	NoDelay bool
	// CongestionControl is TCP_CONGESTION ("cubic", "reno"); "" keeps the stack's.
	CongestionControl string
}

// defaultSocketOptions are what Control sees on a socket of network.
func defaultSocketOptions(network string, listen bool) SocketOptions {
	return SocketOptions{ReuseAddr: listen && network[:3] == "tcp", NoDelay: true}
}

// applyTCP applies the options a TCP connection takes after it opens.
func (o *SocketOptions) applyTCP(c *tcp.Conn) error {
	if o.SendBuffer > 0 {
		if err := c.SetBuffers(o.SendBuffer, 0); err != nil {
			return err
		}
	}
	if !o.NoDelay {
		if err := c.SetNoDelay(false); err != nil {
			return err
		}
	}
	if o.CongestionControl != "" {
		return c.SetCongestionControl(o.CongestionControl)
	}
	return nil
}

// KeepAliveConfig returns the connection's keep-alive settings; zero durations and counts
// stand for Go's defaults (15 s, 15 s, 9).
func (c *TCPConn) KeepAliveConfig() net.KeepAliveConfig {
	k := c.c.KeepAliveConfig()
	return net.KeepAliveConfig{Enable: k.Enable, Idle: k.Idle, Interval: k.Interval, Count: k.Count}
}
