package berth

import (
	"context"
	"net"
	"time"
)

// ListenConfig listens on a Stack with socket options, like net.ListenConfig.
type ListenConfig struct {
	Stack *Stack // the stack to listen on; required
	// ReuseAddr is SO_REUSEADDR for UDP sockets (TCP listeners always set it, as in Go).
	ReuseAddr bool
	// ReusePort is SO_REUSEPORT: sockets sharing a port form a group, and each datagram or
	// connection goes to one member chosen by a hash of its 4-tuple.
	ReusePort bool
	// KeepAlive and KeepAliveConfig set keep-alive on accepted TCP connections exactly as
	// in net.ListenConfig: by default probes start after 15 s idle, every 15 s, 9 of them;
	// a negative KeepAlive with KeepAliveConfig.Enable false turns them off.
	KeepAlive       time.Duration
	KeepAliveConfig net.KeepAliveConfig
	// Control, if not nil, is called before the socket binds, with the network of the
	// socket ("tcp4", "tcp6", "udp4", "udp6"), the address it binds ("[::]:80") and its
	// options, which it may change; an error fails the Listen. It stands in for
	// net.ListenConfig.Control (see SocketOptions).
	Control func(network, address string, o *SocketOptions) error
}

// Listen is Stack.Listen with the ListenConfig's socket options.
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	l, err := lc.Stack.listenTCP(ctx, network, address, lc)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// ListenPacket is Stack.ListenPacket with the ListenConfig's socket options (UDP only).
func (lc *ListenConfig) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	c, err := lc.Stack.listenUDP(ctx, network, address, lc)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// control returns the options of a socket about to bind laddr: the defaults, the
// ListenConfig's fields, then its Control hook. lc may be nil (Stack.Listen).
func (lc *ListenConfig) control(network string, v6 bool, laddr string) (SocketOptions, error) {
	o := defaultSocketOptions(network, true)
	if lc == nil {
		return o, nil
	}
	if network[:3] == "udp" {
		o.ReuseAddr = lc.ReuseAddr
	}
	o.ReusePort = lc.ReusePort
	if lc.Control == nil {
		return o, nil
	}
	fam := network[:3] + "4"
	if v6 {
		fam = network[:3] + "6"
	}
	err := lc.Control(fam, laddr, &o)
	return o, err
}

// keepAlive applies the keep-alive settings to an accepted connection, with
// net.ListenConfig's rules.
func (lc *ListenConfig) keepAlive(c *TCPConn) {
	d := Dialer{KeepAlive: lc.KeepAlive, KeepAliveConfig: lc.KeepAliveConfig}
	d.keepAlive(c)
}
