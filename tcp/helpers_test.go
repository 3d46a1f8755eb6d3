package tcp

import (
	"net"

	"github.com/berthnet/berth/ports"
)

func portsOpts() ports.BindOptions { return ports.BindOptions{Privileged: true} }

type net_Conn = net.Conn

// tconn adapts a *Conn to net.Conn for nettest (the root package has the real wrapper).
type tconn struct{ *Conn }

func wrapConn(c *Conn) net.Conn { return tconn{c} }

func (c tconn) LocalAddr() net.Addr  { return net.TCPAddrFromAddrPort(c.Conn.LocalAddr()) }
func (c tconn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.Conn.RemoteAddr()) }
