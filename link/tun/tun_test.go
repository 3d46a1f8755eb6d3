//go:build linux

package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

var seq atomic.Int32

var (
	kernelAddr = netip.MustParseAddr("10.77.0.1") // the kernel's end, in the namespace
	berthAddr  = netip.MustParseAddr("10.77.0.2") // the address behind the TUN device
	kernel6    = netip.MustParseAddr("fd00:77::1")
	berth6     = netip.MustParseAddr("fd00:77::2")
)

func run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

// setupNS opens a TUN device, moves it into a fresh network namespace (removed at cleanup,
// also on failure) and configures the kernel's side. It returns the endpoint and the
// namespace name.
func setupNS(t testing.TB, opts Options) (*Endpoint, string) {
	t.Helper()
	testenv.NeedRoot(t)
	_, err := exec.LookPath("ip")
	testenv.NeedCommand(t, "ip", err)
	n := seq.Add(1)
	ns := fmt.Sprintf("berth-tun-%d-%d", os.Getpid(), n)
	dev := fmt.Sprintf("bt%d_%d", os.Getpid()%100000, n)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	e, err := Open(dev, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if e.Name() != dev {
		t.Fatalf("Name = %q, want %q", e.Name(), dev)
	}
	// The descriptor stays valid when the device changes namespace.
	run(t, "ip", "link", "set", dev, "netns", ns)
	run(t, "ip", "-n", ns, "addr", "add", kernelAddr.String()+"/24", "dev", dev)
	// nodad: usable at once, without waiting a second for duplicate address detection.
	run(t, "ip", "-n", ns, "addr", "add", kernel6.String()+"/64", "dev", dev, "nodad")
	run(t, "ip", "-n", ns, "link", "set", dev, "up")
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return e, ns
}

// parseIP splits an IPv4 or IPv6 packet (no extension headers).
func parseIP(p []byte) (src, dst netip.Addr, proto uint8, payload []byte, ok bool) {
	if len(p) > 0 && p[0]>>4 == 6 {
		ip, err := wire.ParseIPv6(p)
		if err != nil || len(p) < wire.IPv6HeaderLen+ip.PayloadLen() {
			return
		}
		return ip.Src(), ip.Dst(), ip.NextHeader(), p[wire.IPv6HeaderLen : wire.IPv6HeaderLen+ip.PayloadLen()], true
	}
	ip, err := wire.ParseIPv4(p)
	if err != nil {
		return
	}
	return ip.Src(), ip.Dst(), ip.Protocol(), ip.Payload(), true
}

// buildIP puts an IPv4 or IPv6 header (by the family of src) in front of l4.
func buildIP(src, dst netip.Addr, proto uint8, l4 []byte) []byte {
	if src.Is6() {
		b := make([]byte, wire.IPv6HeaderLen+len(l4))
		copy(b[wire.IPv6HeaderLen:], l4)
		f := wire.IPv6Fields{PayloadLen: len(l4), NextHeader: proto, HopLimit: 64, Src: src, Dst: dst}
		f.Encode(b)
		return b
	}
	b := make([]byte, wire.IPv4MinHeaderLen+len(l4))
	copy(b[wire.IPv4MinHeaderLen:], l4)
	f := wire.IPv4Fields{TotalLen: len(b), TTL: 64, Protocol: proto, Src: src, Dst: dst}
	f.Encode(b)
	return b
}

// echoReply6 builds the ICMPv6 echo reply (RFC 4443 §4.2) to request p, or nil.
func echoReply6(p []byte) []byte {
	src, dst, proto, icmp, ok := parseIP(p)
	if !ok || proto != wire.ProtoICMPv6 || dst != berth6 || len(icmp) < 8 || icmp[0] != 128 {
		return nil
	}
	r := append([]byte(nil), icmp...)
	r[0], r[2], r[3] = 129, 0, 0
	// RFC 4443 §2.3: the checksum covers the IPv6 pseudo-header.
	binary.BigEndian.PutUint16(r[2:], ^wire.Checksum(r, wire.PseudoHeaderChecksum(wire.ProtoICMPv6, dst, src, len(r))))
	return buildIP(dst, src, wire.ProtoICMPv6, r)
}

// echoReply builds the ICMPv4 echo reply to request p (RFC 792), or returns nil if p is
// not an echo request to berthAddr.
func echoReply(p []byte) []byte {
	ip, err := wire.ParseIPv4(p)
	if err != nil || ip.Protocol() != wire.ProtoICMPv4 || ip.Dst() != berthAddr {
		return nil
	}
	icmp := ip.Payload()
	if len(icmp) < 8 || icmp[0] != 8 {
		return nil
	}
	r := make([]byte, 20+len(icmp))
	copy(r[20:], icmp)
	r[20] = 0 // echo reply; code, identifier, sequence and data stay
	r[22], r[23] = 0, 0
	binary.BigEndian.PutUint16(r[22:], ^wire.Checksum(r[20:], 0))
	f := wire.IPv4Fields{TotalLen: len(r), TTL: 64, Protocol: wire.ProtoICMPv4, Src: ip.Dst(), Dst: ip.Src()}
	f.Encode(r)
	return r
}

func testPing(t *testing.T, opts Options) {
	e, ns := setupNS(t, opts)
	var replies atomic.Int32
	e.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		for _, p := range pkts {
			if r := echoReply(p); r != nil {
				if _, err := e.WritePackets([][]byte{r}); err != nil {
					t.Errorf("WritePackets: %v", err)
				}
				replies.Add(1)
			}
		}
	}))
	out, err := exec.Command("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", berthAddr.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping through the TUN device failed: %v\n%s", err, out)
	}
	if replies.Load() == 0 {
		t.Fatal("ping succeeded but the test never answered")
	}
	if s := e.Stats(); s.RxPackets == 0 || s.TxPackets == 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPingPlain(t *testing.T) { testPing(t, Options{MTU: 1400}) }

func TestPingVnetHdr(t *testing.T) {
	testPing(t, Options{VnetHdr: true})
}

func TestPing6VnetHdr(t *testing.T) {
	e, ns := setupNS(t, Options{VnetHdr: true})
	var replies atomic.Int32
	e.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		for _, p := range pkts {
			if r := echoReply6(p); r != nil {
				e.WritePackets([][]byte{r})
				replies.Add(1)
			}
		}
	}))
	out, err := exec.Command("ip", "netns", "exec", ns, "ping", "-6", "-c", "1", "-W", "2", berth6.String()).CombinedOutput()
	if err != nil || replies.Load() == 0 {
		t.Fatalf("ping -6 through the TUN device: %v, %d replies\n%s", err, replies.Load(), out)
	}
}

// inNetns runs f on a thread that has entered namespace ns; sockets f creates live there.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread is never unlocked: it exits with the goroutine instead of going
		// back to the pool while still in the other namespace.
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			t.Error(err)
			return
		}
		f()
	}()
	<-done
}

// TestVnetHdrChecksumCompleted: with TUN_F_CSUM the kernel leaves UDP checksums partial;
// the endpoint must deliver the datagram with a checksum that verifies.
func TestVnetHdrChecksumCompleted(t *testing.T) {
	e, ns := setupNS(t, Options{VnetHdr: true})
	if !e.Offloads().Csum {
		t.Fatalf("offloads %+v: TUN_F_CSUM refused", e.Offloads())
	}
	got := make(chan []byte, 16)
	e.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		for _, p := range pkts {
			if ip, err := wire.ParseIPv4(p); err == nil && ip.Protocol() == wire.ProtoUDP {
				got <- append([]byte(nil), p...)
			}
		}
	}))
	payload := bytes.Repeat([]byte("berth"), 100)
	inNetns(t, ns, func() {
		c, err := net.Dial("udp4", netip.AddrPortFrom(berthAddr, 9).String())
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		if _, err := c.Write(payload); err != nil {
			t.Error(err)
		}
	})
	select {
	case p := <-got:
		ip, _ := wire.ParseIPv4(p)
		u, err := wire.ParseUDP(ip.Payload())
		if err != nil || !bytes.Equal(u.Payload(), payload) {
			t.Fatalf("datagram %v: % x", err, p)
		}
		if u.Checksum() == 0 || !u.VerifyChecksum(ip.Src(), ip.Dst()) {
			t.Fatalf("UDP checksum %#04x does not verify", u.Checksum())
		}
		if s := e.Stats(); s.RxCsumCompleted == 0 {
			t.Fatalf("stats %+v: the kernel sent a full checksum; the completion path was not exercised", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no UDP datagram from the kernel")
	}
}

// TestTSOSuperSegment: a kernel TCP socket connects to an address behind the TUN, the test
// completes the handshake by hand, and a large write from the kernel must arrive as TCP
// super-segments larger than the MTU, with checksums that verify.
func TestTSOSuperSegment4(t *testing.T) { testTSO(t, kernelAddr, berthAddr) }
func TestTSOSuperSegment6(t *testing.T) { testTSO(t, kernel6, berth6) }

func testTSO(t *testing.T, kernel, berth netip.Addr) {
	e, ns := setupNS(t, Options{VnetHdr: true})
	if !e.Offloads().TSO4 || !e.Offloads().TSO6 {
		t.Fatalf("offloads %+v: TSO refused", e.Offloads())
	}
	const iss = 1000
	var mu sync.Mutex
	largest, segs := 0, 0
	big := make(chan int, 1)
	e.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		for _, p := range pkts {
			src, dst, proto, l4, ok := parseIP(p)
			if !ok || proto != wire.ProtoTCP || dst != berth {
				continue
			}
			tcp, err := wire.ParseTCP(l4)
			if err != nil {
				continue
			}
			if !tcp.VerifyChecksum(src, dst) {
				t.Errorf("TCP checksum does not verify (len %d)", len(p))
			}
			var reply wire.TCPFields
			switch {
			case tcp.Flags()&0x02 != 0: // SYN: answer SYN-ACK, MSS 1460, window 65535
				reply = wire.TCPFields{SrcPort: tcp.DstPort(), DstPort: tcp.SrcPort(), Seq: iss,
					Ack: tcp.Seq() + 1, Flags: 0x12, Window: 65535,
					Options: &wire.TCPOptions{MSS: 1460}}
			case len(tcp.Payload()) > 0: // data: acknowledge it
				mu.Lock()
				segs++
				if len(p) > largest {
					largest = len(p)
				}
				if len(p) > e.MTU() {
					select {
					case big <- len(p):
					default:
					}
				}
				mu.Unlock()
				reply = wire.TCPFields{SrcPort: tcp.DstPort(), DstPort: tcp.SrcPort(), Seq: iss + 1,
					Ack: tcp.Seq() + uint32(len(tcp.Payload())), Flags: 0x10, Window: 65535}
			default:
				continue
			}
			seg := make([]byte, reply.HeaderLen())
			reply.Encode(seg)
			wire.SetTCPChecksum(seg, berth, src)
			e.WritePackets([][]byte{buildIP(berth, src, wire.ProtoTCP, seg)})
		}
	}))
	var conn net.Conn
	inNetns(t, ns, func() {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(berth, 80).String(), 5*time.Second)
		if err != nil {
			t.Error(err)
			return
		}
		conn = c
	})
	if conn == nil {
		t.FailNow()
	}
	defer conn.Close()
	go conn.Write(make([]byte, 256<<10)) // ends with an error when conn closes
	select {
	case n := <-big:
		t.Logf("super-segment of %d bytes (MTU %d)", n, e.MTU())
		if s := e.Stats(); s.RxGSO == 0 {
			t.Fatalf("stats %+v: no GSO packet counted", s)
		}
	case <-time.After(5 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no packet larger than the MTU: %d data segments, largest %d", segs, largest)
	}
}

// TestCloseUnblocksReader: Close wakes the reader blocked in the poller, the goroutine
// count returns to where it was, and later writes fail with net.ErrClosed.
func TestCloseUnblocksReader(t *testing.T) {
	testenv.NeedRoot(t)
	before := runtime.NumGoroutine()
	e, err := Open(fmt.Sprintf("btc%d", os.Getpid()%100000), Options{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let the reader block
	closed := make(chan error)
	go func() { closed <- e.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return: the reader stayed blocked")
	}
	if _, err := e.WritePackets([][]byte{make([]byte, 20)}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if err := e.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	for i := 0; runtime.NumGoroutine() > before; i++ {
		if i == 100 {
			t.Fatalf("goroutines %d -> %d", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOpenErrors(t *testing.T) {
	testenv.NeedRoot(t)
	if _, err := Open("this-name-is-far-too-long-for-linux", Options{}); err == nil {
		t.Fatal("Open with a 35-byte name succeeded")
	}
	// "lo" exists and is not a TUN device.
	if _, err := Open("lo", Options{}); err == nil {
		t.Fatal("Open(lo) succeeded")
	} else {
		t.Log(err)
	}
}

// TestWriteGSO: the test opens a TCP connection by hand to a kernel listener in the
// namespace and sends one 20000-byte super-segment with WriteGSO; the kernel must cut it,
// accept every byte (so headers, partial checksum and segmentation were right), and
// acknowledge it all.
func TestWriteGSO(t *testing.T) { testWriteGSO(t, false) }

// TestWriteGSOGather is TestWriteGSO with the super-segment handed over in three pieces
// (WriteGSOGather: the headers, then the payload in two), as TCP sends from a send
// buffer whose ring wraps; a header whose total length does not count the pieces is
// refused.
func TestWriteGSOGather(t *testing.T) { testWriteGSO(t, true) }

func testWriteGSO(t *testing.T, gather bool) {
	e, ns := setupNS(t, Options{VnetHdr: true})
	if e.GSOMaxSize() < 20100 {
		t.Fatalf("GSOMaxSize %d", e.GSOMaxSize())
	}
	var ln net.Listener
	inNetns(t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp4", netip.AddrPortFrom(kernelAddr, 8080).String()); err != nil {
			t.Error(err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	defer ln.Close()
	const iss, sport = 5000, 40000
	synack := make(chan uint32, 1)
	acked := make(chan uint32, 64)
	e.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		for _, p := range pkts {
			ip, err := wire.ParseIPv4(p)
			if err != nil || ip.Protocol() != wire.ProtoTCP {
				continue
			}
			tcp, err := wire.ParseTCP(ip.Payload())
			if err != nil || tcp.DstPort() != sport {
				continue
			}
			if tcp.Flags()&0x12 == 0x12 {
				synack <- tcp.Seq()
			} else if tcp.Flags()&0x10 != 0 {
				acked <- tcp.Ack()
			}
		}
	}))
	send := func(seq, ack uint32, flags uint8, payload []byte, mss int) {
		f := wire.TCPFields{SrcPort: sport, DstPort: 8080, Seq: seq, Ack: ack, Flags: flags, Window: 65535}
		if flags&0x02 != 0 {
			f.Options = &wire.TCPOptions{MSS: 1460}
		}
		b := make([]byte, 20+f.HeaderLen()+len(payload))
		f.Encode(b[20:])
		copy(b[20+f.HeaderLen():], payload)
		wire.SetTCPChecksum(b[20:], berthAddr, kernelAddr)
		ipf := wire.IPv4Fields{TotalLen: len(b), TTL: 64, Protocol: wire.ProtoTCP, Src: berthAddr, Dst: kernelAddr, Flags: wire.IPv4FlagDF}
		ipf.Encode(b)
		var err error
		switch hl := 20 + f.HeaderLen(); {
		case mss > 0 && gather:
			err = e.WriteGSOGather(b[:hl], b[hl:hl+7000], b[hl+7000:], mss)
			if err == nil {
				binary.BigEndian.PutUint16(b[2:], uint16(len(b)-1))
				b[10], b[11] = 0, 0
				binary.BigEndian.PutUint16(b[10:], ^wire.Checksum(b[:20], 0))
				if bad := e.WriteGSOGather(b[:hl], b[hl:hl+7000], b[hl+7000:], mss); !errors.Is(bad, unix.EINVAL) {
					t.Errorf("WriteGSOGather with a total length short of the pieces: %v", bad)
				}
			}
		case mss > 0:
			err = e.WriteGSO(b, mss)
		default:
			_, err = e.WritePackets([][]byte{b})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	send(iss, 0, 0x02, nil, 0)
	var irs uint32
	select {
	case irs = <-synack:
	case <-time.After(5 * time.Second):
		t.Fatal("no SYN-ACK from the kernel")
	}
	send(iss+1, irs+1, 0x10, nil, 0)
	payload := make([]byte, 20000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	send(iss+1, irs+1, 0x18, payload, 1400)

	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("kernel received: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("kernel received different bytes")
	}
	want := uint32(iss + 1 + len(payload))
	deadline := time.After(5 * time.Second)
	for {
		select {
		case a := <-acked:
			if a == want {
				if s := e.Stats(); s.TxGSO != 1 {
					t.Fatalf("stats %+v", s)
				}
				return
			}
		case <-deadline:
			t.Fatalf("kernel never acknowledged up to %d", want)
		}
	}
}

// BenchmarkWrite writes 1400-byte UDP packets into a TUN device whose kernel side is up in
// a namespace (the kernel takes each packet and drops it at the closed port).
func BenchmarkWrite(b *testing.B) {
	for _, vnet := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "vnethdr"}[vnet], func(b *testing.B) {
			e, _ := setupNS(b, Options{VnetHdr: vnet})
			p := make([]byte, 1400)
			u := wire.UDPFields{SrcPort: 1, DstPort: 9, Length: len(p) - 20}
			u.Encode(p[20:])
			wire.SetUDPChecksum(p[20:], berthAddr, kernelAddr)
			f := wire.IPv4Fields{TotalLen: len(p), TTL: 64, Protocol: wire.ProtoUDP, Src: berthAddr, Dst: kernelAddr}
			f.Encode(p)
			batch := [][]byte{p}
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.WritePackets(batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(e.Stats().TxDropped), "drops")
		})
	}
	// The same datagram in an Ethernet frame to a TAP device's kernel side (kernelMAC).
	b.Run("tap-vnethdr", func(b *testing.B) {
		e, ns, dev := setupTAPNS(b, Options{VnetHdr: true})
		run(b, "ip", "-n", ns, "neigh", "add", berthAddr.String(), "lladdr", berthMAC.String(), "dev", dev, "nud", "permanent")
		p := make([]byte, 1400)
		u := wire.UDPFields{SrcPort: 1, DstPort: 9, Length: len(p) - 20}
		u.Encode(p[20:])
		wire.SetUDPChecksum(p[20:], berthAddr, kernelAddr)
		f := wire.IPv4Fields{TotalLen: len(p), TTL: 64, Protocol: wire.ProtoUDP, Src: berthAddr, Dst: kernelAddr}
		f.Encode(p)
		batch := [][]byte{ethFrame(kernelMAC, berthMAC, 0x0800, p)}
		b.SetBytes(int64(len(batch[0])))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.WritePackets(batch); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(e.Stats().TxDropped), "drops")
	})
}

// TestAttachExisting: Open on an existing persistent TUN device attaches to it (here with
// the vnet header, which the device need not have been created with); the device outlives
// Close.
func TestAttachExisting(t *testing.T) {
	testenv.NeedRoot(t)
	dev := fmt.Sprintf("btp%d", os.Getpid()%100000)
	run(t, "ip", "tuntap", "add", "dev", dev, "mode", "tun")
	t.Cleanup(func() { exec.Command("ip", "link", "del", dev).Run() })
	run(t, "ip", "link", "set", dev, "mtu", "1280")
	e, err := Open(dev, Options{VnetHdr: true})
	if err != nil {
		t.Fatal(err)
	}
	if e.Name() != dev || e.MTU() != 1280 || !e.Offloads().Csum {
		t.Fatalf("attached to %q, MTU %d, offloads %+v", e.Name(), e.MTU(), e.Offloads())
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "link", "show", dev) // still there: it is persistent
}

// verifiedRecorder is a link.VerifiedDispatcher that records which way packets came.
type verifiedRecorder struct {
	tcp, udp chan []byte // copies of TCP segments delivered verified, UDP datagrams any way
	plain    atomic.Int64
}

func (r *verifiedRecorder) DeliverPackets(pkts [][]byte) {
	r.plain.Add(int64(len(pkts)))
	r.record(pkts, false)
}
func (r *verifiedRecorder) DeliverVerified(pkts [][]byte) { r.record(pkts, true) }
func (r *verifiedRecorder) record(pkts [][]byte, verified bool) {
	for _, p := range pkts {
		ip, err := wire.ParseIPv4(p)
		if err != nil {
			continue
		}
		switch {
		case ip.Protocol() == wire.ProtoTCP && verified:
			select {
			case r.tcp <- append([]byte(nil), p...):
			default:
			}
		case ip.Protocol() == wire.ProtoUDP:
			select {
			case r.udp <- append([]byte(nil), p...):
			default:
			}
		}
	}
}

// TestVnetHdrVouched: to a link.VerifiedDispatcher, the kernel's TCP segments (checksum
// left partial: NEEDS_CSUM) are delivered verified and unsummed, while a UDP datagram
// still arrives with its checksum completed.
func TestVnetHdrVouched(t *testing.T) {
	e, ns := setupNS(t, Options{VnetHdr: true})
	r := &verifiedRecorder{tcp: make(chan []byte, 16), udp: make(chan []byte, 16)}
	e.Attach(r)
	inNetns(t, ns, func() {
		// A SYN nobody answers (on this thread, which is in the namespace).
		net.DialTimeout("tcp", netip.AddrPortFrom(berthAddr, 80).String(), 300*time.Millisecond)
		c, err := net.Dial("udp4", netip.AddrPortFrom(berthAddr, 9).String())
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		c.Write([]byte("berth"))
	})
	select {
	case p := <-r.tcp:
		ip, _ := wire.ParseIPv4(p)
		if tcp, err := wire.ParseTCP(ip.Payload()); err != nil || tcp.Flags()&wire.TCPFlagSYN == 0 {
			t.Fatalf("segment %v: % x", err, p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no TCP segment delivered verified")
	}
	select {
	case p := <-r.udp:
		ip, _ := wire.ParseIPv4(p)
		u, err := wire.ParseUDP(ip.Payload())
		if err != nil || !u.VerifyChecksum(ip.Src(), ip.Dst()) {
			t.Fatalf("UDP datagram %v: checksum does not verify", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no UDP datagram")
	}
	if s := e.Stats(); s.RxCsumCompleted != 1 {
		t.Errorf("stats %+v: want exactly the UDP checksum completed", s)
	}
}
