package main

// pasta's -T and -U (pasta(1): "port forwarding from target namespace to init
// namespace"): a connection or datagram to 127.0.0.1:PORT or [::1]:PORT in the
// namespace reaches the host's same loopback address at the mapped port. As pasta's
// splice path does, berth keeps both loopback addresses: the host-side socket is bound
// to the client's source address (for UDP its source port too, when free), and goes to
// the address the client sent to. The namespace's sockets come from nsListen
// (pasta_nslisten.go); berth relays between them and its own host sockets.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berthnet/berth/forward/portspec"
)

// nsUDPIdle is how long a -U flow lives without a datagram either way: pasta's
// default for UDP flows that have seen replies (udp.c: UDP_TIMEOUT_STREAM_DEFAULT).
const nsUDPIdle = 120 * time.Second

// nsMapping is one namespace port forwarded to the host's loopback.
type nsMapping struct {
	Proto    string // "tcp" or "udp"
	NSPort   uint16 // the port on the namespace's loopback
	HostPort uint16 // the port on the host's loopback
}

// String is how pesto shows the forward: "ns NSPORT:HOSTPORT/PROTO".
func (m nsMapping) String() string {
	return "ns " + strconv.Itoa(int(m.NSPort)) + ":" + strconv.Itoa(int(m.HostPort)) + "/" + m.Proto
}

// nsForwarder holds the -T and -U forwards of one namespace.
type nsForwarder struct {
	netns, userns string
	ipv4Only      bool

	mu     sync.Mutex
	fwds   map[nsKey]*nsFwd
	conns  map[io.Closer]struct{} // relayed connections and UDP flows' sockets
	closed bool
	wg     sync.WaitGroup
}

// nsKey names a forward by what it listens on; one namespace port has one target.
type nsKey struct {
	proto string
	port  uint16
}

type nsFwd struct {
	m         nsMapping
	listeners []io.Closer // one per family
}

func newNSForwarder(netns, userns string, ipv4Only bool) *nsForwarder {
	return &nsForwarder{netns: netns, userns: userns, ipv4Only: ipv4Only,
		fwds: map[nsKey]*nsFwd{}, conns: map[io.Closer]struct{}{}}
}

// Add starts the forwards ms (one helper in the namespace for all of them) and returns
// each one's error: nil when it listens on 127.0.0.1 (and ::1, where the namespace
// has IPv6 and berth is not --ipv4-only).
func (f *nsForwarder) Add(ms []nsMapping) []error {
	errs := make([]error, len(ms))
	var socks []nsSock
	var owner []int // index into ms of each sock
	f.mu.Lock()
	closed := f.closed
	for i, m := range ms {
		switch {
		case closed:
			errs[i] = net.ErrClosed
		case m.Proto != "tcp" && m.Proto != "udp" || m.NSPort == 0 || m.HostPort == 0:
			errs[i] = fmt.Errorf("bad forward %v", m)
		case f.fwds[nsKey{m.Proto, m.NSPort}] != nil || slices.ContainsFunc(ms[:i], func(o nsMapping) bool {
			return o.Proto == m.Proto && o.NSPort == m.NSPort
		}):
			errs[i] = fmt.Errorf("%s: already forwarded", m)
		default:
			socks = append(socks, nsSock{proto: m.Proto, port: m.NSPort})
			owner = append(owner, i)
			if !f.ipv4Only {
				socks = append(socks, nsSock{proto: m.Proto, v6: true, port: m.NSPort})
				owner = append(owner, i)
			}
		}
	}
	f.mu.Unlock()
	if len(socks) == 0 {
		return errs
	}
	files, ferrs, err := nsListen(f.netns, f.userns, socks)
	if err != nil {
		for _, i := range owner {
			errs[i] = err
		}
		return errs
	}
	got := make([][]*os.File, len(ms))
	for j, i := range owner {
		switch {
		case ferrs[j] == nil:
			got[i] = append(got[i], files[j])
		case errors.Is(ferrs[j], errNoFamily):
			// No ::1 in the namespace: IPv4 alone, as pasta without IPv6.
		case errs[i] == nil:
			errs[i] = fmt.Errorf("%s: %v", ms[i], ferrs[j])
		}
	}
	for _, i := range owner {
		if got[i] == nil && errs[i] == nil {
			errs[i] = fmt.Errorf("%s: the namespace has no loopback address", ms[i])
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range owner {
		if got[i] == nil {
			continue
		}
		if errs[i] != nil || f.closed {
			for _, fl := range got[i] {
				fl.Close()
			}
			if errs[i] == nil {
				errs[i] = net.ErrClosed
			}
			got[i] = nil
			continue
		}
		fw := &nsFwd{m: ms[i]}
		for _, fl := range got[i] {
			if c, err := f.serve(ms[i], fl); err == nil {
				fw.listeners = append(fw.listeners, c)
			} else if errs[i] == nil {
				errs[i] = err
			}
		}
		if errs[i] != nil {
			for _, c := range fw.listeners {
				c.Close()
			}
		} else {
			f.fwds[nsKey{ms[i].Proto, ms[i].NSPort}] = fw
		}
		got[i] = nil
	}
	return errs
}

// serve starts relaying from the namespace's socket fl (closed here) for m; f.mu is held.
func (f *nsForwarder) serve(m nsMapping, fl *os.File) (io.Closer, error) {
	defer fl.Close()
	if m.Proto == "tcp" {
		ln, err := net.FileListener(fl)
		if err != nil {
			return nil, err
		}
		f.wg.Add(1)
		go f.acceptTCP(ln.(*net.TCPListener), m.HostPort)
		return ln, nil
	}
	pc, err := net.FilePacketConn(fl)
	if err != nil {
		return nil, err
	}
	f.wg.Add(1)
	go f.relayUDP(pc.(*net.UDPConn), m.HostPort)
	return pc, nil
}

// Remove stops the forward m; connections it relays go on until they end.
func (f *nsForwarder) Remove(m nsMapping) error {
	f.mu.Lock()
	k := nsKey{m.Proto, m.NSPort}
	fw := f.fwds[k]
	if fw == nil || fw.m != m {
		f.mu.Unlock()
		return fmt.Errorf("%s: not forwarded", m)
	}
	delete(f.fwds, k)
	f.mu.Unlock()
	for _, c := range fw.listeners {
		c.Close()
	}
	return nil
}

// Ports lists the forwards.
func (f *nsForwarder) Ports() []nsMapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []nsMapping
	for _, fw := range f.fwds {
		out = append(out, fw.m)
	}
	return out
}

// Close ends every forward and every connection and flow they relay, and waits for
// the relaying goroutines.
func (f *nsForwarder) Close() {
	f.mu.Lock()
	f.closed = true
	var cs []io.Closer
	for _, fw := range f.fwds {
		cs = append(cs, fw.listeners...)
	}
	for c := range f.conns {
		cs = append(cs, c)
	}
	f.fwds = map[nsKey]*nsFwd{}
	f.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	f.wg.Wait()
}

// track registers c to be closed by Close; false when Close has run (c is closed then).
func (f *nsForwarder) track(cs ...io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *nsForwarder) untrack(cs ...io.Closer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		delete(f.conns, c)
		c.Close()
	}
}

func (f *nsForwarder) acceptTCP(ln *net.TCPListener, hostPort uint16) {
	defer f.wg.Done()
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: the client waits in the backlog meanwhile.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !f.track(c) {
			continue
		}
		f.wg.Add(1)
		go f.spliceTCP(c, hostPort)
	}
}

// spliceTCP connects the namespace's connection c to the host's loopback and copies
// both ways, passing each side's FIN on (RFC 9293 §3.6: a half-closed connection
// still carries data the other way).
func (f *nsForwarder) spliceTCP(c *net.TCPConn, hostPort uint16) {
	defer f.wg.Done()
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	d := net.Dialer{Timeout: 10 * time.Second,
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(peer.Addr(), 0))}
	hc, err := d.Dial("tcp", netip.AddrPortFrom(local.Addr(), hostPort).String())
	if err != nil {
		// The host refuses: so does the namespace's side, with a reset (SO_LINGER 0).
		c.SetLinger(0)
		f.untrack(c)
		return
	}
	h := hc.(*net.TCPConn)
	if !f.track(h) {
		f.untrack(c)
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	copyHalf := func(dst, src *net.TCPConn) {
		if _, err := io.Copy(dst, src); err != nil {
			// A reset or Close: end both sides.
			dst.Close()
			src.Close()
			return
		}
		dst.CloseWrite()
	}
	go func() { copyHalf(h, c); wg.Done() }()
	copyHalf(c, h)
	wg.Wait()
	f.untrack(c, h)
}

// udpFlow is one namespace client's datagrams to the host: its host socket.
type udpFlow struct {
	host *net.UDPConn
	last atomic.Int64 // unix nanoseconds of the last datagram either way
}

// relayUDP receives the namespace's datagrams on pc and sends each from the flow's
// host socket to the host's loopback; replies go back from pc to the client.
func (f *nsForwarder) relayUDP(pc *net.UDPConn, hostPort uint16) {
	defer f.wg.Done()
	local := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	target := net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr(), hostPort))
	var mu sync.Mutex
	flows := map[netip.AddrPort]*udpFlow{}
	var flowWG sync.WaitGroup
	defer func() {
		mu.Lock()
		for _, fl := range flows {
			f.untrack(fl.host)
		}
		mu.Unlock()
		flowWG.Wait()
	}()
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // an ICMP error reported on the socket
		}
		mu.Lock()
		fl := flows[from]
		mu.Unlock()
		if fl == nil {
			h, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(from), target)
			if err != nil {
				// The client's port is taken on the host: another one will do.
				h, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from.Addr(), 0)), target)
			}
			if err != nil || !f.track(h) {
				continue
			}
			fl = &udpFlow{host: h}
			fl.last.Store(time.Now().UnixNano())
			mu.Lock()
			flows[from] = fl
			mu.Unlock()
			flowWG.Add(1)
			go func() {
				defer flowWG.Done()
				f.udpReplies(pc, fl, from)
				mu.Lock()
				if flows[from] == fl {
					delete(flows, from)
				}
				mu.Unlock()
				f.untrack(fl.host)
			}()
		}
		fl.last.Store(time.Now().UnixNano())
		fl.host.Write(buf[:n])
	}
}

// udpReplies sends the host's replies on fl back to the client until the flow has
// been idle for nsUDPIdle or its socket closes.
func (f *nsForwarder) udpReplies(pc *net.UDPConn, fl *udpFlow, client netip.AddrPort) {
	buf := make([]byte, 65536)
	for {
		fl.host.SetReadDeadline(time.Unix(0, fl.last.Load()).Add(nsUDPIdle))
		n, err := fl.host.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if time.Since(time.Unix(0, fl.last.Load())) >= nsUDPIdle {
					return
				}
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNREFUSED from an ICMP port unreachable: the flow stays
		}
		fl.last.Store(time.Now().UnixNano())
		pc.WriteToUDPAddrPort(buf[:n], client)
	}
}

// pastaNSSpecs reads -T (proto tcp) or -U (udp) specifications: the forwards they name,
// the auto ones (scanned by nsAutoForward), and notes on what berth leaves out.
// As pasta, a -T or -U specification names no listening address: the namespace's
// loopback is where they listen.
func pastaNSSpecs(specs []string, proto string) (ms []nsMapping, auto []portspec.Spec, notes []string, err error) {
	flag := map[string]string{"tcp": "-T", "udp": "-U"}[proto]
	for _, s := range specs {
		sp, err := portspec.Parse(s)
		if err != nil {
			return nil, nil, nil, err
		}
		switch {
		case sp.None:
			continue
		case sp.Addr.IsValid() || sp.Iface != "":
			return nil, nil, nil, fmt.Errorf("%s %s: listening address not allowed (the namespace's loopback listens)", flag, s)
		case sp.AllTo.IsValid() || slices.ContainsFunc(sp.Include, func(r portspec.Rule) bool { return r.ToAddr.IsValid() }):
			return nil, nil, nil, fmt.Errorf("%s %s: berth forwards to the host's loopback only", flag, s)
		case sp.Auto:
			auto = append(auto, sp)
			continue
		case sp.All:
			notes = append(notes, fmt.Sprintf("%s %s: berth forwards the ports named, or auto's, not all", flag, s))
			sp.All = false
		}
		for _, f := range sp.Forwards(portspec.Ephemeral) {
			ms = append(ms, nsMapping{Proto: proto, NSPort: f.Listen, HostPort: f.Target})
		}
	}
	return ms, auto, notes, nil
}
