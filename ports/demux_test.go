package ports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"unsafe"
)

// TestDemuxSlotSize: a slot is one cache line, so a lookup of an unconnected socket reads
// one line, and 64 of them make a page-sized block.
func TestDemuxSlotSize(t *testing.T) {
	if s := unsafe.Sizeof(demuxSlot{}); s != 64 {
		t.Fatalf("demuxSlot is %d bytes, want 64", s)
	}
	if s := unsafe.Sizeof(demuxBlock{}); s != 4096 {
		t.Fatalf("demuxBlock is %d bytes, want 4096", s)
	}
}

// TestLookupIndexMatchesTables drives a Manager through random binds (plain, SO_REUSEADDR,
// SO_REUSEPORT, V6Only, listeners), connects, Registers, SetOwner, Listen and releases on a
// few ports and addresses, and after every step checks Lookup (through the per-port index)
// against lookupTables (the maps alone) for every local/remote pair, and checks the index's
// bookkeeping: slot counts, block use counts, and no block left once everything is gone.
func TestLookupIndexMatchesTables(t *testing.T) {
	locals := []netip.Addr{ad("10.0.0.1"), ad("10.0.0.2"), ad("0.0.0.0"), ad("fd00::1"), ad("::")}
	remotes := []netip.AddrPort{ap("192.0.2.1:1000"), ap("192.0.2.2:2000"), ap("[fd00::9]:1000"), ap("[fd00::8]:3000")}
	ports := []uint16{80, 81, 127, 128, 40000}
	opts := []BindOptions{plain, reuseAddr, reusePort, v6only, {Listening: true}, {ReusePort: true, UID: 1000, Listening: true}, {ReuseAddr: true, Listening: true}}
	for _, proto := range []Protocol{TCP, UDP} {
		r := rand.New(rand.NewPCG(uint64(proto), 7))
		m := NewManager(proto, Config{NoPrivilegedPorts: true, LocalPortRange: Range{40000, 40003}})
		var live []*Binding
		owner := 0
		for step := range 3000 {
			owner++
			switch op := r.IntN(10); {
			case op < 4:
				la := locals[r.IntN(len(locals))]
				if b, err := m.Bind(netip.AddrPortFrom(la, ports[r.IntN(len(ports))]), opts[r.IntN(len(opts))], owner); err == nil {
					live = append(live, b)
				}
			case op == 4 && len(live) > 0:
				b := live[r.IntN(len(live))]
				ra := remotes[r.IntN(len(remotes))]
				src := locals[r.IntN(2)]
				if ra.Addr().Is6() {
					src = locals[3]
				}
				m.Connect(b, src, ra, owner)
			case op == 5:
				ra := remotes[r.IntN(len(remotes))]
				src := locals[r.IntN(2)]
				if ra.Addr().Is6() {
					src = locals[3]
				}
				if b, err := m.Connect(nil, src, ra, owner); err == nil {
					live = append(live, b)
				}
			case op == 6:
				ra := remotes[r.IntN(len(remotes))]
				la := locals[r.IntN(2)]
				if ra.Addr().Is6() {
					la = locals[3]
				}
				if b, err := m.Register(netip.AddrPortFrom(la, ports[r.IntN(len(ports))]), ra, owner); err == nil {
					live = append(live, b)
				}
			case op == 7 && len(live) > 0:
				live[r.IntN(len(live))].SetOwner(owner)
			case op == 8 && len(live) > 0:
				b := live[r.IntN(len(live))]
				if r.IntN(2) == 0 {
					b.Listen()
				} else {
					b.SetListening(r.IntN(2) == 0)
				}
			case len(live) > 0:
				i := r.IntN(len(live))
				live[i].Release()
				live[i] = live[len(live)-1]
				live = live[:len(live)-1]
			}
			checkDemux(t, m, step, locals, remotes, ports)
			if t.Failed() {
				return
			}
		}
		for _, b := range live {
			b.Release()
		}
		checkDemux(t, m, -1, locals, remotes, ports)
		for i, blk := range m.demux {
			if blk != nil {
				t.Fatalf("%v: block %d still allocated with every binding released", proto, i)
			}
		}
	}
}

func checkDemux(t *testing.T, m *Manager, step int, locals []netip.Addr, remotes []netip.AddrPort, ports []uint16) {
	t.Helper()
	for _, la := range locals {
		for _, p := range ports {
			l := netip.AddrPortFrom(la, p)
			for _, r := range remotes {
				got, gotOK := m.Lookup(l, r)
				var want any
				wantOK := false
				if la.Is4() == r.Addr().Is4() { // else no socket can match
					m.mu.RLock()
					want, wantOK = m.lookupTables(l, r)
					m.mu.RUnlock()
				}
				if got != want || gotOK != wantOK {
					t.Errorf("%v step %d: Lookup(%v, %v) = %v, %v; tables say %v, %v", m.proto, step, l, r, got, gotOK, want, wantOK)
				}
			}
		}
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	conns := map[Port]uint32{}
	for k := range m.conns.v4 {
		conns[Port(k.lp)]++
	}
	for k := range m.conns.v6 {
		conns[k.lp]++
	}
	for i, blk := range m.demux {
		used := 0
		for j := range blk {
			if blk == nil {
				break
			}
			s := &blk[j]
			if s.used() {
				used++
			}
			if p := Port(i<<6 | j); s.conns != conns[p] || m.connPorts.get(p) != (conns[p] > 0) {
				t.Errorf("%v step %d: port %d slot counts %d 4-tuples (connPorts %v), table has %d", m.proto, step, p, s.conns, m.connPorts.get(p), conns[p])
			}
		}
		if blk == nil && m.demuxUsed[i] != 0 || int(m.demuxUsed[i]) != used {
			t.Errorf("%v step %d: block %d used count %d, %d slots in use", m.proto, step, i, m.demuxUsed[i], used)
		}
	}
}

func TestLookupOrder(t *testing.T) {
	m := NewManager(UDP, Config{})
	wild, _ := m.Bind(ap("0.0.0.0:5000"), reuseAddr, "wild")
	_, err := m.Bind(ap("10.0.0.1:5000"), reuseAddr, "specific")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Register(ap("10.0.0.1:5000"), ap("10.0.0.9:7"), "conn"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Register(ap("10.0.0.1:5000"), ap("10.0.0.9:7"), "dup"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("duplicate Register: %v", err)
	}
	for _, c := range []struct{ local, remote, want string }{
		{"10.0.0.1:5000", "10.0.0.9:7", "conn"},
		{"10.0.0.1:5000", "10.0.0.9:8", "specific"},
		{"10.0.0.2:5000", "10.0.0.9:7", "wild"},
	} {
		if o, ok := m.Lookup(ap(c.local), ap(c.remote)); !ok || o != c.want {
			t.Errorf("Lookup(%s, %s) = %v, want %s", c.local, c.remote, o, c.want)
		}
	}
	wild.Release()
	if o, ok := m.Lookup(ap("10.0.0.2:5000"), ap("10.0.0.9:7")); ok {
		t.Errorf("Lookup after release = %v", o)
	}
	// A bound socket that connects hears only its peer.
	b, _ := m.Bind(ap("0.0.0.0:6000"), plain, "udp")
	if _, err := m.Connect(b, ad("10.0.0.1"), ap("10.0.0.9:53"), "udp"); err != nil {
		t.Fatal(err)
	}
	if b.Local() != ap("10.0.0.1:6000") || b.Remote() != ap("10.0.0.9:53") {
		t.Fatalf("connected binding %v -> %v", b.Local(), b.Remote())
	}
	if _, ok := m.Lookup(ap("10.0.0.1:6000"), ap("10.0.0.8:53")); ok {
		t.Error("connected socket got a packet from another peer")
	}
	if o, ok := m.Lookup(ap("10.0.0.1:6000"), ap("10.0.0.9:53")); !ok || o != "udp" {
		t.Error("connected socket missed its peer")
	}
}

func TestDualStackLookup(t *testing.T) {
	m := NewManager(TCP, Config{})
	if _, err := m.Bind(ap("[::]:8080"), BindOptions{Listening: true}, "dual"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Bind(ap("[::]:9090"), BindOptions{Listening: true, V6Only: true}, "v6"); err != nil {
		t.Fatal(err)
	}
	if o, ok := m.Lookup(ap("10.0.0.1:8080"), ap("10.0.0.2:1")); !ok || o != "dual" {
		t.Errorf("IPv4 to dual-stack socket: %v %v", o, ok)
	}
	if o, ok := m.Lookup(ap("[fd00::1]:8080"), ap("[fd00::2]:1")); !ok || o != "dual" {
		t.Errorf("IPv6 to dual-stack socket: %v %v", o, ok)
	}
	if _, ok := m.Lookup(ap("10.0.0.1:9090"), ap("10.0.0.2:1")); ok {
		t.Error("IPv4 matched a v6only socket")
	}
	if o, ok := m.Lookup(ap("[fd00::1]:9090"), ap("[fd00::2]:1")); !ok || o != "v6" {
		t.Errorf("IPv6 to v6only socket: %v %v", o, ok)
	}
	// No address means "::" (dual stack), as ":8081" does for net.Listen.
	if b, err := m.Bind(netip.AddrPortFrom(netip.Addr{}, 8081), BindOptions{Listening: true}, "any"); err != nil || b.Local() != ap("[::]:8081") {
		t.Fatalf("bind :8081 = %v, %v", b, err)
	}
	if o, ok := m.Lookup(ap("10.0.0.1:8081"), ap("10.0.0.2:1")); !ok || o != "any" {
		t.Errorf("IPv4 to :8081: %v %v", o, ok)
	}
	// TCP: a bound socket that does not listen receives nothing.
	b, _ := m.Bind(ap("0.0.0.0:7070"), plain, "bound")
	if _, ok := m.Lookup(ap("10.0.0.1:7070"), ap("10.0.0.2:1")); ok {
		t.Error("non-listening TCP socket found")
	}
	b.SetListening(true)
	if o, ok := m.Lookup(ap("10.0.0.1:7070"), ap("10.0.0.2:1")); !ok || o != "bound" {
		t.Error("listener not found after SetListening")
	}
}

func TestLookupNoAlloc(t *testing.T) {
	m := NewManager(TCP, Config{})
	m.Bind(ap("0.0.0.0:80"), BindOptions{Privileged: true, Listening: true}, "l")
	m.Register(ap("10.0.0.1:80"), ap("10.0.0.2:999"), "c")
	if a := testing.AllocsPerRun(1000, func() {
		m.Lookup(ap("10.0.0.1:80"), ap("10.0.0.2:999"))
		m.Lookup(ap("10.0.0.1:80"), ap("10.0.0.2:1000"))
		m.Lookup(ap("10.0.0.1:81"), ap("10.0.0.2:1000"))
	}); a != 0 {
		t.Errorf("Lookup allocates %v per run", a)
	}
	// Garbage in (zero values, mixed families): no match, no panic.
	for _, c := range [][2]netip.AddrPort{{}, {ap("10.0.0.1:80"), ap("[::1]:1")}, {ap("[::1]:80"), ap("10.0.0.2:1")}, {ap("10.0.0.1:80"), {}}} {
		if o, ok := m.Lookup(c[0], c[1]); ok {
			t.Errorf("Lookup(%v, %v) = %v", c[0], c[1], o)
		}
	}
}

// BenchmarkLookupWarm demultiplexes packets of established connections among n 4-tuples
// (and n/10 listeners), cycling through the same 1,024 flows: a warm working set that stays
// in the caches whatever n is. It measures the lookup's instructions, not its memory
// traffic; BenchmarkLookup is the honest, cold one.
func BenchmarkLookupWarm(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := NewManager(TCP, Config{NoPrivilegedPorts: true})
			var flows [][2]netip.AddrPort
			for i := range n {
				lp, rp := benchTuple(i)
				if _, err := m.Register(lp, rp, i); err != nil {
					b.Fatal(err)
				}
				if i%10 == 0 {
					m.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(20000+i/10)), BindOptions{Listening: true}, i)
				}
				flows = append(flows, [2]netip.AddrPort{lp, rp})
			}
			probe := make([][2]netip.AddrPort, 1024)
			for i := range probe {
				probe[i] = flows[(i*7919)%len(flows)]
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				f := &probe[i&1023]
				i++
				if _, ok := m.Lookup(f[0], f[1]); !ok {
					b.Fatal("miss")
				}
			}
		})
	}
}

// benchTuple is the i-th connected 4-tuple of the lookup benchmarks: 1,000 local ports,
// remotes spread over 192.0.0.0/16.
func benchTuple(i int) (local, remote netip.AddrPort) {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 1}), uint16(1+i%1000)),
		netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}), uint16(1024+i/65536))
}

// benchBound is the i-th bound (address, port) of the lookup benchmarks, as in the root
// BenchmarkDemux: 50,000 ports on each of two addresses (100,000 sockets need more than one
// address's 64K ports).
func benchBound(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 50000), 1}), uint16(10000+i%50000))
}

// BenchmarkLookup is the demultiplexing lookup with 10, 1,000 and 100,000 bindings, each
// packet addressed to a binding chosen at random across the whole set, so a large table
// pays its cache misses (the stack's demux target: 100,000 within 2x of 10). The flows are
// generated arithmetically from a xorshift state, so the only memory the loop touches is
// the Manager's. Cases:
//   - udp: unconnected UDP sockets on specific addresses (the common demux case);
//   - tcp-conn: TCP connected 4-tuples (1,000 local ports, n/10 listeners on other ports);
//   - tcp-listen: SYNs to TCP listeners on specific addresses.
func BenchmarkLookup(b *testing.B) {
	remote := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, 1}), 5555)
	cases := []struct {
		name  string
		proto Protocol
		setup func(b *testing.B, m *Manager, n int)
		flow  func(i int) (local, remote netip.AddrPort)
	}{
		{"udp", UDP, func(b *testing.B, m *Manager, n int) {
			for i := range n {
				if _, err := m.Bind(benchBound(i), plain, i); err != nil {
					b.Fatal(err)
				}
			}
		}, func(i int) (netip.AddrPort, netip.AddrPort) { return benchBound(i), remote }},
		{"tcp-conn", TCP, func(b *testing.B, m *Manager, n int) {
			for i := range n {
				lp, rp := benchTuple(i)
				if _, err := m.Register(lp, rp, i); err != nil {
					b.Fatal(err)
				}
				if i%10 == 0 {
					if _, err := m.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(20000+i/10)), BindOptions{Listening: true}, i); err != nil {
						b.Fatal(err)
					}
				}
			}
		}, benchTuple},
		{"tcp-listen", TCP, func(b *testing.B, m *Manager, n int) {
			for i := range n {
				if _, err := m.Bind(benchBound(i), BindOptions{Listening: true}, i); err != nil {
					b.Fatal(err)
				}
			}
		}, func(i int) (netip.AddrPort, netip.AddrPort) { return benchBound(i), remote }},
	}
	for _, c := range cases {
		for _, n := range []int{10, 1000, 100000} {
			b.Run(fmt.Sprintf("%s/%d", c.name, n), func(b *testing.B) {
				m := NewManager(c.proto, Config{NoPrivilegedPorts: true})
				c.setup(b, m, n)
				runtime.GC() // setup garbage is not the lookup's
				b.ReportAllocs()
				x := uint64(0x9e3779b97f4a7c15)
				for b.Loop() {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					l, r := c.flow(int((x >> 32) * uint64(n) >> 32))
					if o, ok := m.Lookup(l, r); !ok || o == nil {
						b.Fatal("miss")
					}
				}
			})
		}
	}
}

// BenchmarkLookupListener is a SYN to a listener found through the wildcard entry.
func BenchmarkLookupListener(b *testing.B) {
	m := NewManager(TCP, Config{})
	m.Bind(ap("[::]:8080"), BindOptions{Listening: true}, "l")
	local, remote := ap("10.0.0.1:8080"), ap("10.0.0.2:40000")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := m.Lookup(local, remote); !ok {
			b.Fatal("miss")
		}
	}
}
