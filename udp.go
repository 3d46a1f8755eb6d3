package berth

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/berthnet/berth/udp"
)

// UDPConn is a UDP socket on a berth Stack. Like *net.UDPConn it implements net.PacketConn
// and net.Conn, and offers the netip-based ReadFromUDPAddrPort and WriteToUDPAddrPort,
// which do not allocate.
type UDPConn struct {
	ep      *udp.Endpoint
	network string
	dual    bool // dual-stack IPv6 socket: IPv4 peers appear as ::ffff:a.b.c.d, as in Go
	laddr   *net.UDPAddr
	raddr   *net.UDPAddr // nil unless connected
	zone    string       // shown on link-local addresses (the interface's name)
}

var (
	_ net.PacketConn = (*UDPConn)(nil)
	_ net.Conn       = (*UDPConn)(nil)
)

// ListenPacket announces on the local address, as net.ListenPacket does. network is "udp",
// "udp4" or "udp6" (or "ip4:icmp" / "ip6:ipv6-icmp" for a raw ICMP socket, see ICMPConn);
// address is "host:port" with a literal IP (or "localhost", or empty
// for the wildcard). Port 0 picks a free port.
func (s *Stack) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	if v6, ok := icmpNetwork(network); ok {
		c, err := s.listenICMP(ctx, network, address, v6)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	c, err := s.ListenUDP(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ListenUDP is ListenPacket returning the concrete type.
func (s *Stack) ListenUDP(ctx context.Context, network, address string) (*UDPConn, error) {
	return s.listenUDP(ctx, network, address, nil)
}

func (s *Stack) listenUDP(ctx context.Context, network, address string, lc *ListenConfig) (*UDPConn, error) {
	fail := func(addr net.Addr, err error) (*UDPConn, error) {
		return nil, opError("listen", network, nil, addr, "bind", err)
	}
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return fail(nil, net.UnknownNetworkError(network))
	}
	a, port, err := s.splitAddr(ctx, network, address, network == "udp6")
	if err != nil {
		return fail(nil, err)
	}
	a, zone := zoneOf(a)
	ctlAddr := (&net.UDPAddr{IP: a.AsSlice(), Port: int(port), Zone: zone}).String()
	fam, a, err := udpFamily(network, a, true)
	if err != nil {
		return fail(nil, err)
	}
	laddr := &net.UDPAddr{IP: a.AsSlice(), Port: int(port), Zone: zone}
	if err := ctx.Err(); err != nil {
		return fail(laddr, err)
	}
	if err := s.checkZone(a, zone, true); err != nil {
		return fail(laddr, err)
	}
	o, err := lc.control(network, fam != udp.V4, ctlAddr)
	if err != nil {
		return fail(laddr, err)
	}
	opts := s.bindOptions()
	opts.ReuseAddr, opts.ReusePort = o.ReuseAddr, o.ReusePort
	ep, err := s.udp.NewEndpoint(fam)
	if err != nil {
		return fail(laddr, err)
	}
	ep.SetReceiveBuffer(o.ReceiveBuffer)
	if err := ep.Bind(netip.AddrPortFrom(a, port), opts); err != nil {
		ep.Close()
		return fail(laddr, err)
	}
	return newUDPConn(ep, network, s.linkZone(ep.LocalAddr().Addr(), zone)), nil
}

// newUDPConn wraps ep; link-local addresses show zone.
func newUDPConn(ep *udp.Endpoint, network, zone string) *UDPConn {
	c := &UDPConn{ep: ep, network: network, dual: ep.Family() == udp.Dual, zone: zone}
	c.laddr = net.UDPAddrFromAddrPort(c.mapAddr(ep.LocalAddr()))
	if r := ep.RemoteAddr(); r.IsValid() {
		c.raddr = net.UDPAddrFromAddrPort(c.mapAddr(r))
	}
	return c
}

// mapAddr shows an address the way the socket's family does: IPv4 addresses on a
// dual-stack socket are IPv4-mapped (Go's ReadFromUDPAddrPort returns ::ffff:a.b.c.d there).
func (c *UDPConn) mapAddr(ap netip.AddrPort) netip.AddrPort {
	if c.dual && ap.Addr().Is4() {
		return netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port())
	}
	if c.zone != "" {
		return withZone(ap, c.zone)
	}
	return ap
}

func (c *UDPConn) refreshLocal() {
	if c.laddr.Port == 0 {
		c.laddr = net.UDPAddrFromAddrPort(c.mapAddr(c.ep.LocalAddr()))
	}
}

func (c *UDPConn) readErr(syscallName string, err error) error {
	return opError("read", c.network, c.laddr, addrOrNil(c.raddr), syscallName, err)
}

func (c *UDPConn) writeErr(syscallName string, addr net.Addr, err error) error {
	c.refreshLocal()
	return opError("write", c.network, c.laddr, addr, syscallName, err)
}

// addrOrNil keeps a nil *net.UDPAddr from becoming a non-nil net.Addr.
func addrOrNil(a *net.UDPAddr) net.Addr {
	if a == nil {
		return nil
	}
	return a
}

// ReadFromUDPAddrPort reads one datagram; it does not allocate.
func (c *UDPConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, from, err := c.ep.RecvFrom(b)
	if err != nil {
		return 0, netip.AddrPort{}, c.readErr("recvfrom", err)
	}
	return n, c.mapAddr(from), nil
}

// ReadFromUDP reads one datagram and its sender.
func (c *UDPConn) ReadFromUDP(b []byte) (int, *net.UDPAddr, error) {
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// ReadFrom implements net.PacketConn.
func (c *UDPConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDP(b)
	if err != nil {
		return 0, nil, err
	}
	return n, from, nil
}

// Read implements net.Conn (on a connected socket: datagrams from the remote only).
func (c *UDPConn) Read(b []byte) (int, error) {
	n, _, err := c.ep.RecvFrom(b)
	if err != nil {
		return 0, c.readErr("read", err)
	}
	return n, nil
}

// Write implements net.Conn: it sends b to the connected remote.
func (c *UDPConn) Write(b []byte) (int, error) {
	n, err := c.ep.SendTo(b, netip.AddrPort{})
	if err != nil {
		return n, c.writeErr("write", addrOrNil(c.raddr), err)
	}
	return n, nil
}

// WriteToUDPAddrPort sends b to addr; it does not allocate.
func (c *UDPConn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if c.raddr != nil {
		return 0, c.writeErr("", net.UDPAddrFromAddrPort(addr), net.ErrWriteToConnected)
	}
	n, err := c.ep.SendTo(b, stripZone(addr))
	if err != nil {
		return n, c.writeErr("sendto", net.UDPAddrFromAddrPort(addr), err)
	}
	return n, nil
}

// WriteToUDP sends b to addr.
func (c *UDPConn) WriteToUDP(b []byte, addr *net.UDPAddr) (int, error) {
	if addr == nil {
		return 0, c.writeErr("", nil, errMissingAddress)
	}
	return c.WriteToUDPAddrPort(b, addr.AddrPort())
}

var errMissingAddress = &net.AddrError{Err: "missing address"}

// WriteTo implements net.PacketConn; addr must be a *net.UDPAddr.
func (c *UDPConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	a, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, c.writeErr("", addr, syscall.EINVAL)
	}
	return c.WriteToUDP(b, a)
}

// Close closes the socket; blocked reads return net.ErrClosed.
func (c *UDPConn) Close() error {
	if err := c.ep.Close(); err != nil {
		return opError("close", c.network, nil, c.laddr, "", err)
	}
	return nil
}

// LocalAddr returns the bound address (after an implicit bind by the first write, the
// port it got).
func (c *UDPConn) LocalAddr() net.Addr {
	c.refreshLocal()
	return c.laddr
}

// RemoteAddr returns the connected remote, or nil.
func (c *UDPConn) RemoteAddr() net.Addr { return addrOrNil(c.raddr) }

// SetDeadline sets both deadlines.
func (c *UDPConn) SetDeadline(t time.Time) error {
	c.ep.SetReadDeadline(t)
	c.ep.SetWriteDeadline(t)
	return nil
}

// SetReadDeadline implements net.Conn: reads after t fail with os.ErrDeadlineExceeded.
func (c *UDPConn) SetReadDeadline(t time.Time) error { return c.ep.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn. Sends never block, so only a deadline already
// past makes them fail.
func (c *UDPConn) SetWriteDeadline(t time.Time) error { return c.ep.SetWriteDeadline(t) }

// Drops reports how many datagrams the socket's full receive queue dropped.
func (c *UDPConn) Drops() uint64 { return c.ep.Info().Drops }

func (d *Dialer) dialUDP(ctx context.Context, network, address string) (*UDPConn, error) {
	s := d.Stack
	var laddr *net.UDPAddr
	if d.LocalAddr != nil {
		a, ok := d.LocalAddr.(*net.UDPAddr)
		if !ok {
			return nil, &net.OpError{Op: "dial", Net: network, Source: d.LocalAddr, Err: &net.AddrError{Err: "mismatched local address type", Addr: d.LocalAddr.String()}}
		}
		laddr = a
	}
	fail := func(raddr net.Addr, syscallName string, err error) (*UDPConn, error) {
		return nil, opError("dial", network, addrOrNil(laddr), raddr, syscallName, err)
	}
	if s == nil {
		return fail(nil, "", syscall.EINVAL)
	}
	addrs, rport, err := d.resolve(ctx, network, address)
	if err != nil {
		return fail(nil, "", err)
	}
	// Datagram sockets connect without a handshake: the first address the stack can
	// reach is the one, as in package net.
	return happyEyeballs(ctx, -1, addrs, func(ctx context.Context, ra netip.Addr) (*UDPConn, error) {
		return d.dialUDPAddr(ctx, network, laddr, ra, rport)
	})
}

// dialUDPAddr connects a new UDP socket to ra.
func (d *Dialer) dialUDPAddr(ctx context.Context, network string, laddr *net.UDPAddr, ra netip.Addr, rport uint16) (*UDPConn, error) {
	s := d.Stack
	fail := func(raddr net.Addr, syscallName string, err error) (*UDPConn, error) {
		return nil, opError("dial", network, addrOrNil(laddr), raddr, syscallName, err)
	}
	ra, zone := zoneOf(ra)
	fam, ra, err := udpFamily(network, ra, false)
	if err != nil {
		return fail(nil, "", err)
	}
	raddr := &net.UDPAddr{IP: ra.AsSlice(), Port: int(rport), Zone: zone}
	if err := ctx.Err(); err != nil {
		return fail(raddr, "", err)
	}
	var zsrc netip.Addr
	if zone != "" {
		if zsrc, err = s.zoneSource(ra, zone); err != nil {
			return fail(raddr, "connect", err)
		}
	}
	o, err := d.control(network, netip.AddrPortFrom(ra, rport))
	if err != nil {
		return fail(raddr, "", err)
	}
	ep, err := s.udp.NewEndpoint(fam)
	if err != nil {
		return fail(raddr, "", err)
	}
	ep.SetReceiveBuffer(o.ReceiveBuffer)
	var la netip.AddrPort
	if laddr != nil {
		a, _ := netip.AddrFromSlice(laddr.IP)
		la = netip.AddrPortFrom(a.Unmap(), uint16(laddr.Port))
	}
	if zsrc.IsValid() && (!la.Addr().IsValid() || la.Addr().IsUnspecified()) {
		la = netip.AddrPortFrom(zsrc, la.Port()) // the zone's interface sends
	}
	if la.Addr().IsValid() || la.Port() != 0 {
		bo := s.bindOptions()
		bo.ReuseAddr, bo.ReusePort = o.ReuseAddr, o.ReusePort
		if err := ep.Bind(la, bo); err != nil {
			ep.Close()
			return fail(raddr, "bind", err)
		}
	}
	if err := ep.Connect(netip.AddrPortFrom(ra, rport)); err != nil {
		ep.Close()
		return fail(raddr, "connect", err)
	}
	return newUDPConn(ep, network, s.linkZone(ep.LocalAddr().Addr(), zone)), nil
}
