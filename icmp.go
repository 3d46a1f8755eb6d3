package berth

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/berthnet/berth/stack"
)

// ICMPConn is a raw ICMP socket, as net.ListenPacket("ip4:icmp", ...) or ("ip6:ipv6-icmp",
// ...) opens one (and as golang.org/x/net/icmp uses): ReadFrom returns whole ICMP messages
// without the IP header and their sender as a *net.IPAddr; WriteTo sends a message built
// by the caller (ICMPv4 with its own checksum; the stack computes ICMPv6 checksums).
type ICMPConn struct {
	ep      *stack.ICMPEndpoint
	network string
	laddr   *net.IPAddr
}

var _ net.PacketConn = (*ICMPConn)(nil)

// icmpNetwork recognizes Go's names for the raw ICMP networks.
func icmpNetwork(network string) (v6, ok bool) {
	switch network {
	case "ip4:icmp", "ip4:1":
		return false, true
	case "ip6:ipv6-icmp", "ip6:58":
		return true, true
	}
	return false, false
}

func (s *Stack) listenICMP(ctx context.Context, network, address string, v6 bool) (*ICMPConn, error) {
	var a netip.Addr
	if address != "" {
		var err error
		if a, err = netip.ParseAddr(address); err != nil {
			return nil, opError("listen", network, nil, nil, "", &net.AddrError{Err: "invalid IP address", Addr: address})
		}
	}
	laddr := &net.IPAddr{IP: a.AsSlice()}
	if err := ctx.Err(); err != nil {
		return nil, opError("listen", network, nil, laddr, "", err)
	}
	ep, err := s.net.NewICMPEndpoint(v6, a)
	if err != nil {
		return nil, opError("listen", network, nil, laddr, "bind", err)
	}
	return &ICMPConn{ep: ep, network: network, laddr: laddr}, nil
}

// ReadFrom reads one ICMP message.
func (c *ICMPConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ep.ReadFrom(b)
	if err != nil {
		return 0, nil, opError("read", c.network, c.laddr, nil, "recvfrom", err)
	}
	return n, &net.IPAddr{IP: from.AsSlice()}, nil
}

// WriteTo sends one ICMP message to addr (a *net.IPAddr, or a *net.UDPAddr as x/net/icmp
// accepts for unprivileged sockets).
func (c *ICMPConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var ip net.IP
	switch a := addr.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return 0, opError("write", c.network, c.laddr, addr, "", errMissingAddress)
	}
	dst, ok := netip.AddrFromSlice(ip)
	if !ok {
		return 0, opError("write", c.network, c.laddr, addr, "", errMissingAddress)
	}
	n, err := c.ep.WriteTo(b, dst)
	if err != nil {
		return 0, opError("write", c.network, c.laddr, addr, "sendto", err)
	}
	return n, nil
}

// Close closes the socket.
func (c *ICMPConn) Close() error {
	if err := c.ep.Close(); err != nil {
		return opError("close", c.network, nil, c.laddr, "", err)
	}
	return nil
}

// LocalAddr returns the address given to ListenPacket.
func (c *ICMPConn) LocalAddr() net.Addr { return c.laddr }

// SetDeadline sets the read deadline (sends never block).
func (c *ICMPConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline makes reads after t fail with os.ErrDeadlineExceeded.
func (c *ICMPConn) SetReadDeadline(t time.Time) error {
	c.ep.SetReadDeadline(t)
	return nil
}

// SetWriteDeadline is accepted for net.PacketConn; sends never block.
func (c *ICMPConn) SetWriteDeadline(time.Time) error { return nil }
