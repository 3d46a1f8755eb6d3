//go:build linux

package forward

import (
	"fmt"
	"net/netip"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/link/tun"
)

// The Ethernet modes of a Session (SessionConfig):
//
//   - TAP: the namespace's device berth0 is a TAP device. berth's side is link/ether
//     over it: berth answers ARP and neighbour solicitations for its own addresses and
//     for the gateway and DNS addresses it plays (Config.Gateway4, DNS4, Gateway6, DNS6),
//     sends router advertisements for the namespace's /64 (SLAAC, with the MTU and RDNSS
//     options) and runs a DHCPv4 server that leases the namespace's address with the
//     gateway as router and the DNS address as name server. The namespace is configured
//     as in the TUN mode (ip(8): address, routes) unless DHCP is set.
//   - DHCP (with TAP): berth0 is only brought up; the namespace gets its IPv4 address from
//     berth's DHCP server (a DHCP client in it: udhcpc, dhclient) and its IPv6 address
//     and default route by SLAAC from berth's router advertisements, as a VM would.
//   - Frames: a frame device that is already open — link/vmsock for a virtual machine's
//     NIC (berth vm) — served as the TAP mode serves berth0; nothing is configured on
//     the far side, which configures itself by DHCP and SLAAC. NSPath is unused. The
//     Session takes the device over; if Start fails the caller closes it.
//
// The forwarding is the TUN mode's, unchanged: the Ethernet layer is only the link.

// openDevice opens the namespace's device, TUN or TAP, from a thread inside it.
func openDevice(cfg SessionConfig) (*tun.Endpoint, error) {
	opts := tun.Options{MTU: cfg.MTU, VnetHdr: true}
	if cfg.TAP {
		return tun.OpenTAP(DeviceName, opts)
	}
	return tun.Open(DeviceName, opts)
}

// tapCommands returns the ip(8) commands that configure the namespace: cmds (the TUN
// mode's), or with DHCP only those that bring the links up.
func tapCommands(cfg SessionConfig, cmds [][]string) [][]string {
	if !cfg.TAP || !cfg.DHCP {
		return cmds
	}
	return [][]string{{"link", "set", "lo", "up"}, {"link", "set", DeviceName, "up"}}
}

// SessionMAC is the MAC address berth has on a session's Ethernet link: locally
// administered (IEEE 802 §8.2), fixed so that a guest's neighbour table and a capture
// read the same across runs. 52:55:0a:00:02:02 is slirp4netns' gateway MAC.
var SessionMAC = [6]byte{0x52, 0x55, 0x0a, 0x00, 0x02, 0x02}

// newEther puts the Ethernet layer on the session's frame device ep, answering for the
// stack's addresses and the gateway and DNS addresses, with router advertisements and
// the DHCP server for the namespace's (or VM's) address.
func newEther(ep link.Endpoint, cfg SessionConfig, fc Config, s *berth.Stack) (*ether.Endpoint, error) {
	ec := ether.Config{
		MAC:     SessionMAC,
		Addrs:   []netip.Prefix{DefaultStackAddr4},
		Extra:   []netip.Addr{fc.Gateway4, fc.DNS4},
		Counter: s.Net().Counters().Counter,
		// The namespace's address is the only host on the link: berth's own addresses
		// are not contested there, and waiting a second for DAD would delay the
		// namespace's first IPv6 packets.
		NoDAD: true,
	}
	if !fc.NoIPv6 {
		ec.Addrs = append(ec.Addrs, DefaultStackAddr6)
		ec.Extra = append(ec.Extra, fc.Gateway6, fc.DNS6)
		ec.Router = &ether.Router{
			Prefixes: []netip.Prefix{DefaultNSAddr6.Masked()},
			MTU:      cfg.MTU,
			DNS:      []netip.Addr{fc.DNS6},
		}
	}
	ec.DHCP = sessionDHCP(cfg, fc)
	e, err := ether.New(ep, ec)
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	return e, nil
}
