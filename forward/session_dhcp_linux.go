//go:build linux

package forward

import "github.com/berthnet/berth/link/ether"

// sessionDHCP is the DHCP server of a session's Ethernet link, or nil while link/ether
// has none.
func sessionDHCP(cfg SessionConfig, fc Config) *ether.DHCPConfig { return nil }
