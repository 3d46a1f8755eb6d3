package ports

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
)

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
