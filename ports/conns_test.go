package ports

import (
	"errors"
	"syscall"
	"testing"
)

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
