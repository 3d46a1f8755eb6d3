package ports

import (
	"errors"
	"fmt"
	"net/netip"
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
