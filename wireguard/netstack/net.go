// Package netstack runs a berth stack behind a wireguard-go device: the stack's packets go
// through the WireGuard tunnel, with no kernel interface, no root and no TUN device.
//
// It is the counterpart of wireguard-go's golang.zx2c4.com/wireguard/tun/netstack
// (which is built on gVisor), with the same entry point and method names, so a program
// moves to berth by changing that one import:
//
//	tun, tnet, err := netstack.CreateNetTUN(
//		[]netip.Addr{netip.MustParseAddr("10.0.0.2")},
//		[]netip.Addr{netip.MustParseAddr("10.0.0.1")}, 1420)
//	dev := device.NewDevice(tun, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, ""))
//	dev.IpcSet(config)
//	dev.Up()
//	client := http.Client{Transport: &http.Transport{DialContext: tnet.DialContext}}
//
// The connections it returns are berth's own (*berth.TCPConn, *berth.UDPConn), which
// implement net.Conn and net.PacketConn with errors shaped like package net's.
package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/berthnet/berth"
	"golang.zx2c4.com/wireguard/tun"
)

// ifname is the name of the tunnel interface on the berth stack.
const ifname = "wg0"

// Net is the socket API of the berth stack behind a device made by CreateNetTUN. Its
// methods are safe for concurrent use. It lives as long as the device: closing the
// tun.Device (wireguard-go does so in Device.Close) closes the stack and every socket.
type Net struct {
	s          *berth.Stack
	dnsServers []netip.Addr
	has4, has6 bool
}

// CreateNetTUN returns a tun.Device for wireguard-go's device.NewDevice and the socket API
// of the berth stack behind it. The stack has localAddresses on its tunnel interface (each
// as a host address, /32 or /128) and default routes into the tunnel for each address
// family it has an address of; mtu is the tunnel's MTU (1420 is WireGuard's usual value
// for a 1500-byte path). dnsServers are the servers LookupHost and DialContext ask, over
// the tunnel; none makes names fail to resolve.
func CreateNetTUN(localAddresses, dnsServers []netip.Addr, mtu int) (tun.Device, *Net, error) {
	return CreateNetTUNWith(localAddresses, dnsServers, mtu)
}

// CreateNetTUNWith is CreateNetTUN with options for the berth stack (clock, TCP and UDP
// settings, seeds): see berth.New.
func CreateNetTUNWith(localAddresses, dnsServers []netip.Addr, mtu int, opts ...berth.Option) (tun.Device, *Net, error) {
	if mtu < 576 || mtu > 65535 {
		// RFC 791: every IPv4 host accepts 576-byte datagrams; smaller links cannot carry
		// a minimal TCP segment with options reliably.
		return nil, nil, fmt.Errorf("netstack: MTU %d out of range [576, 65535]", mtu)
	}
	s := berth.New(opts...)
	dev := newDevice(mtu)
	dev.stack = s
	if err := s.AddInterface(ifname, endpoint{dev}); err != nil {
		s.Close()
		return nil, nil, err
	}
	n := &Net{s: s, dnsServers: append([]netip.Addr(nil), dnsServers...)}
	for _, a := range localAddresses {
		a = a.Unmap()
		if a.Is6() && mtu < 1280 {
			// RFC 8200 §5: every IPv6 link carries 1280-byte packets.
			dev.Close()
			return nil, nil, fmt.Errorf("netstack: MTU %d is below IPv6's minimum of 1280 (address %v)", mtu, a)
		}
		if err := s.AddAddress(ifname, netip.PrefixFrom(a, a.BitLen())); err != nil {
			dev.Close()
			return nil, nil, fmt.Errorf("netstack: address %v: %w", a, err)
		}
		if a.Is4() {
			n.has4 = true
		} else {
			n.has6 = true
		}
	}
	if n.has4 {
		if err := s.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.Addr{}, ifname); err != nil {
			dev.Close()
			return nil, nil, err
		}
	}
	if n.has6 {
		if err := s.AddRoute(netip.MustParsePrefix("::/0"), netip.Addr{}, ifname); err != nil {
			dev.Close()
			return nil, nil, err
		}
	}
	return dev, n, nil
}

// Stack returns the berth stack behind the tunnel, for what Net does not wrap (socket
// listings, counters, more interfaces).
func (n *Net) Stack() *berth.Stack { return n.s }

func tcpNet(a netip.Addr) string {
	if a.Is4() {
		return "tcp4"
	}
	return "tcp6"
}

func udpNet(a netip.Addr) string {
	if a.Is4() {
		return "udp4"
	}
	return "udp6"
}

// DialContextTCPAddrPort connects to addr over TCP.
func (n *Net) DialContextTCPAddrPort(ctx context.Context, addr netip.AddrPort) (*berth.TCPConn, error) {
	c, err := n.s.DialContext(ctx, tcpNet(addr.Addr()), addr.String())
	if err != nil {
		return nil, err
	}
	return c.(*berth.TCPConn), nil
}

// DialContextTCP connects to addr over TCP.
func (n *Net) DialContextTCP(ctx context.Context, addr *net.TCPAddr) (*berth.TCPConn, error) {
	if addr == nil {
		return n.DialContextTCPAddrPort(ctx, netip.AddrPort{})
	}
	return n.DialContextTCPAddrPort(ctx, addr.AddrPort())
}

// DialTCPAddrPort connects to addr over TCP.
func (n *Net) DialTCPAddrPort(addr netip.AddrPort) (*berth.TCPConn, error) {
	return n.DialContextTCPAddrPort(context.Background(), addr)
}

// DialTCP connects to addr over TCP.
func (n *Net) DialTCP(addr *net.TCPAddr) (*berth.TCPConn, error) {
	return n.DialContextTCP(context.Background(), addr)
}

// ListenTCPAddrPort listens for TCP connections on addr (an unspecified address listens
// on every address, port 0 picks a free port).
func (n *Net) ListenTCPAddrPort(addr netip.AddrPort) (*berth.TCPListener, error) {
	network := "tcp"
	if addr.Addr().IsValid() && !addr.Addr().IsUnspecified() {
		network = tcpNet(addr.Addr())
	}
	return n.s.ListenTCP(context.Background(), network, listenAddr(addr))
}

// ListenTCP listens for TCP connections on addr (nil: every address, a free port).
func (n *Net) ListenTCP(addr *net.TCPAddr) (*berth.TCPListener, error) {
	if addr == nil {
		return n.ListenTCPAddrPort(netip.AddrPort{})
	}
	return n.ListenTCPAddrPort(addr.AddrPort())
}

// listenAddr formats a local address for berth's Listen: an invalid or unspecified
// address means every address.
func listenAddr(a netip.AddrPort) string {
	if !a.Addr().IsValid() || a.Addr().IsUnspecified() {
		return ":" + strconv.Itoa(int(a.Port()))
	}
	return a.String()
}

// DialUDPAddrPort opens a UDP socket bound to laddr (invalid: any address, a free port)
// and, when raddr is valid, connected to raddr.
func (n *Net) DialUDPAddrPort(laddr, raddr netip.AddrPort) (*berth.UDPConn, error) {
	if !raddr.Addr().IsValid() {
		return n.ListenUDPAddrPort(laddr)
	}
	d := berth.Dialer{Stack: n.s}
	if laddr.IsValid() || laddr.Port() != 0 {
		d.LocalAddr = net.UDPAddrFromAddrPort(laddr)
	}
	c, err := d.DialContext(context.Background(), udpNet(raddr.Addr()), raddr.String())
	if err != nil {
		return nil, err
	}
	return c.(*berth.UDPConn), nil
}

// ListenUDPAddrPort opens an unconnected UDP socket on laddr.
func (n *Net) ListenUDPAddrPort(laddr netip.AddrPort) (*berth.UDPConn, error) {
	network := "udp"
	if laddr.Addr().IsValid() && !laddr.Addr().IsUnspecified() {
		network = udpNet(laddr.Addr())
	}
	return n.s.ListenUDP(context.Background(), network, listenAddr(laddr))
}

// DialUDP is DialUDPAddrPort with net.UDPAddr values (nil for none).
func (n *Net) DialUDP(laddr, raddr *net.UDPAddr) (*berth.UDPConn, error) {
	var la, ra netip.AddrPort
	if laddr != nil {
		la = laddr.AddrPort()
	}
	if raddr != nil {
		ra = raddr.AddrPort()
	}
	return n.DialUDPAddrPort(la, ra)
}

// ListenUDP is ListenUDPAddrPort with a net.UDPAddr (nil: any address, a free port).
func (n *Net) ListenUDP(laddr *net.UDPAddr) (*berth.UDPConn, error) {
	if laddr == nil {
		return n.ListenUDPAddrPort(netip.AddrPort{})
	}
	return n.ListenUDPAddrPort(laddr.AddrPort())
}

// Ping sends one ICMP or ICMPv6 echo request to addr through the tunnel and returns the
// round-trip time of its reply. Errors are *net.OpError values with Op "ping" (see
// berth.Stack.Ping); ctx bounds the wait.
func (n *Net) Ping(ctx context.Context, addr netip.Addr, seq int, payload []byte) (time.Duration, error) {
	return n.s.Ping(ctx, addr, seq, payload)
}
