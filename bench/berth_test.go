package bench

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/bench/internal/gv"
	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/vnet"
)

// berthKind is berth: two stacks joined by link/pipe (vnet.Pair), and its ports.Manager.
var berthKind = kind{
	name:    "berth",
	newPair: newBerthPair,
	newPicker: func(low, high uint16, occupied []uint16) (connectFunc, error) {
		m := ports.NewManager(ports.TCP, ports.Config{
			LocalPortRange: ports.Range{Low: ports.Port(low), High: ports.Port(high)},
		})
		local := gv.ClientAddr
		for _, p := range occupied {
			if _, err := m.Bind(netip.AddrPortFrom(local, p), ports.BindOptions{}, p); err != nil {
				return nil, err
			}
		}
		remote := serverAddrPort()
		owner := new(int)
		return func() (uint16, func(), error) {
			b, err := m.Connect(nil, local, remote, owner)
			if err != nil {
				return 0, nil, err
			}
			return b.Local().Port(), b.Release, nil
		}, nil
	},
}

func init() { kinds = append([]kind{berthKind}, kinds...) }

// berthPair is two berth stacks joined by a link/pipe (vnet.Pair): the client has
// 10.0.0.1, the server 10.0.0.2.
type berthPair struct {
	client, server *berth.Stack
}

func newBerthPair(mtu int) (pair, error) {
	a, b, err := vnet.Pair(vnet.WithMTU(mtu))
	if err != nil {
		return nil, err
	}
	return &berthPair{client: a, server: b}, nil
}

func serverAddr(port uint16) string {
	return netip.AddrPortFrom(vnet.PairB4.Addr(), port).String()
}

func (p *berthPair) Listen(port uint16) (net.Listener, error) {
	return p.server.Listen(context.Background(), "tcp4", ":"+strconv.Itoa(int(port)))
}

func (p *berthPair) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	return p.client.DialContext(ctx, "tcp4", serverAddr(port))
}

func (p *berthPair) ListenPacket(port uint16) (net.PacketConn, error) {
	return p.server.ListenPacket(context.Background(), "udp4", ":"+strconv.Itoa(int(port)))
}

func (p *berthPair) DialUDP(port uint16) (net.Conn, error) {
	return p.client.DialContext(context.Background(), "udp4", serverAddr(port))
}

// Close closes both stacks. Closing the client closes the pipe they share, so the server's
// Close reports net.ErrClosed for its link: expected here, not a failure.
func (p *berthPair) Close() error {
	errC, errS := p.client.Close(), p.server.Close()
	if errors.Is(errS, net.ErrClosed) {
		errS = nil
	}
	return errors.Join(errC, errS)
}
