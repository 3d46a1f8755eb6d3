package ports

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
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
