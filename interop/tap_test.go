//go:build linux

package interop

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/netns/tunhost"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/link/tun"
)

// newTAPHost is a berth stack on link/ether over a TAP device in a fresh namespace, the
// kernel on the other side (tunhost with TAP), with the vnet-header offloads on.
func newTAPHost(t testing.TB, ec ether.Config) *tunhost.Host {
	t.Helper()
	return tunhost.New(t, tunhost.Config{TAP: true, TUN: tun.Options{VnetHdr: true}, Ether: ec})
}

// neighEntry returns the kernel's neighbour table line for a on bt0 (ip neigh show).
func neighEntry(t testing.TB, h *tunhost.Host, a netip.Addr) string {
	t.Helper()
	return strings.TrimSpace(h.NS.IP(t, "neigh", "show", a.String(), "dev", "bt0"))
}

// TestTAPKernel: the Linux kernel on a TAP device against berth on link/ether: it pings
// berth over IPv4 and IPv6 (ARP and ND resolved), arping gets berth's MAC, the kernel's
// neighbour table holds berth's MAC as REACHABLE for both, and 64 MiB go each way
// byte-exact over each family (curl in the namespace from berth; berth from a kernel
// net/http server), with the offloads on (TSO super-segments both ways).
func TestTAPKernel(t *testing.T) {
	h := newTAPHost(t, ether.Config{})
	needCommand(t, "ping")
	mac := h.Ether.MAC().String()
	for _, a := range []netip.Addr{berth4, berth6} {
		out := h.NS.Run(t, "ping", "-c", "2", "-i", "0.2", "-W", "3", a.String())
		if !strings.Contains(out, "2 received") {
			t.Fatalf("ping %v: %s", a, out)
		}
		if e := neighEntry(t, h, a); !strings.Contains(e, mac) || !strings.Contains(e, "REACHABLE") {
			t.Fatalf("kernel's neighbour entry for %v: %q; want %s REACHABLE", a, e, mac)
		}
	}
	needCommand(t, "arping")
	out := h.NS.Run(t, "arping", "-c", "2", "-w", "5", "-I", "bt0", berth4.String())
	if !strings.Contains(strings.ToLower(out), strings.ToLower(mac)) || !strings.Contains(out, "Received 2 response") {
		t.Fatalf("arping: %s", out)
	}
	bulkBoth(t, h, 64<<20, 3*time.Minute)
	st := h.TUN.Stats()
	if st.RxGSO == 0 || st.TxGSO == 0 {
		t.Errorf("TAP stats %+v: want super-segments both ways", st)
	}
	c := h.Stack.Stats()
	if c["ArpInRequests"] == 0 || c["ArpOutReplies"] == 0 || c["Icmp6InNeighborSolicits"] == 0 || c["Icmp6OutNeighborAdvertisements"] == 0 {
		t.Errorf("ether counters: ArpInRequests %d ArpOutReplies %d Icmp6InNeighborSolicits %d Icmp6OutNeighborAdvertisements %d",
			c["ArpInRequests"], c["ArpOutReplies"], c["Icmp6InNeighborSolicits"], c["Icmp6OutNeighborAdvertisements"])
	}
	t.Logf("TAP %+v", st)
}

// bulkBoth moves n bytes each way over each family between berth and the kernel on h,
// SHA-256 checked: curl in the namespace from berth's GET /bytes/n, berth from a kernel
// net/http server.
func bulkBoth(t *testing.T, h *tunhost.Host, n int64, timeout time.Duration) {
	t.Helper()
	needCommand(t, "curl")
	hh := &host{Host: h}
	hh.berthHTTP(t)
	hh.kernelHTTP(t)
	patternSum(n)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, fam := range [][2]netip.Addr{{h.Addrs[0], h.HostAddrs[0]}, {h.Addrs[1], h.HostAddrs[1]}} {
		x, err := hh.curl(ctx, url(fam[0], 80, fmt.Sprintf("/bytes/%d", n)))
		checkTransfer(t, "curl <- berth "+fam[0].String(), x, err, n)
		x, err = hh.berthGet(ctx, url(fam[1], 8080, fmt.Sprintf("/bytes/%d", n)))
		checkTransfer(t, "berth <- kernel "+fam[1].String(), x, err, n)
	}
}

// TestTAPSLAAC: with berth as the link's router, the kernel configures an address in
// berth's /64 by SLAAC (RFC 4862) and a default route through berth's link-local address
// from its router advertisements, and reaches berth over them.
func TestTAPSLAAC(t *testing.T) {
	prefix := netip.MustParsePrefix("fd07:5::/64")
	h := tunhost.New(t, tunhost.Config{
		TAP: true, TUN: tun.Options{VnetHdr: true},
		Addrs:     []string{"10.7.0.2/24", "fd07:5::2/64"},
		HostAddrs: []string{"10.7.0.1/24"}, // no IPv6 address: SLAAC gives one
		Ether:     ether.Config{Router: &ether.Router{Prefixes: []netip.Prefix{prefix}}},
	})
	var addr, route string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		addr = h.NS.IP(t, "-6", "addr", "show", "dev", "bt0", "scope", "global")
		route = h.NS.IP(t, "-6", "route", "show", "default")
		// Usable once the kernel's own duplicate address detection is done.
		if strings.Contains(addr, "fd07:5:") && !strings.Contains(addr, "tentative") && strings.Contains(route, h.Ether.LinkLocal().String()) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(addr, "fd07:5:") || !strings.Contains(addr, "dynamic") {
		t.Fatalf("no SLAAC address from berth's advertisements:\n%s", addr)
	}
	if !strings.Contains(route, "via "+h.Ether.LinkLocal().String()) || !strings.Contains(route, "proto ra") {
		t.Fatalf("no default route through berth (%v) from its advertisements:\n%s", h.Ether.LinkLocal(), route)
	}
	out := h.NS.Run(t, "ping", "-c", "2", "-i", "0.2", "-W", "3", "fd07:5::2")
	if !strings.Contains(out, "2 received") {
		t.Fatalf("ping over the SLAAC address: %s", out)
	}
	if e := neighEntry(t, h, netip.MustParseAddr("fd07:5::2")); !strings.Contains(e, h.Ether.MAC().String()) {
		t.Fatalf("kernel's neighbour entry for berth: %q", e)
	}
	if c := h.Stack.Stats(); c["Icmp6OutRouterAdvertisements"] == 0 {
		t.Fatalf("Icmp6OutRouterAdvertisements %d", c["Icmp6OutRouterAdvertisements"])
	}
}

// TestTAPBadFrames: frames the kernel sends berth through a packet socket on the TAP
// device that are malformed — an ARP with the wrong hardware length, ARP for another
// host, an unknown EtherType, a VLAN-tagged frame, a truncated IPv4 header, a frame of
// more than MTU+18 bytes (the kernel's MTU raised behind berth's back) — are dropped and
// counted by the Ethernet layer or the TAP device, and berth still answers a ping
// afterwards.
func TestTAPBadFrames(t *testing.T) {
	h := newTAPHost(t, ether.Config{})
	mac := h.Ether.MAC()
	bcast := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	frame := func(dst []byte, typ uint16, payload []byte) []byte {
		f := append(append([]byte(nil), dst...), 0x02, 0, 0, 0, 0, 1, byte(typ>>8), byte(typ))
		return append(f, payload...)
	}
	arp := func(hlen byte, target netip.Addr) []byte {
		b := []byte{0, 1, 8, 0, hlen, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 7, 0, 1, 0, 0, 0, 0, 0, 0}
		return append(b, target.AsSlice()...)
	}
	frames := [][]byte{
		frame(bcast, 0x0806, arp(5, berth4)),                           // hlen 5
		frame(bcast, 0x0806, arp(6, netip.MustParseAddr("10.7.0.77"))), // another host
		frame(mac[:], 0x88b5, make([]byte, 46)),                        // unknown EtherType
		frame(mac[:], 0x8100, make([]byte, 46)),                        // 802.1Q tag
		frame(mac[:], 0x0800, []byte{0x45, 0, 0}),                      // truncated IPv4
		frame(mac[:], 0x0800, make([]byte, 3000)),                      // over the MTU
	}
	h.NS.IP(t, "link", "set", "bt0", "mtu", "9000")
	before := h.Stack.Stats()
	err := h.NS.Do(func() error {
		s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(s)
		ifc, err := net.InterfaceByName("bt0")
		if err != nil {
			return err
		}
		for i, f := range frames {
			to := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6}
			copy(to.Addr[:], f[:6])
			if err := unix.Sendto(s, f, 0, to); err != nil {
				return fmt.Errorf("frame %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the frames cross the device asynchronously
	after := h.Stack.Stats()
	dropped := func(names ...string) uint64 {
		var n uint64
		for _, k := range names {
			n += after[k] - before[k]
		}
		return n
	}
	if d := dropped("ArpInErrors", "ArpInNotForUs", "EtherInUnknownTypes", "EtherInVLAN", "EtherInTooBig", "IpInHdrErrors", "IpInTruncatedPkts") + h.TUN.Stats().RxTooLong; d < uint64(len(frames)) {
		var b strings.Builder
		for k, v := range after {
			if v != before[k] {
				fmt.Fprintf(&b, "%s +%d ", k, v-before[k])
			}
		}
		t.Errorf("%d of %d bad frames counted as dropped; changed counters: %s", d, len(frames), b.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.Stack.Ping(ctx, kern4, 1, []byte("still here")); err != nil {
		t.Fatalf("ping after bad frames: %v", err)
	}
}
