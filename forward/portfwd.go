package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// PortMapping forwards a host port into the namespace: [HOSTIP:]HOSTPORT:NSPORT[/tcp|/udp].
type PortMapping struct {
	Proto    string     // "tcp" or "udp"
	HostAddr netip.Addr // zero: every host address (IPv4 and IPv6)
	HostPort uint16
	NSPort   uint16
}

// String formats m as ParsePortMapping reads it.
func (m PortMapping) String() string {
	s := strconv.Itoa(int(m.HostPort)) + ":" + strconv.Itoa(int(m.NSPort)) + "/" + m.Proto
	if m.HostAddr.IsValid() {
		if m.HostAddr.Is6() {
			return "[" + m.HostAddr.String() + "]:" + s
		}
		return m.HostAddr.String() + ":" + s
	}
	return s
}

// ParsePortMapping reads [HOSTIP:]HOSTPORT:NSPORT[/tcp|/udp] (an IPv6 HOSTIP in brackets);
// the protocol defaults to tcp.
func ParsePortMapping(s string) (PortMapping, error) {
	var m PortMapping
	bad := func(why string) (PortMapping, error) {
		return PortMapping{}, fmt.Errorf("port mapping %q: %s", s, why)
	}
	rest := s
	m.Proto = "tcp"
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		m.Proto = rest[i+1:]
		rest = rest[:i]
		if m.Proto != "tcp" && m.Proto != "udp" {
			return bad("protocol must be tcp or udp")
		}
	}
	if strings.HasPrefix(rest, "[") {
		i := strings.Index(rest, "]:")
		if i < 0 {
			return bad("unclosed [")
		}
		a, err := netip.ParseAddr(rest[1:i])
		if err != nil || !a.Is6() {
			return bad("bad IPv6 host address")
		}
		m.HostAddr = a
		rest = rest[i+2:]
	}
	parts := strings.Split(rest, ":")
	switch len(parts) {
	case 2:
	case 3:
		if m.HostAddr.IsValid() {
			return bad("two host addresses")
		}
		a, err := netip.ParseAddr(parts[0])
		if err != nil {
			return bad("bad host address")
		}
		m.HostAddr = a.Unmap()
		parts = parts[1:]
	default:
		return bad("want [HOSTIP:]HOSTPORT:NSPORT[/tcp|/udp]")
	}
	hp, err1 := strconv.ParseUint(parts[0], 10, 16)
	np, err2 := strconv.ParseUint(parts[1], 10, 16)
	if err1 != nil || err2 != nil || hp == 0 || np == 0 {
		return bad("ports must be 1-65535")
	}
	m.HostPort, m.NSPort = uint16(hp), uint16(np)
	return m, nil
}

// portForward is one active mapping: its host sockets and, for UDP, its clients.
type portForward struct {
	f       *Forwarder
	m       PortMapping
	ln      net.Listener
	pc      net.PacketConn
	mu      sync.Mutex
	clients map[string]*udpFlow
	once    sync.Once
}

func (pf *portForward) close() {
	pf.once.Do(func() {
		if pf.ln != nil {
			pf.ln.Close()
		}
		if pf.pc != nil {
			pf.pc.Close()
		}
	})
}

func (pf *portForward) dropClient(u *udpFlow) {
	pf.mu.Lock()
	delete(pf.clients, u.client.String())
	pf.mu.Unlock()
}

// AddPort starts forwarding m. A host port already in use fails with an error that names
// it (wrapping syscall.EADDRINUSE).
func (f *Forwarder) AddPort(m PortMapping) error {
	if m.Proto != "tcp" && m.Proto != "udp" || m.HostPort == 0 || m.NSPort == 0 {
		return fmt.Errorf("forward: bad port mapping %v", m)
	}
	key := m.String()
	f.mu.Lock()
	_, dup := f.fwds[key]
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return net.ErrClosed
	}
	if dup {
		return fmt.Errorf("forward: %s: already forwarded", key)
	}
	addr := ":" + strconv.Itoa(int(m.HostPort))
	if m.HostAddr.IsValid() {
		addr = net.JoinHostPort(m.HostAddr.String(), strconv.Itoa(int(m.HostPort)))
	}
	pf := &portForward{f: f, m: m, clients: map[string]*udpFlow{}}
	var err error
	if m.Proto == "tcp" {
		pf.ln, err = f.cfg.Listen("tcp", addr)
	} else {
		pf.pc, err = f.cfg.ListenPacket("udp", addr)
	}
	if err != nil {
		return fmt.Errorf("forward: host port %s %s: %w", m.Proto, addr, err)
	}
	f.mu.Lock()
	if _, dup := f.fwds[key]; dup || f.closed {
		f.mu.Unlock()
		pf.close()
		return fmt.Errorf("forward: %s: already forwarded", key)
	}
	f.fwds[key] = pf
	f.wg.Add(1)
	f.mu.Unlock()
	if m.Proto == "tcp" {
		go pf.acceptTCP()
	} else {
		go pf.readUDP()
	}
	return nil
}

// RemovePort stops forwarding m; connections already forwarded go on.
func (f *Forwarder) RemovePort(m PortMapping) error {
	key := m.String()
	f.mu.Lock()
	pf := f.fwds[key]
	delete(f.fwds, key)
	f.mu.Unlock()
	if pf == nil {
		return fmt.Errorf("forward: %s: not forwarded", key)
	}
	pf.close()
	return nil
}

// Ports lists the active port mappings.
func (f *Forwarder) Ports() []PortMapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]PortMapping, 0, len(f.fwds))
	for _, pf := range f.fwds {
		out = append(out, pf.m)
	}
	return out
}

// nsTarget is the namespace's endpoint for a client of family like a.
func (f *Forwarder) nsTarget(a netip.Addr, port uint16) netip.AddrPort {
	if a.Unmap().Is4() {
		return netip.AddrPortFrom(f.cfg.NSAddr4, port)
	}
	return netip.AddrPortFrom(f.cfg.NSAddr6, port)
}

func (pf *portForward) acceptTCP() {
	f := pf.f
	defer f.wg.Done()
	for {
		hc, err := pf.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		client, err := netip.ParseAddrPort(hc.RemoteAddr().String())
		if err != nil || (client.Addr().Unmap().Is6() && f.cfg.NoIPv6) || !f.takeTCPFlow(&f.c.inDrops) {
			hc.Close()
			continue
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			hc.Close()
			f.tcpFlows--
			return
		}
		f.wg.Add(1)
		f.mu.Unlock()
		go func() {
			defer f.wg.Done()
			src := f.nsSource(client)
			dst := f.nsTarget(src.Addr(), pf.m.NSPort)
			ctx, cancel := context.WithTimeout(f.ctx, f.cfg.DialTimeout)
			c, err := f.tcp.DialTransparent(ctx, src, dst)
			cancel()
			if err != nil {
				// Refused inside the namespace: refuse the host client the same way.
				if tc, ok := hc.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				hc.Close()
				f.endTCPFlow()
				return
			}
			f.c.tcpIn.Add(1)
			f.splice(c, hc)
		}()
	}
}

func (pf *portForward) readUDP() {
	f := pf.f
	defer f.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := pf.pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		client, err := netip.ParseAddrPort(from.String())
		if err != nil || (client.Addr().Unmap().Is6() && f.cfg.NoIPv6) {
			continue
		}
		pf.mu.Lock()
		u := pf.clients[from.String()]
		pf.mu.Unlock()
		if u == nil {
			src := f.nsSource(client)
			u = &udpFlow{f: f, nsSide: f.nsTarget(src.Addr(), pf.m.NSPort), peer: src, pc: pf.pc,
				client: from, owner: pf}
			f.mu.Lock()
			if f.closed {
				f.mu.Unlock()
				return
			}
			victim := f.udpRoomLocked()
			f.udpRev[flowKey{u.nsSide, u.peer}] = u
			f.mu.Unlock()
			f.evicted(victim)
			pf.mu.Lock()
			pf.clients[from.String()] = u
			pf.mu.Unlock()
			f.c.udpIn.Add(1)
		}
		u.touch()
		if f.sendUDP(u.peer, u.nsSide, buf[:n]) == nil {
			f.c.toNS.Add(uint64(n))
		}
	}
}
