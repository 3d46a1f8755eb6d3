package gv

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Addresses of the two stacks (RFC 5737 documentation range: never routed; the packets
// exist only in this process).
var (
	ClientAddr = netip.MustParseAddr("192.0.2.1")
	ServerAddr = netip.MustParseAddr("192.0.2.2")
)

// Pair is two gVisor stacks, client and server, joined by a Link pipe. Each stack runs with
// the defaults of tcp.NewProtocol (buffers 1 MiB with receive-buffer moderation, SACK on,
// Reno).
type Pair struct {
	Client, Server *stack.Stack
	a, b           *Link
}

// NewPair returns two stacks joined by a pipe with the given MTU.
func NewPair(mtu int) (*Pair, error) {
	a, b := NewLinkPair(mtu)
	c, err := newStack(a, ClientAddr)
	if err != nil {
		a.Shutdown()
		return nil, err
	}
	s, err := newStack(b, ServerAddr)
	if err != nil {
		c.Close()
		c.Wait()
		a.Shutdown()
		return nil, err
	}
	return &Pair{Client: c, Server: s, a: a, b: b}, nil
}

func newStack(l *Link, addr netip.Addr) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	if err := s.CreateNIC(1, l); err != nil {
		s.Close()
		return nil, fmt.Errorf("gvisor CreateNIC: %s", err)
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix(),
	}
	pa.AddressWithPrefix.PrefixLen = 24
	if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		s.Close()
		return nil, fmt.Errorf("gvisor AddProtocolAddress: %s", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: 1}})
	return s, nil
}

func full(a netip.Addr, port uint16) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: port}
}

// Listen listens for TCP on the server stack.
func (p *Pair) Listen(port uint16) (net.Listener, error) {
	return gonet.ListenTCP(p.Server, full(ServerAddr, port), ipv4.ProtocolNumber)
}

// Dial connects a TCP client on the client stack to the server's port.
func (p *Pair) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	return gonet.DialContextTCP(ctx, p.Client, full(ServerAddr, port), ipv4.ProtocolNumber)
}

// ListenPacket binds a UDP socket on the server stack.
func (p *Pair) ListenPacket(port uint16) (net.PacketConn, error) {
	la := full(ServerAddr, port)
	return gonet.DialUDP(p.Server, &la, nil, ipv4.ProtocolNumber)
}

// DialUDP returns a connected UDP socket on the client stack towards the server's port.
func (p *Pair) DialUDP(port uint16) (net.Conn, error) {
	ra := full(ServerAddr, port)
	return gonet.DialUDP(p.Client, nil, &ra, ipv4.ProtocolNumber)
}

// Drops reports the packets the pipe dropped (queue full) in both directions.
func (p *Pair) Drops() uint64 { return p.a.Drops.Load() + p.b.Drops.Load() }

// Close closes both stacks and the pipe; their goroutines end.
func (p *Pair) Close() error {
	p.Client.Close()
	p.Server.Close()
	p.Client.Wait()
	p.Server.Wait()
	p.a.Shutdown()
	return nil
}
