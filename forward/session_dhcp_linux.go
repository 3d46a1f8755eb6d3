//go:build linux

package forward

import (
	"net/netip"

	"github.com/berthnet/berth/link/ether"
)

// sessionDHCP is the DHCP server of a session's Ethernet link: one lease, as pasta
// offers, of the namespace's (or VM's) address, so that a guest configured by DHCP has
// the address the forwarder expects; the gateway as router, the DNS address as name
// server, the link's MTU (option 26). The server is berth's own address (10.0.2.1).
func sessionDHCP(cfg SessionConfig, fc Config) *ether.DHCPConfig {
	return &ether.DHCPConfig{
		Start:  fc.NSAddr4,
		End:    fc.NSAddr4,
		Router: fc.Gateway4,
		DNS:    []netip.Addr{fc.DNS4},
		MTU:    cfg.MTU,
	}
}
