//go:build linux

package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

var (
	// berthMAC is the address the tests answer ARP and NDP with; kernelMAC is set on the
	// kernel's side of the TAP device. Both locally administered (IEEE 802 bit 1).
	berthMAC  = net.HardwareAddr{0x02, 0xbe, 0x47, 0x00, 0x00, 0x02}
	kernelMAC = net.HardwareAddr{0x02, 0xbe, 0x47, 0x00, 0x00, 0x01}
)

// setupTAPNS makes a fresh network namespace and opens a TAP device inside it with
// Options.NetNS (the handover path), then configures the kernel's side: kernelMAC,
// kernelAddr/24, kernel6/64, up.
func setupTAPNS(t testing.TB, opts Options) (*Endpoint, string, string) {
	t.Helper()
	testenv.NeedRoot(t)
	_, err := exec.LookPath("ip")
	testenv.NeedCommand(t, "ip", err)
	n := seq.Add(1)
	ns := fmt.Sprintf("tap-tun-%d-%d", os.Getpid(), n)
	dev := fmt.Sprintf("tap%d", n)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	opts.NetNS = "/run/netns/" + ns
	e, err := OpenTAP(dev, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if e.Name() != dev || !e.IsTAP() {
		t.Fatalf("Name = %q, IsTAP %v", e.Name(), e.IsTAP())
	}
	// The device is in the namespace, not here.
	if _, err := net.InterfaceByName(dev); err == nil {
		t.Fatalf("%s appeared in the test's own namespace", dev)
	}
	run(t, "ip", "-n", ns, "link", "set", dev, "address", kernelMAC.String())
	run(t, "ip", "-n", ns, "addr", "add", kernelAddr.String()+"/24", "dev", dev)
	run(t, "ip", "-n", ns, "addr", "add", kernel6.String()+"/64", "dev", dev, "nodad")
	run(t, "ip", "-n", ns, "link", "set", dev, "up")
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return e, ns, dev
}

// ethFrame puts an Ethernet II header in front of payload.
func ethFrame(dst, src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	f := make([]byte, ethHdrLen+len(payload))
	copy(f, dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], etherType)
	copy(f[ethHdrLen:], payload)
	return f
}

// answer is the tests' stand-in for the Ethernet layer: it returns the frame that answers
// f — an ARP reply (RFC 826) for berthAddr, a neighbour advertisement (RFC 4861 §7.2.4)
// for berth6, an echo reply — or nil.
func answer(f []byte) []byte {
	if len(f) < ethHdrLen {
		return nil
	}
	src := net.HardwareAddr(f[6:12])
	p := f[ethHdrLen:]
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0806:
		// htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, op 1 (request), for berthAddr.
		if len(p) < 28 || binary.BigEndian.Uint16(p[0:]) != 1 || binary.BigEndian.Uint16(p[2:]) != 0x0800 ||
			p[4] != 6 || p[5] != 4 || binary.BigEndian.Uint16(p[6:]) != 1 || netip.AddrFrom4([4]byte(p[24:28])) != berthAddr {
			return nil
		}
		r := make([]byte, 28)
		copy(r, p[:6])
		binary.BigEndian.PutUint16(r[6:], 2)
		copy(r[8:], berthMAC)
		copy(r[14:], p[24:28])
		copy(r[18:], p[8:18]) // the asker's hardware and protocol addresses
		return ethFrame(src, berthMAC, 0x0806, r)
	case 0x0800:
		if r := echoReply(p); r != nil {
			return ethFrame(src, berthMAC, 0x0800, r)
		}
	case 0x86dd:
		if r := echoReply6(p); r != nil {
			return ethFrame(src, berthMAC, 0x86dd, r)
		}
		s, _, proto, icmp, ok := parseIP(p)
		if !ok || proto != wire.ProtoICMPv6 || len(icmp) < 24 || icmp[0] != 135 || netip.AddrFrom16([16]byte(icmp[8:24])) != berth6 {
			return nil
		}
		na := make([]byte, 32)
		na[0] = 136
		na[4] = 0x60 // solicited, override
		copy(na[8:], icmp[8:24])
		na[24], na[25] = 2, 1 // target link-layer address option, 8 bytes
		copy(na[26:], berthMAC)
		dst := s
		if !s.IsValid() || s.IsUnspecified() {
			dst = netip.MustParseAddr("ff02::1")
		}
		binary.BigEndian.PutUint16(na[2:], ^wire.Checksum(na, wire.PseudoHeaderChecksum(wire.ProtoICMPv6, berth6, dst, len(na))))
		ip := buildIP(berth6, dst, wire.ProtoICMPv6, na)
		ip[7] = 255 // RFC 4861 §7.1.2: hop limit 255
		return ethFrame(src, berthMAC, 0x86dd, ip)
	}
	return nil
}

// attachAnswerer answers ARP, NDP and pings on e; it counts the frames it answered.
func attachAnswerer(t testing.TB, e *Endpoint) *atomic.Int32 {
	var n atomic.Int32
	e.Attach(link.DispatcherFunc(func(frames [][]byte) {
		for _, f := range frames {
			if r := answer(f); r != nil {
				if _, err := e.WritePackets([][]byte{r}); err != nil {
					t.Errorf("WritePackets: %v", err)
				}
				n.Add(1)
			}
		}
	}))
	return &n
}

// TestTAPPing: the kernel in the namespace resolves berthAddr by ARP and berth6 by
// neighbour discovery over the TAP device and pings both; its neighbour table then holds
// berthMAC, REACHABLE.
func TestTAPPing(t *testing.T) {
	for _, vnet := range []bool{false, true} {
		t.Run(fmt.Sprintf("vnethdr=%v", vnet), func(t *testing.T) {
			e, ns, dev := setupTAPNS(t, Options{VnetHdr: vnet})
			n := attachAnswerer(t, e)
			for _, a := range []netip.Addr{berthAddr, berth6} {
				out, err := exec.Command("ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", a.String()).CombinedOutput()
				if err != nil {
					t.Fatalf("ping %v over TAP: %v\n%s", a, err, out)
				}
				out, err = exec.Command("ip", "-n", ns, "neigh", "show", a.String(), "dev", dev).CombinedOutput()
				if err != nil || !strings.Contains(string(out), berthMAC.String()) || !strings.Contains(string(out), "REACHABLE") {
					t.Fatalf("neighbour entry for %v: %v %q", a, err, out)
				}
			}
			if n.Load() < 6 { // ARP, NA, 2+2 echo replies
				t.Fatalf("answered %d frames", n.Load())
			}
			if s := e.Stats(); s.RxPackets < 6 || s.TxPackets < 6 || s.RxDropped != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestTAPOpenExisting: a TAP device that someone else made inside a namespace (as
// rootlesskit does with `ip tuntap add mode tap`) is opened there by name, with the
// virtio-net header and offloads; a TUN device of that name is refused.
func TestTAPOpenExisting(t *testing.T) {
	testenv.NeedRoot(t)
	ns := fmt.Sprintf("tap-exist-%d", os.Getpid())
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
	run(t, "ip", "-n", ns, "tuntap", "add", "dev", "tun0", "mode", "tun")
	run(t, "ip", "-n", ns, "link", "set", "tap0", "mtu", "9000")
	path := "/proc/self/ns/net" // replaced below: by path and by PID of a process inside
	cmd := exec.Command("ip", "netns", "exec", ns, "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for _, p := range []string{"/run/netns/" + ns, fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)} {
		path = p
		e, err := OpenTAP("tap0", Options{VnetHdr: true, NetNS: path})
		if err != nil {
			t.Fatalf("OpenTAP in %s: %v", path, err)
		}
		o := e.Offloads()
		if e.MTU() != 9000 || !o.Csum || !o.TSO4 || !o.TSO6 || e.GSOMaxSize() != maxPacket || e.MaxInboundSize() != maxPacket+ethHdrLen {
			t.Errorf("in %s: MTU %d, offloads %+v, GSOMaxSize %d, MaxInboundSize %d", path, e.MTU(), o, e.GSOMaxSize(), e.MaxInboundSize())
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if e, err := OpenTAP("tun0", Options{NetNS: path}); err == nil {
		e.Close()
		t.Fatal("OpenTAP attached to a TUN device")
	} else {
		t.Log(err)
	}
	if _, err := OpenTAP("tap0", Options{NetNS: "/nonexistent"}); err == nil {
		t.Fatal("OpenTAP in a namespace that does not exist succeeded")
	}
	run(t, "ip", "-n", ns, "link", "show", "tap0") // persistent: still there
}

// TestTAPFromFile: a TAP descriptor opened elsewhere is adopted; a TUN one is refused.
func TestTAPFromFile(t *testing.T) {
	testenv.NeedRoot(t)
	e, _, _ := setupTAPNS(t, Options{VnetHdr: true})
	// A descriptor of its own: an *os.File closes its descriptor when collected.
	fd, err := unix.Dup(e.fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "tap")
	defer f.Close()
	e2, err := TAPFromFile(f, Options{VnetHdr: true, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	if !e2.IsTAP() || e2.Name() != e.Name() {
		t.Fatalf("adopted %q, IsTAP %v", e2.Name(), e2.IsTAP())
	}
	e2.Close()
	if _, err := FromFile(f, Options{VnetHdr: true, MTU: 1500}); err == nil {
		t.Fatal("FromFile (TUN) adopted a TAP descriptor")
	}
}

// TestTAPBadFrames: frames the kernel sends on the TAP device through a packet socket
// that are longer than the endpoint's MTU (the device's MTU was raised after Open) are
// dropped and counted; a frame of just a header and an unknown EtherType is delivered,
// for the Ethernet layer to drop; writes over MTU+14 fail with EMSGSIZE.
func TestTAPBadFrames(t *testing.T) {
	e, ns, dev := setupTAPNS(t, Options{VnetHdr: true, MTU: 1500})
	var got atomic.Int32
	var sizes atomic.Value
	e.Attach(link.DispatcherFunc(func(frames [][]byte) {
		for _, f := range frames {
			if binary.BigEndian.Uint16(f[12:]) == 0x88b5 { // IEEE local experimental
				got.Add(1)
				sizes.Store(len(f))
			}
		}
	}))
	run(t, "ip", "-n", ns, "link", "set", dev, "mtu", "9000")
	inNetns(t, ns, func() {
		s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(s)
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			t.Error(err)
			return
		}
		to := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6}
		copy(to.Addr[:], berthMAC)
		for _, n := range []int{3000, 1500 + ethHdrLen + vlanTagLen + 1, ethHdrLen} {
			f := ethFrame(berthMAC, kernelMAC, 0x88b5, make([]byte, n-ethHdrLen))
			if err := unix.Sendto(s, f, 0, to); err != nil {
				t.Errorf("send %d-byte frame: %v", n, err)
			}
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got.Load() != 1 || sizes.Load() != ethHdrLen {
		t.Fatalf("delivered %d test frames (last %v bytes), want one of %d", got.Load(), sizes.Load(), ethHdrLen)
	}
	if s := e.Stats(); s.RxTooLong != 2 || s.RxDropped != 2 {
		t.Fatalf("stats %+v: want the two over-long frames dropped", s)
	}
	// Runts cannot come from a packet socket (the kernel wants a whole header): inbound
	// directly.
	if p := e.inbound(make([]byte, vnetHdrLen+ethHdrLen-1), false); p != nil || e.Stats().RxRunt != 1 {
		t.Fatalf("runt delivered, stats %+v", e.Stats())
	}
	if _, err := e.WritePackets([][]byte{make([]byte, 1500+ethHdrLen+1)}); err != unix.EMSGSIZE {
		t.Fatalf("writing a frame over MTU+14: %v", err)
	}
	if _, err := e.WritePackets([][]byte{ethFrame(kernelMAC, berthMAC, 0x88b5, make([]byte, 1500))}); err != nil {
		t.Fatalf("writing a frame of MTU+14: %v", err)
	}
}

// TestTAPUSO: a kernel socket in the namespace sends one UDP_SEGMENT write (a UDP
// super-segment, which the kernel hands to the TAP device whole with USO on); the
// endpoint delivers the datagrams it holds, each with valid IP and UDP checksums, in
// order, over IPv4 and IPv6.
func TestTAPUSO(t *testing.T) {
	e, ns, dev := setupTAPNS(t, Options{VnetHdr: true})
	if !e.Offloads().USO {
		t.Fatalf("offloads %+v: USO refused (Linux 6.2 has it)", e.Offloads())
	}
	run(t, "ip", "-n", ns, "neigh", "add", berthAddr.String(), "lladdr", berthMAC.String(), "dev", dev, "nud", "permanent")
	run(t, "ip", "-n", ns, "neigh", "add", berth6.String(), "lladdr", berthMAC.String(), "dev", dev, "nud", "permanent")
	got := make(chan []byte, 64)
	e.Attach(link.DispatcherFunc(func(frames [][]byte) {
		for _, f := range frames {
			if _, _, proto, _, ok := parseIP(f[ethHdrLen:]); ok && proto == wire.ProtoUDP {
				got <- append([]byte(nil), f...)
			}
		}
	}))
	const seg, total = 1000, 9500
	payload := make([]byte, total)
	for i := range payload {
		payload[i] = byte(i / seg)
	}
	for _, dst := range []netip.Addr{berthAddr, berth6} {
		inNetns(t, ns, func() {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			rc, _ := c.SyscallConn()
			rc.Control(func(fd uintptr) {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, seg); err != nil {
					t.Error(err)
				}
			})
			if _, err := c.Write(payload); err != nil {
				t.Error(err)
			}
		})
		for i := 0; i*seg < total; i++ {
			select {
			case f := <-got:
				src, d, _, l4, _ := parseIP(f[ethHdrLen:])
				u, err := wire.ParseUDP(l4)
				want := payload[i*seg : min(total, (i+1)*seg)]
				if err != nil || d != dst || !bytes.Equal(u.Payload(), want) || !u.VerifyChecksum(src, d) {
					t.Fatalf("datagram %d to %v: %v, %d bytes, checksum ok %v", i, dst, err, len(u.Payload()), err == nil && u.VerifyChecksum(src, d))
				}
				if dst.Is4() && wire.Checksum(f[ethHdrLen:ethHdrLen+20], 0) != 0xffff {
					t.Fatalf("datagram %d: IPv4 header checksum does not verify", i)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("datagram %d to %v did not arrive", i, dst)
			}
		}
	}
	if s := e.Stats(); s.RxGSO != 2 {
		t.Fatalf("stats %+v: want the two writes as super-segments", s)
	}
}

// TestTAPCloseInNetNS: a TAP device opened inside a namespace (Options.NetNS) closes as a
// TUN device does: the reader wakes, the goroutine count returns to where it was (the
// goroutine that entered the namespace is gone too), later writes fail with
// net.ErrClosed, and the non-persistent device disappears from the namespace.
func TestTAPCloseInNetNS(t *testing.T) {
	testenv.NeedRoot(t)
	ns := fmt.Sprintf("tap-close-%d", os.Getpid())
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	before := runtime.NumGoroutine()
	e, err := OpenTAP("tapc0", Options{VnetHdr: true, NetNS: "/run/netns/" + ns})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", ns, "link", "show", "tapc0")
	time.Sleep(20 * time.Millisecond) // let the reader block
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WritePackets([][]byte{make([]byte, 60)}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	for i := 0; runtime.NumGoroutine() > before; i++ {
		if i == 100 {
			t.Fatalf("goroutines %d -> %d", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if exec.Command("ip", "-n", ns, "link", "show", "tapc0").Run() == nil {
		t.Fatal("tapc0 still exists after Close")
	}
}
