package ports

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func ad(s string) netip.Addr     { return netip.MustParseAddr(s) }

var (
	plain     = BindOptions{}
	reuseAddr = BindOptions{ReuseAddr: true}
	reusePort = BindOptions{ReusePort: true, UID: 1000}
	v6only    = BindOptions{V6Only: true}
)

// TestBindConflicts writes down which pairs of binds may share a port, as on Linux
// (inet_csk_bind_conflict for TCP, udp_lib_lport_inuse for UDP): the first bind always
// succeeds; the second gets nil or EADDRINUSE.
func TestBindConflicts(t *testing.T) {
	listen := func(o BindOptions) BindOptions { o.Listening = true; return o }
	uid := func(o BindOptions, u uint32) BindOptions { o.UID = u; return o }
	both := BindOptions{ReuseAddr: true, ReusePort: true, UID: 1000}
	cases := []struct {
		name       string
		proto      Protocol
		a          string
		aOpts      BindOptions
		b          string
		bOpts      BindOptions
		wantShared bool
	}{
		// Same address, no options: always a conflict.
		{"tcp same addr", TCP, "10.0.0.1:8080", plain, "10.0.0.1:8080", plain, false},
		{"udp same addr", UDP, "10.0.0.1:8080", plain, "10.0.0.1:8080", plain, false},
		// Different specific addresses never conflict.
		{"tcp two addrs", TCP, "10.0.0.1:8080", plain, "10.0.0.2:8080", plain, true},
		{"v4 and v6 specific", TCP, "10.0.0.1:8080", plain, "[fd00::1]:8080", plain, true},
		// Specific vs wildcard, either order: conflict unless reuse allows.
		{"specific then wildcard", TCP, "10.0.0.1:8080", plain, "0.0.0.0:8080", plain, false},
		{"wildcard then specific", TCP, "0.0.0.0:8080", plain, "10.0.0.1:8080", plain, false},
		{"specific then wildcard, reuseaddr both", TCP, "10.0.0.1:8080", reuseAddr, "0.0.0.0:8080", reuseAddr, true},
		{"specific then wildcard, reuseaddr one", TCP, "10.0.0.1:8080", reuseAddr, "0.0.0.0:8080", plain, false},
		// SO_REUSEADDR: both must set it, and (TCP) neither may be listening.
		{"tcp reuseaddr both", TCP, "0.0.0.0:8080", reuseAddr, "0.0.0.0:8080", reuseAddr, true},
		{"tcp reuseaddr first only", TCP, "0.0.0.0:8080", reuseAddr, "0.0.0.0:8080", plain, false},
		{"tcp reuseaddr second only", TCP, "0.0.0.0:8080", plain, "0.0.0.0:8080", reuseAddr, false},
		{"tcp reuseaddr, first listening", TCP, "0.0.0.0:8080", listen(reuseAddr), "0.0.0.0:8080", reuseAddr, false},
		{"udp reuseaddr both", UDP, "0.0.0.0:5353", reuseAddr, "0.0.0.0:5353", reuseAddr, true},
		{"udp reuseaddr 'listening' is meaningless", UDP, "0.0.0.0:5353", listen(reuseAddr), "0.0.0.0:5353", reuseAddr, true},
		// SO_REUSEPORT: both, same UID; listeners too.
		{"tcp reuseport both listening", TCP, "0.0.0.0:8080", listen(reusePort), "0.0.0.0:8080", reusePort, true},
		{"tcp reuseport other uid", TCP, "0.0.0.0:8080", listen(reusePort), "0.0.0.0:8080", uid(reusePort, 1001), false},
		{"tcp reuseport first only", TCP, "0.0.0.0:8080", reusePort, "0.0.0.0:8080", plain, false},
		{"udp reuseport both", UDP, "0.0.0.0:5353", reusePort, "0.0.0.0:5353", reusePort, true},
		{"udp reuseport vs reuseaddr", UDP, "0.0.0.0:5353", reusePort, "0.0.0.0:5353", reuseAddr, false},
		{"both options, other uid, not listening", TCP, "0.0.0.0:8080", both, "0.0.0.0:8080", uid(both, 7), true},
		// Dual stack: "::" without v6only also holds the IPv4 port.
		{"dual :: then 0.0.0.0", TCP, "[::]:8080", plain, "0.0.0.0:8080", plain, false},
		{"0.0.0.0 then dual ::", TCP, "0.0.0.0:8080", plain, "[::]:8080", plain, false},
		{"dual :: then v4 specific", TCP, "[::]:8080", plain, "10.0.0.1:8080", plain, false},
		{"v6only :: then 0.0.0.0", TCP, "[::]:8080", v6only, "0.0.0.0:8080", plain, true},
		{"0.0.0.0 then v6only ::", TCP, "0.0.0.0:8080", plain, "[::]:8080", v6only, true},
		{"v6only :: then v6 specific", TCP, "[::]:8080", v6only, "[fd00::1]:8080", plain, false},
		{"dual :: then 0.0.0.0, reuseaddr both", UDP, "[::]:5353", reuseAddr, "0.0.0.0:5353", reuseAddr, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewManager(c.proto, Config{})
			if _, err := m.Bind(ap(c.a), c.aOpts, "a"); err != nil {
				t.Fatalf("first bind %s: %v", c.a, err)
			}
			_, err := m.Bind(ap(c.b), c.bOpts, "b")
			if c.wantShared && err != nil {
				t.Errorf("second bind %s: %v, want success", c.b, err)
			}
			if !c.wantShared && !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("second bind %s: %v, want EADDRINUSE", c.b, err)
			}
		})
	}
}

func TestReleaseFreesPort(t *testing.T) {
	m := NewManager(TCP, Config{})
	b, _ := m.Bind(ap("0.0.0.0:8080"), plain, 1)
	if _, err := m.Bind(ap("0.0.0.0:8080"), plain, 2); err == nil {
		t.Fatal("double bind")
	}
	b.Release()
	b.Release()
	if _, err := m.Bind(ap("0.0.0.0:8080"), plain, 2); err != nil {
		t.Fatal(err)
	}
	if m.Len() != 1 {
		t.Fatalf("Len = %d", m.Len())
	}
}

func TestListenWithReuseAddr(t *testing.T) {
	// Linux: two SO_REUSEADDR sockets may bind the same port, but only one may listen.
	m := NewManager(TCP, Config{})
	a, _ := m.Bind(ap("0.0.0.0:8080"), reuseAddr, "a")
	b, err := m.Bind(ap("0.0.0.0:8080"), reuseAddr, "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second listen: %v, want EADDRINUSE", err)
	}
	if o, ok := m.Lookup(ap("10.0.0.1:8080"), ap("10.0.0.9:1234")); !ok || o != "a" {
		t.Fatalf("Lookup = %v %v, want the listener a", o, ok)
	}
}

func TestPrivilegedFloor(t *testing.T) {
	m := NewManager(TCP, Config{})
	if _, err := m.Bind(ap("0.0.0.0:80"), plain, nil); !errors.Is(err, syscall.EACCES) {
		t.Errorf("bind 80: %v, want EACCES", err)
	}
	if _, err := m.Bind(ap("0.0.0.0:1023"), plain, nil); !errors.Is(err, syscall.EACCES) {
		t.Errorf("bind 1023: %v, want EACCES", err)
	}
	if _, err := m.Bind(ap("0.0.0.0:1024"), plain, nil); err != nil {
		t.Errorf("bind 1024: %v", err)
	}
	if _, err := m.Bind(ap("0.0.0.0:80"), BindOptions{Privileged: true}, nil); err != nil {
		t.Errorf("privileged bind 80: %v", err)
	}
	if err := m.SetConfig(Config{UnprivilegedPortStart: 80}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Bind(ap("0.0.0.0:8"), plain, nil); !errors.Is(err, syscall.EACCES) {
		t.Errorf("bind 8 with floor 80: %v", err)
	}
	if _, err := m.Bind(ap("0.0.0.0:443"), plain, nil); err != nil {
		t.Errorf("bind 443 with floor 80: %v", err)
	}
	if err := m.SetConfig(Config{NoPrivilegedPorts: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Bind(ap("0.0.0.0:22"), plain, nil); err != nil {
		t.Errorf("bind 22 without floor: %v", err)
	}
}

func TestConfig(t *testing.T) {
	m := NewManager(UDP, Config{})
	c := m.Config()
	if c.LocalPortRange != (Range{49152, 65535}) || c.UnprivilegedPortStart != 1024 || c.Secret == ([16]byte{}) {
		t.Fatalf("defaults: %+v", c)
	}
	for _, r := range []Range{{100, 99}, {0, 10}} {
		if err := m.SetConfig(Config{LocalPortRange: r}); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("range %v: %v", r, err)
		}
	}
	if err := m.SetConfig(Config{LocalPortRange: LinuxLocalPortRange}); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		b, err := m.Bind(ap("0.0.0.0:0"), plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p := Port(b.Local().Port()); p < 32768 || p > 60999 {
			t.Fatalf("bind(0) gave %d outside 32768-60999", p)
		}
	}
}

func TestBindZeroRandomAndExhaustion(t *testing.T) {
	m := NewManager(UDP, Config{LocalPortRange: Range{40000, 40099}, ReservedPorts: []Range{{40010, 40019}}})
	seen := map[Port]bool{}
	var first []Port
	for range 90 {
		b, err := m.Bind(ap("0.0.0.0:0"), plain, nil)
		if err != nil {
			t.Fatalf("after %d ports: %v", len(seen), err)
		}
		p := Port(b.Local().Port())
		if seen[p] || p < 40000 || p > 40099 || (p >= 40010 && p <= 40019) {
			t.Fatalf("bad port %d", p)
		}
		seen[p] = true
		if len(first) < 10 {
			first = append(first, p)
		}
	}
	if isSequential(first) {
		t.Errorf("bind(0) ports are sequential: %v", first)
	}
	// 100 ports - 10 reserved = 90: the range is exhausted, at once.
	if _, err := m.Bind(ap("0.0.0.0:0"), plain, nil); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("exhausted: %v, want EADDRNOTAVAIL", err)
	}
	if _, err := m.Connect(nil, ad("10.0.0.1"), ap("10.0.0.2:53"), nil); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("exhausted UDP connect: %v, want EADDRNOTAVAIL", err)
	}
	// An explicit bind may still use a reserved port.
	if _, err := m.Bind(ap("0.0.0.0:40010"), plain, nil); err != nil {
		t.Fatal(err)
	}
}

// isSequential reports whether every step between successive ports is 1 or 2.
func isSequential(ps []Port) bool {
	for i := 1; i < len(ps); i++ {
		d := int(ps[i]) - int(ps[i-1])
		if d != 1 && d != 2 {
			return false
		}
	}
	return true
}

func TestConnectAlg4(t *testing.T) {
	m := NewManager(TCP, Config{})
	local := ad("10.0.0.1")
	// Successive different destinations get unrelated ports (RFC 6056 §3.3.4): not a
	// global counter.
	var ps []Port
	for i := range 20 {
		b, err := m.Connect(nil, local, netip.AddrPortFrom(ad(fmt.Sprintf("192.0.2.%d", i+1)), 443), i)
		if err != nil {
			t.Fatal(err)
		}
		p := Port(b.Local().Port())
		if p < 49152 {
			t.Fatalf("port %d outside the range", p)
		}
		ps = append(ps, p)
	}
	if isSequential(ps) {
		t.Errorf("ports for different destinations are sequential: %v", ps)
	}
	near := 0 // steps of at most 2: a global counter makes all 19 such steps
	for i := 1; i < len(ps); i++ {
		if d := int(ps[i]) - int(ps[i-1]); d >= -2 && d <= 2 {
			near++
		}
	}
	if near > 3 {
		t.Errorf("%d of %d successive ports are neighbours: %v", near, len(ps)-1, ps)
	}
	// The same destination again and again: new ports, each 4-tuple unique.
	dst := ap("198.51.100.7:80")
	tuples := map[netip.AddrPort]bool{}
	for i := range 50 {
		b, err := m.Connect(nil, local, dst, i)
		if err != nil {
			t.Fatal(err)
		}
		if tuples[b.Local()] {
			t.Fatalf("4-tuple %v reused", b.Local())
		}
		tuples[b.Local()] = true
		if o, ok := m.Lookup(b.Local(), dst); !ok || o != i {
			t.Fatalf("Lookup(%v) = %v %v", b.Local(), o, ok)
		}
	}
}

func TestConnectSharesEphemeralPort(t *testing.T) {
	// With a one-port range, every destination gets the same port: only the 4-tuple must be
	// unique. A second connection to the same destination is EADDRNOTAVAIL.
	m := NewManager(TCP, Config{LocalPortRange: Range{50000, 50000}})
	local := ad("10.0.0.1")
	for i := range 5 {
		b, err := m.Connect(nil, local, netip.AddrPortFrom(ad("192.0.2.1"), uint16(1000+i)), i)
		if err != nil {
			t.Fatal(err)
		}
		if b.Local().Port() != 50000 {
			t.Fatalf("port %d", b.Local().Port())
		}
	}
	if _, err := m.Connect(nil, local, ap("192.0.2.1:1000"), nil); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("same 4-tuple: %v, want EADDRNOTAVAIL", err)
	}
	// An explicit bind of the port fails while connections use it (Linux), and once a port
	// is explicitly bound, Connect no longer picks it.
	if _, err := m.Bind(ap("10.0.0.1:50000"), plain, nil); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bind of a port in use by connect: %v", err)
	}
	m2 := NewManager(TCP, Config{LocalPortRange: Range{50000, 50001}})
	if _, err := m2.Bind(ap("10.0.0.2:50000"), plain, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		b, err := m2.Connect(nil, local, netip.AddrPortFrom(ad("192.0.2.1"), uint16(1000+i)), i)
		if err != nil || b.Local().Port() != 50001 {
			t.Fatalf("connect %d: %v %v", i, b, err)
		}
	}
}

func TestConnectExhaustion(t *testing.T) {
	// Every port of the range explicitly bound: Connect fails at once with EADDRNOTAVAIL.
	m := NewManager(TCP, Config{LocalPortRange: Range{61000, 61999}})
	for range 1000 {
		if _, err := m.Bind(ap("0.0.0.0:0"), plain, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Connect(nil, ad("10.0.0.1"), ap("192.0.2.1:80"), nil); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("full range: %v, want EADDRNOTAVAIL", err)
	}
	// Reserved ports are never chosen either.
	m = NewManager(TCP, Config{LocalPortRange: Range{61000, 61009}, ReservedPorts: []Range{{61000, 61008}}})
	for i := range 3 {
		b, err := m.Connect(nil, ad("10.0.0.1"), netip.AddrPortFrom(ad("192.0.2.1"), uint16(80+i)), nil)
		if err != nil || b.Local().Port() != 61009 {
			t.Fatalf("connect with 61000-61008 reserved: %v, %v", b, err)
		}
	}
}

func TestTupleReclaimable(t *testing.T) {
	type timeWait struct{ reusable bool }
	var m *Manager
	m = NewManager(TCP, Config{LocalPortRange: Range{50000, 50000}, TupleReclaimable: func(o any) bool {
		tw, ok := o.(*timeWait)
		if ok && tw.reusable {
			// The callback may touch the Manager (it runs without its lock).
			_ = m.Len()
			return true
		}
		return false
	}})
	local := ad("10.0.0.1")
	dst := ap("192.0.2.1:80")
	b, err := m.Connect(nil, local, dst, "conn")
	if err != nil {
		t.Fatal(err)
	}
	tw := &timeWait{}
	b.SetOwner(tw)
	if _, err := m.Connect(nil, local, dst, "new"); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("TIME-WAIT not reusable: %v", err)
	}
	tw.reusable = true
	nb, err := m.Connect(nil, local, dst, "new")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := m.Lookup(nb.Local(), dst); o != "new" {
		t.Fatalf("Lookup = %v", o)
	}
	b.Release() // no-op: already reclaimed
	if o, _ := m.Lookup(nb.Local(), dst); o != "new" || m.Len() != 1 {
		t.Fatalf("after old Release: %v, Len %d", o, m.Len())
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

func TestUDPReuseAddrLastBoundWins(t *testing.T) {
	// Linux: with SO_REUSEADDR on both, the socket bound last receives unicast datagrams;
	// all receive broadcast (LookupAll).
	m := NewManager(UDP, Config{})
	first, _ := m.Bind(ap("0.0.0.0:5353"), reuseAddr, "first")
	m.Bind(ap("0.0.0.0:5353"), reuseAddr, "second")
	if o, _ := m.Lookup(ap("10.0.0.1:5353"), ap("10.0.0.2:5353")); o != "second" {
		t.Errorf("unicast went to %v", o)
	}
	var all []any
	m.LookupAll(ap("10.255.255.255:5353"), ap("10.0.0.2:5353"), func(o any) { all = append(all, o) })
	if len(all) != 2 {
		t.Errorf("LookupAll = %v", all)
	}
	_ = first
}

func TestReusePortSpreads(t *testing.T) {
	m := NewManager(TCP, Config{})
	opts := BindOptions{ReusePort: true, UID: 1, Listening: true}
	for i := range 4 {
		if _, err := m.Bind(ap("0.0.0.0:8443"), opts, i); err != nil {
			t.Fatal(err)
		}
	}
	count := map[any]int{}
	for i := range 4000 {
		remote := netip.AddrPortFrom(ad("192.0.2.1"), uint16(10000+i))
		o, ok := m.Lookup(ap("10.0.0.1:8443"), remote)
		if !ok {
			t.Fatal("no listener")
		}
		if o2, _ := m.Lookup(ap("10.0.0.1:8443"), remote); o2 != o {
			t.Fatal("the same 4-tuple went to two members")
		}
		count[o]++
	}
	for i := range 4 {
		if count[i] < 700 {
			t.Errorf("member %d got %d of 4000 connections", i, count[i])
		}
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

func TestConcurrent(t *testing.T) {
	m := NewManager(TCP, Config{LocalPortRange: Range{60000, 60099}})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				remote := netip.AddrPortFrom(ad(fmt.Sprintf("192.0.2.%d", g+1)), uint16(i%7+1))
				b, err := m.Connect(nil, ad("10.0.0.1"), remote, i)
				if err != nil {
					if !errors.Is(err, syscall.EADDRNOTAVAIL) {
						t.Error(err)
					}
					continue
				}
				m.Lookup(b.Local(), remote)
				if i%2 == 0 {
					b.Release()
				}
			}
		}()
	}
	wg.Wait()
	if m.Len() > 4*150 {
		t.Errorf("Len = %d", m.Len())
	}
	checkDests(t, m)
}

func TestSipHash(t *testing.T) {
	// Reference vector from the SipHash paper, appendix A: key 00..0f, message 00..0e.
	var msg [15]byte
	for i := range msg {
		msg[i] = byte(i)
	}
	if got := sipHash24(0x0706050403020100, 0x0f0e0d0c0b0a0908, msg[:]); got != 0xa129ca6149be45e5 {
		t.Fatalf("SipHash-2-4 = %#x", got)
	}
}

// occupy binds the first frac of a range's ports (spread out at random by bind(0)).
func occupy(b *testing.B, m *Manager, frac float64) {
	r := m.Config().LocalPortRange
	n := int(float64(int(r.High)-int(r.Low)+1) * frac)
	for range n {
		if _, err := m.Bind(ap("0.0.0.0:0"), plain, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEphemeral measures ephemeral selection with 0%, 90% and 99% of the range held by
// explicit binds: TCP Connect (RFC 6056 Algorithm 4) and bind(0).
func BenchmarkEphemeral(b *testing.B) {
	for _, frac := range []float64{0, 0.90, 0.99} {
		b.Run(fmt.Sprintf("connect/%d%%", int(frac*100)), func(b *testing.B) {
			m := NewManager(TCP, Config{})
			occupy(b, m, frac)
			local := ad("10.0.0.1")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				remote := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}), 443)
				c, err := m.Connect(nil, local, remote, nil)
				if err != nil {
					b.Fatal(err)
				}
				c.Release()
			}
		})
		b.Run(fmt.Sprintf("bind0/%d%%", int(frac*100)), func(b *testing.B) {
			m := NewManager(UDP, Config{})
			occupy(b, m, frac)
			b.ReportAllocs()
			for b.Loop() {
				c, err := m.Bind(ap("0.0.0.0:0"), plain, nil)
				if err != nil {
					b.Fatal(err)
				}
				c.Release()
			}
		})
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

// BenchmarkEphemeralOneDestination is BenchmarkEphemeral's connect case with the range
// occupied by connections to one destination instead of binds: 0%, 90% and 99% of the
// ports already connected to one server (made by Connect itself and kept open), then each
// op connects to that server once more and releases.
func BenchmarkEphemeralOneDestination(b *testing.B) {
	for _, frac := range []float64{0, 0.90, 0.99} {
		b.Run(fmt.Sprintf("connect/%d%%", int(frac*100)), func(b *testing.B) {
			m := NewManager(TCP, Config{})
			local, remote := ad("10.0.0.1"), ap("192.0.2.1:443")
			r := m.Config().LocalPortRange
			for range int(float64(int(r.High)-int(r.Low)+1) * frac) {
				if _, err := m.Connect(nil, local, remote, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				c, err := m.Connect(nil, local, remote, nil)
				if err != nil {
					b.Fatal(err)
				}
				c.Release()
			}
		})
	}
}

// The names come from strconv now (the package's own itoa is gone): the fallback forms
// of both String methods, with numbers of one, two and three digits.
func TestProtocolAndCategoryString(t *testing.T) {
	for p, want := range map[Protocol]string{TCP: "tcp", UDP: "udp", 0: "proto-0", 41: "proto-41", 255: "proto-255"} {
		if got := p.String(); got != want {
			t.Errorf("Protocol(%d).String() = %q, want %q", uint8(p), got, want)
		}
	}
	for c, want := range map[Category]string{System: "system (well-known)", Dynamic: "dynamic (ephemeral)", 3: "category-3", 200: "category-200"} {
		if got := c.String(); got != want {
			t.Errorf("Category(%d).String() = %q, want %q", uint8(c), got, want)
		}
	}
}
