package gv

import (
	"net/netip"

	cryptorand "gvisor.dev/gvisor/pkg/rand"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
)

// PortPicker reproduces what gVisor's TCP connect does to choose a local port, on a bare
// ports.PortManager: PickEphemeralPort (RFC 6056 Algorithm 1: random start, linear probe)
// with a tester that reserves (local addr, port, remote addr:port), exactly the tester in
// tcp.Endpoint.connect minus the TIME-WAIT reuse branch and the transport demuxer
// registration (a separate table in gVisor; berth's ports.Manager.Connect does both, so the
// berth figure includes work this one leaves out).
type PortPicker struct {
	pm     *ports.PortManager
	rng    cryptorand.RNG
	local  tcpip.Address
	remote tcpip.FullAddress
	nets   []tcpip.NetworkProtocolNumber
}

// NewPortPicker returns a picker over the ephemeral range [low, high] with the ports in
// occupied bound (exclusively, wildcard remote) on local.
func NewPortPicker(low, high uint16, local netip.Addr, remote netip.AddrPort, occupied []uint16) (*PortPicker, error) {
	pm := ports.NewPortManager()
	if err := pm.SetPortRange(low, high); err != nil {
		return nil, errorOf(err)
	}
	p := &PortPicker{
		pm:     pm,
		rng:    cryptorand.RNGFrom(cryptorand.Reader),
		local:  tcpip.AddrFromSlice(local.AsSlice()),
		remote: tcpip.FullAddress{Addr: tcpip.AddrFromSlice(remote.Addr().AsSlice()), Port: remote.Port()},
		nets:   []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber},
	}
	for _, port := range occupied {
		res := ports.Reservation{Networks: p.nets, Transport: header.TCPProtocolNumber, Addr: p.local, Port: port}
		if _, err := pm.ReservePort(p.rng, res, nil); err != nil {
			return nil, errorOf(err)
		}
	}
	return p, nil
}

// Connect picks and reserves a local port for a connection to the remote, as connect(2)
// without bind does, and returns the reservation to release.
func (p *PortPicker) Connect() (ports.Reservation, error) {
	res := ports.Reservation{Networks: p.nets, Transport: header.TCPProtocolNumber, Addr: p.local, Dest: p.remote}
	port, err := p.pm.PickEphemeralPort(p.rng, func(port uint16) (bool, tcpip.Error) {
		r := res
		r.Port = port
		if _, err := p.pm.ReservePort(p.rng, r, nil); err != nil {
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return res, errorOf(err)
	}
	res.Port = port
	return res, nil
}

// Release frees a reservation made by Connect.
func (p *PortPicker) Release(res ports.Reservation) { p.pm.ReleasePort(res) }

type tcpipError struct{ e tcpip.Error }

func (e tcpipError) Error() string { return e.e.String() }

func errorOf(e tcpip.Error) error { return tcpipError{e} }
