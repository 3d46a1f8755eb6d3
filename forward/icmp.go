package forward

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"

	"github.com/berthnet/berth/wire"
)

// Echo requests go out through the host's unprivileged ICMP sockets (SOCK_DGRAM,
// IPPROTO_ICMP: net.ipv4.ping_group_range), one per namespace echo session; replies come
// back with the namespace's identifier restored (the host's socket picks its own).
const pingTimeout = 30 * time.Second

type pingKey struct {
	src, dst netip.Addr
	id       uint16
}

type pingFlow struct {
	f      *Forwarder
	k      pingKey
	pc     *icmp.PacketConn
	raw    bool     // a raw socket (root, ping sockets not allowed): replies are filtered here
	target net.Addr // *net.UDPAddr for a ping socket, *net.IPAddr for a raw one
	last   atomic.Int64
	once   sync.Once
}

func (p *pingFlow) close() { p.once.Do(func() { p.pc.Close() }) }

// handleICMP forwards echo requests; other messages (errors about our datagrams) end here.
func (f *Forwarder) handleICMP(proto uint8, src, dst netip.Addr, seg []byte) bool {
	if len(seg) < wire.ICMPv4HeaderLen {
		return true
	}
	v4 := proto == wire.ProtoICMPv4
	if (v4 && seg[0] != wire.ICMPv4EchoRequest) || (!v4 && seg[0] != wire.ICMPv6EchoRequest) {
		return true
	}
	if v4 && wire.Checksum(seg, 0) != 0xffff {
		return true
	}
	target, ok := f.hostTarget(netip.AddrPortFrom(dst, 0))
	if !ok {
		return true
	}
	k := pingKey{src, dst, uint16(seg[4])<<8 | uint16(seg[5])}
	f.mu.Lock()
	p := f.pings[k]
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return true
	}
	if p == nil {
		network, laddr := "udp4", "0.0.0.0"
		if !v4 {
			network, laddr = "udp6", "::"
		}
		p = &pingFlow{f: f, k: k, target: &net.UDPAddr{IP: target.Addr().AsSlice()}}
		pc, err := icmp.ListenPacket(network, laddr)
		if err != nil {
			// Ping sockets are not allowed for our group (net.ipv4.ping_group_range):
			// with CAP_NET_RAW a raw socket does the job.
			rawNet := "ip4:icmp"
			if !v4 {
				rawNet = "ip6:ipv6-icmp"
			}
			if pc, err = icmp.ListenPacket(rawNet, laddr); err != nil {
				f.c.pingFails.Add(1)
				return true
			}
			p.raw, p.target = true, &net.IPAddr{IP: target.Addr().AsSlice()}
		}
		p.pc = pc
		p.last.Store(time.Now().UnixNano())
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			pc.Close()
			return true
		}
		// MaxEchoSessions: the least recently used session makes room (a table this
		// small is scanned whole).
		var victim *pingFlow
		if len(f.pings) >= f.cfg.MaxEchoSessions {
			for _, q := range f.pings {
				if victim == nil || q.last.Load() < victim.last.Load() {
					victim = q
				}
			}
			delete(f.pings, victim.k)
		}
		f.pings[k] = p
		f.wg.Add(1)
		f.mu.Unlock()
		if victim != nil {
			victim.close()
			f.c.echoEvicted.Add(1)
		}
		go p.read(v4)
	}
	p.last.Store(time.Now().UnixNano())
	msg := make([]byte, len(seg))
	copy(msg, seg)
	// A ping socket sets identifier and checksum, the kernel completes ICMPv6 checksums
	// of raw sockets (RFC 3542 §3.1); a raw ICMPv4 message goes out as it came, its
	// checksum already valid.
	if !p.raw || !v4 {
		msg[2], msg[3] = 0, 0
	}
	if _, err := p.pc.WriteTo(msg, p.target); err != nil {
		f.c.pingFails.Add(1)
		return true
	}
	f.c.pings.Add(1)
	return true
}

// read passes echo replies back with the namespace's identifier.
func (p *pingFlow) read(v4 bool) {
	defer p.f.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := p.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if n < wire.ICMPv4HeaderLen {
			continue
		}
		if p.raw {
			// A raw socket sees every ICMP message of the host: keep the replies to ours.
			ia, ok := from.(*net.IPAddr)
			if !ok || !ia.IP.Equal(p.target.(*net.IPAddr).IP) || uint16(buf[4])<<8|uint16(buf[5]) != p.k.id {
				continue
			}
		}
		p.last.Store(time.Now().UnixNano())
		b := make([]byte, wire.NetworkHeadroom+n)
		m := b[wire.NetworkHeadroom:]
		copy(m, buf[:n])
		m[4], m[5] = byte(p.k.id>>8), byte(p.k.id)
		if v4 {
			if m[0] != wire.ICMPv4EchoReply {
				continue
			}
			wire.SetICMPv4Checksum(m)
			p.f.output(p.k.dst, p.k.src, wire.ProtoICMPv4, b)
		} else {
			if m[0] != wire.ICMPv6EchoReply {
				continue
			}
			wire.SetICMPv6Checksum(m, p.k.dst, p.k.src)
			p.f.output(p.k.dst, p.k.src, wire.ProtoICMPv6, b)
		}
	}
}

func (f *Forwarder) expirePings(now time.Time) {
	var dead []*pingFlow
	f.mu.Lock()
	for k, p := range f.pings {
		if now.Sub(time.Unix(0, p.last.Load())) > pingTimeout {
			delete(f.pings, k)
			dead = append(dead, p)
		}
	}
	f.mu.Unlock()
	for _, p := range dead {
		p.close()
	}
}
