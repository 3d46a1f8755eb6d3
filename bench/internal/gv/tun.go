package gv

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TUNStack is one gVisor stack on a TUN device through gVisor's fdbased endpoint.
type TUNStack struct {
	s    *stack.Stack
	ep   stack.LinkEndpoint
	addr netip.Addr
}

// NewTUNStack runs a gVisor stack with address addr/24 on the TUN file descriptor fd (which
// stays the caller's to close, after Close). Offloads: fdbased offers GSO only on socket
// FDs (AF_PACKET with a vnet header), not on a TUN FD; what it offers there is on: receive
// checksum offload (the kernel's packets are trusted, as over a virtio NIC) and its GRO.
// Transmit checksum offload stays off: a TUN without a vnet header cannot say "checksum
// needed", so the stack must fill checksums in.
func NewTUNStack(fd, mtu int, addr netip.Addr) (*TUNStack, error) {
	ep, err := fdbased.New(&fdbased.Options{
		FDs:                []int{fd},
		MTU:                uint32(mtu),
		RXChecksumOffload:  true,
		GRO:                true,
		PacketDispatchMode: fdbased.Readv,
	})
	if err != nil {
		return nil, err
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	if err := s.CreateNIC(1, ep); err != nil {
		s.Close()
		return nil, fmt.Errorf("gvisor CreateNIC: %s", err)
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(addr.AsSlice()), PrefixLen: 24},
	}
	if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		s.Close()
		return nil, fmt.Errorf("gvisor AddProtocolAddress: %s", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: 1}})
	return &TUNStack{s: s, ep: ep, addr: addr}, nil
}

// Listen listens for TCP on the stack's address.
func (t *TUNStack) Listen(port uint16) (net.Listener, error) {
	return gonet.ListenTCP(t.s, full(t.addr, port), ipv4.ProtocolNumber)
}

// Dial connects to a TCP peer (the kernel, across the TUN device).
func (t *TUNStack) Dial(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
	return gonet.DialContextTCP(ctx, t.s, full(to.Addr(), to.Port()), ipv4.ProtocolNumber)
}

// Close stops the stack and the fdbased endpoint's goroutines.
func (t *TUNStack) Close() error {
	t.s.Close()
	t.s.Wait()
	return nil
}
