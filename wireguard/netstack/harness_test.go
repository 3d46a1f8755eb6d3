package netstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthnet/berth/services"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"
)

// The tunnel tests join two stacks through two wireguard-go devices whose UDP binds talk
// over the kernel's loopback: every packet really is encrypted, sent, received and
// decrypted by wireguard-go.

// side is one end of a tunnel: its address inside the tunnel and its socket API, whichever
// stack (berth, or wireguard-go's gVisor netstack) is behind it.
type side struct {
	addr         netip.Addr
	dial         func(ctx context.Context, network, address string) (net.Conn, error)
	listen       func(port uint16) (net.Listener, error)
	listenPacket func(port uint16) (net.PacketConn, error)
	berth        *Net            // nil for gVisor
	gvisor       *wgnetstack.Net // nil for berth
}

type kind int

const (
	berthSide kind = iota
	gvisorSide
)

func (k kind) String() string {
	if k == berthSide {
		return "berth"
	}
	return "gvisor"
}

// tunnelMTU is WireGuard's usual MTU on a 1500-byte path (1500 - 20 IPv4 - 8 UDP - 32
// WireGuard header and tag - 20 for IPv6 outer headers).
const tunnelMTU = 1420

type keyPair struct{ priv, pub [32]byte }

func newKey(t testing.TB) keyPair {
	var k keyPair
	if _, err := rand.Read(k.priv[:]); err != nil {
		t.Fatal(err)
	}
	// RFC 7748 §5: clamp the scalar.
	k.priv[0] &= 248
	k.priv[31] = (k.priv[31] & 127) | 64
	pub, err := curve25519.X25519(k.priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	copy(k.pub[:], pub)
	return k
}

func makeSide(t testing.TB, k kind, addrs, dns []netip.Addr) (tun.Device, side) {
	t.Helper()
	addr := addrs[0]
	sd := side{addr: addr}
	var dev tun.Device
	var err error
	// The two packages have the same entry point and method names; only the concrete
	// types of the connections they return differ.
	if k == berthSide {
		dev, sd.berth, err = CreateNetTUN(addrs, dns, tunnelMTU)
	} else {
		dev, sd.gvisor, err = wgnetstack.CreateNetTUN(addrs, dns, tunnelMTU)
	}
	if err != nil {
		t.Fatal(err)
	}
	// A side with one address listens on it; one with several, on all of them.
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(addr, port) }
	if len(addrs) > 1 {
		at = func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.Addr{}, port) }
	}
	if n := sd.berth; n != nil {
		sd.dial = n.DialContext
		sd.listen = func(p uint16) (net.Listener, error) { return n.ListenTCPAddrPort(at(p)) }
		sd.listenPacket = func(p uint16) (net.PacketConn, error) { return n.ListenUDPAddrPort(at(p)) }
	} else {
		n := sd.gvisor
		sd.dial = n.DialContext
		sd.listen = func(p uint16) (net.Listener, error) { return n.ListenTCPAddrPort(at(p)) }
		sd.listenPacket = func(p uint16) (net.PacketConn, error) { return n.ListenUDPAddrPort(at(p)) }
	}
	return dev, sd
}

// serve runs berth's classic services (package services: echo, discard, ...) on the
// side's address, on their registered ports, until the test ends.
func (sd side) serve(t testing.TB, names ...string) {
	t.Helper()
	port := func(address string) uint16 {
		_, p, _ := net.SplitHostPort(address)
		n, _ := strconv.Atoi(p)
		return uint16(n)
	}
	srv, err := services.Start(context.Background(), services.Config{
		Services:     names,
		Listen:       func(_, address string) (net.Listener, error) { return sd.listen(port(address)) },
		ListenPacket: func(_, address string) (net.PacketConn, error) { return sd.listenPacket(port(address)) },
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
}

var (
	addrA = netip.MustParseAddr("10.77.0.1")
	addrB = netip.MustParseAddr("10.77.0.2")
)

// tunnel brings up two wireguard-go devices, a (kind ka, address addrA) and b (kb, addrB),
// peered with each other over loopback UDP. Cleanup closes both devices and checks that
// the goroutines they started have ended.
func tunnel(t testing.TB, ka, kb kind, dnsA []netip.Addr) (a, b side) {
	t.Helper()
	return tunnelWith(t, ka, kb, []netip.Addr{addrA}, []netip.Addr{addrB}, dnsA)
}

// tunnelWith is tunnel with the two ends' addresses (a side's first address is its addr).
func tunnelWith(t testing.TB, ka, kb kind, ipsA, ipsB []netip.Addr, dnsA []netip.Addr) (a, b side) {
	t.Helper()
	base := runtime.NumGoroutine()
	tunA, a := makeSide(t, ka, ipsA, dnsA)
	tunB, b := makeSide(t, kb, ipsB, nil)
	keyA, keyB := newKey(t), newKey(t)
	logger := device.NewLogger(device.LogLevelError, "")
	devA := device.NewDevice(tunA, conn.NewDefaultBind(), logger)
	devB := device.NewDevice(tunB, conn.NewDefaultBind(), logger)
	t.Cleanup(func() {
		devA.Close()
		devB.Close()
		if _, ok := t.(*testing.B); ok {
			return
		}
		checkGoroutines(t, base)
	})
	set := func(d *device.Device, k keyPair) {
		if err := d.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(k.priv[:]))); err != nil {
			t.Fatal(err)
		}
		if err := d.Up(); err != nil {
			t.Fatal(err)
		}
	}
	set(devA, keyA)
	set(devB, keyB)
	peer := func(d *device.Device, k keyPair, port int, allowed []netip.Addr) {
		cfg := fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%d\n", hex.EncodeToString(k.pub[:]), port)
		for _, a := range allowed {
			cfg += fmt.Sprintf("allowed_ip=%s\n", netip.PrefixFrom(a, a.BitLen()))
		}
		if err := d.IpcSet(cfg); err != nil {
			t.Fatal(err)
		}
	}
	peer(devA, keyB, listenPort(t, devB), ipsB)
	peer(devB, keyA, listenPort(t, devA), ipsA)
	return a, b
}

func listenPort(t testing.TB, d *device.Device) int {
	t.Helper()
	s, err := d.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(s, "\n") {
		var p int
		if _, err := fmt.Sscanf(l, "listen_port=%d", &p); err == nil {
			return p
		}
	}
	t.Fatalf("no listen_port in %q", s)
	return 0
}

// checkGoroutines waits for the goroutine count to come back to base: wireguard-go's and
// the stacks' goroutines end shortly after Close returns.
func checkGoroutines(t testing.TB, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines after Close, %d before:\n%s", n, base, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
