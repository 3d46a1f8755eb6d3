package netstack

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/berthnet/berth"
)

// PingAddr is the address of a PingConn: an IP address without a port. It implements
// net.Addr with the network "ping4" or "ping6".
type PingAddr struct{ addr netip.Addr }

// PingAddrFromAddr returns addr as a *PingAddr.
func PingAddrFromAddr(addr netip.Addr) *PingAddr { return &PingAddr{addr} }

// String returns the address in netip.Addr's form.
func (a PingAddr) String() string { return a.addr.String() }

// Network returns "ping4" for an IPv4 address and "ping6" otherwise.
func (a PingAddr) Network() string {
	if a.addr.Is4() {
		return "ping4"
	}
	return "ping6"
}

// Addr returns the IP address.
func (a PingAddr) Addr() netip.Addr { return a.addr }

// PingConn sends ICMP (or ICMPv6) echo requests built by the caller — for example with
// golang.org/x/net/icmp, checksum included for ICMPv4; the stack computes ICMPv6's
// (RFC 3542 §3.1) — and reads the echo replies that come back, whole ICMP messages
// without the IP header. It is a datagram socket like Linux's ping sockets: it reads only
// echo replies (from the remote address, when dialed), never the requests the stack
// answers itself nor other ICMP traffic.
type PingConn struct {
	c      *berth.ICMPConn
	laddr  PingAddr
	raddr  PingAddr // zero unless dialed
	proto6 bool
}

var _ net.PacketConn = (*PingConn)(nil)
var _ net.Conn = (*PingConn)(nil)

// DialPingAddr opens a PingConn from laddr (the zero Addr: the stack chooses by the route)
// to raddr.
func (n *Net) DialPingAddr(laddr, raddr netip.Addr) (*PingConn, error) {
	if !raddr.IsValid() {
		return nil, &net.OpError{Op: "dial", Net: "ping", Source: PingAddrFromAddr(laddr), Err: errMissingAddress}
	}
	pc, err := n.listenPing(laddr, raddr.Is6())
	if err != nil {
		return nil, err
	}
	pc.raddr = PingAddr{raddr}
	return pc, nil
}

// ListenPingAddr opens an unconnected PingConn on laddr; the family is laddr's (IPv4 for
// the zero Addr).
func (n *Net) ListenPingAddr(laddr netip.Addr) (*PingConn, error) {
	return n.listenPing(laddr, laddr.Is6())
}

// DialPing is DialPingAddr with *PingAddr values (laddr may be nil).
func (n *Net) DialPing(laddr, raddr *PingAddr) (*PingConn, error) {
	var la, ra netip.Addr
	if laddr != nil {
		la = laddr.addr
	}
	if raddr != nil {
		ra = raddr.addr
	}
	return n.DialPingAddr(la, ra)
}

// ListenPing is ListenPingAddr with a *PingAddr (nil: any IPv4 address).
func (n *Net) ListenPing(laddr *PingAddr) (*PingConn, error) {
	var la netip.Addr
	if laddr != nil {
		la = laddr.addr
	}
	return n.ListenPingAddr(la)
}

func (n *Net) listenPing(laddr netip.Addr, v6 bool) (*PingConn, error) {
	network, addr := "ip4:icmp", ""
	if v6 {
		network = "ip6:ipv6-icmp"
	}
	if laddr.IsValid() {
		addr = laddr.String()
	}
	c, err := n.s.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	return &PingConn{c: c.(*berth.ICMPConn), laddr: PingAddr{laddr}, proto6: v6}, nil
}

// LocalAddr returns the *PingAddr the socket was opened on.
func (pc *PingConn) LocalAddr() net.Addr { return &pc.laddr }

// RemoteAddr returns the dialed *PingAddr; nil for a PingConn from ListenPing.
func (pc *PingConn) RemoteAddr() net.Addr {
	if !pc.raddr.addr.IsValid() {
		return nil
	}
	return &pc.raddr
}

// Close closes the socket; a blocked read returns net.ErrClosed.
func (pc *PingConn) Close() error { return pc.c.Close() }

// WriteTo sends one ICMP message to addr (a *PingAddr, *net.IPAddr or *net.UDPAddr).
func (pc *PingConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	var dst netip.Addr
	switch a := addr.(type) {
	case *PingAddr:
		dst = a.addr
	case *net.IPAddr:
		dst, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		dst, _ = netip.AddrFromSlice(a.IP)
	}
	if !dst.IsValid() {
		return 0, &net.OpError{Op: "write", Net: pc.laddr.Network(), Source: &pc.laddr, Addr: addr, Err: errMissingAddress}
	}
	return pc.c.WriteTo(p, &net.IPAddr{IP: dst.Unmap().AsSlice()})
}

// Write sends one ICMP message to the dialed address.
func (pc *PingConn) Write(p []byte) (int, error) {
	if !pc.raddr.addr.IsValid() {
		return 0, &net.OpError{Op: "write", Net: pc.laddr.Network(), Source: &pc.laddr, Err: errMissingAddress}
	}
	return pc.WriteTo(p, &pc.raddr)
}

// ReadFrom reads the next echo reply and who sent it (a *PingAddr).
func (pc *PingConn) ReadFrom(p []byte) (int, net.Addr, error) {
	// Echo reply: type 0 (RFC 792), 129 for ICMPv6 (RFC 4443 §4.2).
	reply := byte(0)
	if pc.proto6 {
		reply = 129
	}
	buf := p
	if len(buf) < 1 {
		buf = make([]byte, 1)
	}
	for {
		n, from, err := pc.c.ReadFrom(buf)
		if err != nil {
			return 0, nil, err
		}
		ip, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		ip = ip.Unmap()
		if n < 1 || buf[0] != reply || (pc.raddr.addr.IsValid() && ip != pc.raddr.addr.Unmap()) {
			continue
		}
		if len(p) == 0 {
			n = 0
		}
		return n, PingAddrFromAddr(ip), nil
	}
}

// Read reads the next echo reply.
func (pc *PingConn) Read(p []byte) (int, error) {
	n, _, err := pc.ReadFrom(p)
	return n, err
}

// SetDeadline sets the read deadline; sends never block.
func (pc *PingConn) SetDeadline(t time.Time) error { return pc.c.SetDeadline(t) }

// SetReadDeadline makes reads after t fail with os.ErrDeadlineExceeded.
func (pc *PingConn) SetReadDeadline(t time.Time) error { return pc.c.SetReadDeadline(t) }

// SetWriteDeadline is accepted for net.Conn; sends never block.
func (pc *PingConn) SetWriteDeadline(t time.Time) error { return pc.c.SetWriteDeadline(t) }

var errMissingAddress = &net.AddrError{Err: "missing address"}
