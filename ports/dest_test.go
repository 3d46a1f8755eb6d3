package ports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"syscall"
	"testing"
)

// checkDests rebuilds the destination index from the 4-tuple table and compares it with
// the one the Manager maintained incrementally; likewise bind(0)'s counts of free ports.
func checkDests(t *testing.T, m *Manager) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string][]Port{}
	key := func(la, ra netip.Addr, rp uint16) string { return fmt.Sprint(la, ra, rp) }
	if m.proto == TCP {
		for k := range m.conns.v4 {
			if m.cfg.LocalPortRange.Contains(Port(k.lp)) {
				s := key(netip.AddrFrom4(k.la), netip.AddrFrom4(k.ra), k.rp)
				want[s] = append(want[s], Port(k.lp))
			}
		}
		for k := range m.conns.v6 {
			if m.cfg.LocalPortRange.Contains(k.lp) {
				s := key(netip.AddrFrom16(k.la), netip.AddrFrom16(k.ra), uint16(k.rp))
				want[s] = append(want[s], k.lp)
			}
		}
	}
	got := map[string][]Port{}
	r := m.cfg.LocalPortRange
	var free [2]int
	for p := int(r.Low); p <= int(r.High); p++ {
		if e := m.ports[Port(p)]; (e == nil || e.empty()) && !m.reserved.get(Port(p)) {
			free[p&1]++
		}
	}
	if free != m.freeAny {
		t.Errorf("free ports by parity %v, counted %v", free, m.freeAny)
	}
	collect := func(s string, e destEntry) {
		if e.n == 0 {
			t.Errorf("%s: empty entry kept", s)
		}
		if e.bits != nil && e.n <= destSmall/2 || e.bits == nil && e.n > destSmall {
			t.Errorf("%s: %d ports, bitmap %v", s, e.n, e.bits != nil)
		}
		var ps []Port
		for p := int(r.Low); p <= int(r.High); p++ {
			if e.holds(Port(p), r) {
				ps = append(ps, Port(p))
			}
		}
		var np [2]uint32
		for _, p := range ps {
			np[p&1]++
		}
		if len(ps) != int(e.n) || np != e.np {
			t.Errorf("%s: count %d %v, %d ports held %v", s, e.n, e.np, len(ps), np)
		}
		got[s] = ps
	}
	for k, e := range m.dests.v4 {
		collect(key(netip.AddrFrom4(k.la), netip.AddrFrom4(k.ra), k.rp), e)
	}
	for k, e := range m.dests.v6 {
		collect(key(netip.AddrFrom16(k.la), netip.AddrFrom16(k.ra), k.rp), e)
	}
	if len(got) != len(want) {
		t.Errorf("index has %d destinations, the 4-tuple table %d", len(got), len(want))
	}
	for s, ps := range want {
		slices.Sort(ps)
		if !slices.Equal(got[s], ps) {
			t.Errorf("%s: index %v, 4-tuples %v", s, got[s], ps)
		}
	}
}

// TestConnectFillsRangeOneDestination: connections to one server take every port of the
// range once (around the explicitly bound and reserved ports), the next Connect fails at
// once, a Release makes exactly that port available to the destination again, and other
// destinations may still share the ports.
func TestConnectFillsRangeOneDestination(t *testing.T) {
	type tc struct {
		name          string
		r             Range
		local, remote string
		secret        byte
	}
	cases := []tc{{"v4 default range", DefaultLocalPortRange, "10.0.0.1", "192.0.2.1:443", 1}}
	// An odd-sized range: offset n-1 wraps to 0, of the same parity; the walk of the other
	// parity once missed the other half of the range (EADDRNOTAVAIL when half full).
	for s := range byte(8) {
		cases = append(cases, tc{fmt.Sprintf("v6 odd range/secret %d", s), Range{40001, 42999}, "fd00::1", "[fd00::2]:443", s})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewManager(TCP, Config{LocalPortRange: c.r, ReservedPorts: []Range{{c.r.Low + 100, c.r.Low + 163}}, Secret: [16]byte{c.secret, 1}})
			local, remote := ad(c.local), ap(c.remote)
			bound := c.r.High - 7
			if _, err := m.Bind(netip.AddrPortFrom(local, uint16(bound)), plain, nil); err != nil {
				t.Fatal(err)
			}
			size := int(c.r.High-c.r.Low) + 1 - 64 - 1
			used := map[Port]*Binding{}
			for i := range size {
				b, err := m.Connect(nil, local, remote, i)
				if err != nil {
					m.mu.Lock()
					p, ok := refPick(m, local, remote)
					m.mu.Unlock()
					t.Fatalf("connect %d of %d: %v (walk: %d %v)", i+1, size, err, p, ok)
				}
				p := Port(b.Local().Port())
				if !c.r.Contains(p) || used[p] != nil || p == bound || p >= c.r.Low+100 && p <= c.r.Low+163 {
					t.Fatalf("connect %d: port %d", i+1, p)
				}
				used[p] = b
			}
			checkDests(t, m)
			for range 3 {
				if _, err := m.Connect(nil, local, remote, nil); !errors.Is(err, syscall.EADDRNOTAVAIL) {
					t.Fatalf("full range: %v, want EADDRNOTAVAIL", err)
				}
			}
			// Another destination may use the same ports.
			other := netip.AddrPortFrom(remote.Addr(), remote.Port()+1)
			ob, err := m.Connect(nil, local, other, nil)
			if err != nil || used[Port(ob.Local().Port())] == nil {
				t.Fatalf("other destination: %v, %v", ob, err)
			}
			ob.Release()
			// Each released port serves the destination again, and only that port.
			for _, p := range []Port{c.r.Low, c.r.High, c.r.Low + 5000 - 1} {
				if used[p] == nil {
					continue
				}
				used[p].Release()
				b, err := m.Connect(nil, local, remote, nil)
				if err != nil || Port(b.Local().Port()) != p {
					t.Fatalf("after releasing %d: %v, %v", p, b, err)
				}
				used[p] = b
				if _, err := m.Connect(nil, local, remote, nil); !errors.Is(err, syscall.EADDRNOTAVAIL) {
					t.Fatalf("full again: %v", err)
				}
			}
			for _, b := range used {
				b.Release()
			}
			checkDests(t, m)
			if len(m.dests.v4)+len(m.dests.v6) != 0 || m.Len() != 1 {
				t.Fatalf("after releasing all: %d destinations indexed, Len %d", len(m.dests.v4)+len(m.dests.v6), m.Len())
			}
		})
	}
}

// refPick is Algorithm 4's choice made the slow way, as the Manager did before the
// destination index: walk the range from the hashed offset, one parity then the other
// (from the next port), and take the first
// port that no explicit bind holds, is not reserved and whose 4-tuple is free, probing the
// 4-tuple table port by port. It changes nothing.
func refPick(m *Manager, local netip.Addr, remote netip.AddrPort) (Port, bool) {
	r := m.cfg.LocalPortRange
	n := uint32(r.High-r.Low) + 1
	h := m.hash3(local, remote)
	offset := (uint32(h>>32) + m.perturb[uint32(h)&(perturbSize-1)]) % n
	if n > 1 {
		offset &^= 1
	}
	for pass := uint32(0); pass < 2 && pass < n; pass++ {
		o := (offset + pass) % n
		want := (uint32(r.Low) + offset + pass) & 1 // pass 1: the other parity
		for d := uint32(0); d < n; d++ {
			p := Port(uint32(r.Low) + (o+d)%n)
			if uint32(p)&1 != want || m.busyBind.get(p) || m.reserved.get(p) {
				continue
			}
			if m.conns.get(netip.AddrPortFrom(local, uint16(p)), remote) == nil {
				return p, true
			}
		}
	}
	return 0, false
}

// TestConnectIndexMatchesProbing drives a Manager through random connects, releases, binds,
// Registers and range changes, and checks that every port Connect picks is the one the
// port-by-port walk picks (the index changes the cost, not the choice), and that the index
// stays equal to the 4-tuple table.
func TestConnectIndexMatchesProbing(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := NewManager(TCP, Config{LocalPortRange: Range{50001, 50200}, ReservedPorts: []Range{{50050, 50059}}})
	locals := []netip.Addr{ad("10.0.0.1"), ad("fd00::1")}
	remotes := [][]netip.AddrPort{
		{ap("192.0.2.1:80"), ap("192.0.2.1:443"), ap("192.0.2.2:80")},
		{ap("[fd00::2]:80"), ap("[fd00::3]:80")},
	}
	var live []*Binding
	for i := range 6000 {
		switch op := rng.IntN(100); {
		case op < 60:
			f := rng.IntN(2)
			local, remote := locals[f], remotes[f][rng.IntN(len(remotes[f]))]
			m.mu.Lock()
			want, ok := refPick(m, local, remote)
			m.mu.Unlock()
			b, err := m.Connect(nil, local, remote, i)
			if !ok {
				if !errors.Is(err, syscall.EADDRNOTAVAIL) {
					t.Fatalf("op %d: nothing free, Connect gave %v, %v", i, b, err)
				}
				continue
			}
			if err != nil || Port(b.Local().Port()) != want {
				t.Fatalf("op %d: Connect to %v gave %v, %v; the walk picks %d", i, remote, b, err, want)
			}
			live = append(live, b)
		case op < 90 && len(live) > 0:
			j := rng.IntN(len(live))
			live[j].Release()
			live[j] = live[len(live)-1]
			live = live[:len(live)-1]
		case op < 95:
			// An accepted connection on a port of the range, or an explicit bind.
			lp := netip.AddrPortFrom(locals[0], uint16(50001+rng.IntN(200)))
			if rng.IntN(2) == 0 {
				if b, err := m.Register(lp, remotes[0][rng.IntN(3)], i); err == nil {
					live = append(live, b)
				}
			} else if b, err := m.Bind(lp, plain, i); err == nil {
				live = append(live, b)
			}
		case op < 97:
			cfg := m.Config()
			cfg.LocalPortRange = Range{Port(50001 + rng.IntN(50)), Port(50150 + rng.IntN(50))}
			if err := m.SetConfig(cfg); err != nil {
				t.Fatal(err)
			}
			checkDests(t, m)
		}
		if i%500 == 0 {
			checkDests(t, m)
		}
	}
	checkDests(t, m)
	for _, b := range live {
		b.Release()
	}
	checkDests(t, m)
	if m.Len() != 0 || len(m.ports) != 0 || len(m.dests.v4)+len(m.dests.v6) != 0 {
		t.Fatalf("after releasing everything: Len %d, %d ports, %d destinations", m.Len(), len(m.ports), len(m.dests.v4)+len(m.dests.v6))
	}
}

// TestConnectReclaimOnlyWhenFull: a 4-tuple TupleReclaimable would give up is taken only
// once no port toward the destination is free; a free port is preferred.
func TestConnectReclaimOnlyWhenFull(t *testing.T) {
	type timeWait struct{}
	asked := 0
	m := NewManager(TCP, Config{LocalPortRange: Range{50000, 50031}, TupleReclaimable: func(o any) bool {
		asked++
		_, ok := o.(*timeWait)
		return ok
	}})
	local, remote := ad("10.0.0.1"), ap("192.0.2.1:80")
	var bs []*Binding
	for i := range 31 {
		b, err := m.Connect(nil, local, remote, i)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	tw := bs[7]
	tw.SetOwner(&timeWait{})
	b, err := m.Connect(nil, local, remote, "free")
	if err != nil || b.Local() == tw.Local() || asked != 0 {
		t.Fatalf("one port free: %v, %v, reclaimer asked %d times", b, err, asked)
	}
	b2, err := m.Connect(nil, local, remote, "reclaim")
	if err != nil || b2.Local() != tw.Local() {
		t.Fatalf("range full: %v, %v, want the TIME-WAIT port %v", b2, err, tw.Local())
	}
	if o, _ := m.Lookup(b2.Local(), remote); o != "reclaim" || m.Len() != 32 {
		t.Fatalf("Lookup %v, Len %d", o, m.Len())
	}
	asked = 0
	if _, err := m.Connect(nil, local, remote, nil); !errors.Is(err, syscall.EADDRNOTAVAIL) || asked != 32 {
		t.Fatalf("full, nothing reclaimable: %v after %d questions, want EADDRNOTAVAIL after 32", err, asked)
	}
	checkDests(t, m)
}

// TestSelectionAllocs: a connect or bind(0) followed by its release allocates only the
// Binding (emptied port entries and groups are reused).
func TestSelectionAllocs(t *testing.T) {
	m := NewManager(TCP, Config{})
	local, remote := ad("10.0.0.1"), ap("192.0.2.1:443")
	// Enough connections to one destination for it to have a bitmap.
	for range 2 * destSmall {
		if _, err := m.Connect(nil, local, remote, nil); err != nil {
			t.Fatal(err)
		}
	}
	i := 0
	connect := testing.AllocsPerRun(1000, func() {
		i++
		dst := remote
		if i%2 == 0 {
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 80)
		}
		b, err := m.Connect(nil, local, dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		b.Release()
	})
	bind := testing.AllocsPerRun(1000, func() {
		b, err := m.Bind(ap("0.0.0.0:0"), plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		b.Release()
	})
	if connect > 1 || bind > 1 {
		t.Errorf("allocations: Connect+Release %v, bind(0)+Release %v; want 1 (the Binding)", connect, bind)
	}
	checkDests(t, m)
}

// TestDestBitmapLifecycle: a destination gets a bitmap past destSmall connections, gives it
// back at destSmall/2, and leaves the index when its last connection goes.
func TestDestBitmapLifecycle(t *testing.T) {
	m := NewManager(TCP, Config{})
	local, remote := ad("10.0.0.1"), ap("192.0.2.1:443")
	entry := func() destEntry {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.dests.get(local, remote)
	}
	var bs []*Binding
	for i := range 3 * destSmall {
		b, err := m.Connect(nil, local, remote, nil)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
		if e := entry(); int(e.n) != i+1 || (e.bits != nil) != (i+1 > destSmall) {
			t.Fatalf("%d connections: entry of %d ports, bitmap %v", i+1, e.n, e.bits != nil)
		}
	}
	for len(bs) > 0 {
		bs[0].Release()
		bs = bs[1:]
		e := entry()
		if int(e.n) != len(bs) || (e.bits != nil) != (len(bs) > destSmall/2) {
			t.Fatalf("%d connections left: entry of %d ports, bitmap %v", len(bs), e.n, e.bits != nil)
		}
		for _, b := range bs {
			if !e.holds(Port(b.Local().Port()), m.Config().LocalPortRange) {
				t.Fatalf("%d connections left: port %d missing", len(bs), b.Local().Port())
			}
		}
		checkDests(t, m)
	}
	if len(m.dests.v4) != 0 {
		t.Fatalf("empty destination still indexed: %+v", m.dests.v4)
	}
}
