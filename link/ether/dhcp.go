package ether

import "github.com/berthnet/berth/wire"

// DHCPConfig configures the DHCPv4 server.
type DHCPConfig struct{}

type dhcpServer struct{}

func isDHCPToServer(p []byte) bool                      { return false }
func (e *Endpoint) dhcpInput(h wire.Ethernet, p []byte) {}
