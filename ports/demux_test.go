package ports

import (
	"math/rand/v2"
	"net/netip"
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
