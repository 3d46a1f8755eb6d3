package ether

import (
	"net/netip"

	"github.com/berthnet/berth/wire"
)

type dhcpServer struct{}

func isDHCPToServer(p []byte) bool                      { return false }
func (e *Endpoint) dhcpInput(h wire.Ethernet, p []byte) {}
func isND(p []byte) bool                                { return false }
func (e *Endpoint) ndInput(h wire.Ethernet, p []byte)   {}
func (e *Endpoint) sendNS(a netip.Addr, dst wire.MAC)   {}
func (e *Endpoint) sendUnsolicitedNA(a netip.Addr)      {}
func (e *Endpoint) startDAD()                           {}
func (e *Endpoint) stopTimersLocked()                   {}
