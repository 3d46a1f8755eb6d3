package ports

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync"
	"syscall"

	"github.com/berthnet/berth/wire"
)

// Protocol is a transport protocol number whose ports a Manager manages.
type Protocol uint8

// The protocols a Manager serves; the values are the IP protocol numbers (IANA).
const (
	TCP Protocol = Protocol(wire.ProtoTCP) // only listeners receive through the bind table; Connect shares ephemeral ports (RFC 6056)
	UDP Protocol = Protocol(wire.ProtoUDP) // any bound socket receives; Connect takes a port of its own (Linux autobind)
)

// String returns "tcp", "udp", or "proto-N" for any other number.
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "proto-" + strconv.Itoa(int(p))
}

// Range is an inclusive range of ports; Low > High is empty (SetConfig rejects it).
type Range struct {
	Low  Port // first port of the range
	High Port // last port of the range, included
}

// Contains reports whether p lies in r.
func (r Range) Contains(p Port) bool { return r.Low <= p && p <= r.High }

// DefaultLocalPortRange is IANA's dynamic (ephemeral) range, RFC 6335 §6.
var DefaultLocalPortRange = Range{49152, 65535}

// LinuxLocalPortRange is Linux's default net.ipv4.ip_local_port_range.
var LinuxLocalPortRange = Range{32768, 60999}

// DefaultUnprivilegedPortStart is Linux's default net.ipv4.ip_unprivileged_port_start.
const DefaultUnprivilegedPortStart Port = 1024

// Config holds a Manager's settings, named after the Linux sysctls they mirror.
type Config struct {
	// LocalPortRange is net.ipv4.ip_local_port_range: where ephemeral ports come from.
	// Zero value: IANA's dynamic range 49152–65535 (RFC 6335 §6).
	LocalPortRange Range
	// UnprivilegedPortStart is net.ipv4.ip_unprivileged_port_start: binding below it needs
	// BindOptions.Privileged. The zero value means the default, 1024, so 0 cannot say
	// "no privileged ports": NoPrivilegedPorts does.
	UnprivilegedPortStart Port
	// NoPrivilegedPorts lets every port be bound without BindOptions.Privileged (Linux's
	// ip_unprivileged_port_start=0); it overrides UnprivilegedPortStart.
	NoPrivilegedPorts bool
	// ReservedPorts is net.ipv4.ip_local_reserved_ports: never chosen as ephemeral ports
	// (an explicit bind may still use them).
	ReservedPorts []Range
	// Secret keys the RFC 6056 hash; zero means a random key.
	Secret [16]byte
	// TupleReclaimable, when set, is asked about an owner holding a 4-tuple that Connect
	// wants: true lets Connect take the 4-tuple over (TCP uses it to reuse TIME-WAIT
	// entries safely). The callback must tear down the old owner itself.
	//
	// The Manager calls it without holding its lock (the callback may call Release on the
	// old binding); when it returns true and the 4-tuple is still held by the same binding,
	// the Manager removes that binding itself (a later Release of it is a no-op).
	TupleReclaimable func(owner any) bool
}

// bitmap has one bit per port.
type bitmap [1024]uint64

func (b *bitmap) set(p Port, v bool) {
	if v {
		b[p>>6] |= 1 << (p & 63)
	} else {
		b[p>>6] &^= 1 << (p & 63)
	}
}
func (b *bitmap) get(p Port) bool { return b[p>>6]&(1<<(p&63)) != 0 }

// Manager owns every port binding of one transport protocol on one stack: the bind table
// keyed by (local address, port), the table of connected 4-tuples, ephemeral port
// selection (with an index of the ports in use toward each destination), and the
// demultiplexing lookup. It is safe for concurrent use: one RWMutex guards it
// all, and the calls that change nothing (Lookup, LookupAll, Config, Len, the Binding
// getters) take it for reading.
type Manager struct {
	proto Protocol

	mu    sync.RWMutex
	cfg   Config
	k0    uint64 // SipHash key (from cfg.Secret)
	k1    uint64
	ports map[Port]*portEntry
	bound map[epKey]*group
	conns connTable
	dests destTable // TCP: ports in use toward each destination (dest.go)
	n     int       // live bindings

	// Emptied port entries and groups, kept (with their slices' capacity) for the next
	// bind or connect: a connect-release or bind-release cycle then allocates only the
	// Binding.
	freeEntries []*portEntry
	freeGroups  []*group

	// demux is Lookup's per-port index (demuxBlock); demuxUsed counts each block's used
	// slots so that an emptied block goes (to freeBlocks, for the next connect or bind).
	demux      [1024]*demuxBlock
	demuxUsed  [1024]uint16
	freeBlocks []*demuxBlock
	// connPorts marks the ports with 4-tuples (demuxSlot.conns > 0). Lookup tests it before
	// probing the 4-tuple map: 8 KiB, so it stays in the cache, and a lookup of a connected
	// flow does not pay a miss on the slot first.
	connPorts bitmap

	busyBind  bitmap // ports with explicit binds: never chosen by Connect
	busyAny   bitmap // ports with any binding: never chosen by bind(0) / UDP autobind
	reserved  bitmap // ip_local_reserved_ports
	perturb   [perturbSize]uint32
	rng       *rand.Rand
	reuseSeed uint64

	// freeAny counts, by absolute parity, the ports of the range that bind(0) may pick
	// (neither in busyAny nor reserved). bind(0) fills its preferred parity first, so past
	// half occupancy that parity is often full: the count lets pickFree skip it instead of
	// sweeping the whole bitmap, and answer EADDRNOTAVAIL at once when both are zero.
	freeAny [2]int
	// rangeParity counts the ports of the range by absolute parity: a destination holding
	// all of one parity (destEntry.np) has nothing free in it.
	rangeParity [2]uint32
}

// NewManager returns a Manager for proto with cfg (zero fields take their defaults). It
// panics on a configuration that SetConfig rejects (an inverted range, or one holding port
// 0), as regexp.MustCompile does: that is a programming error.
func NewManager(proto Protocol, cfg Config) *Manager {
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	m := &Manager{
		proto: proto,
		ports: make(map[Port]*portEntry),
		bound: make(map[epKey]*group),
		conns: connTable{v4: make(map[tuple4]connEntry), v6: make(map[tupleKey]connEntry)},
		rng:   rand.New(rand.NewChaCha8(seed)),
	}
	m.dests.reset()
	m.reuseSeed = m.rng.Uint64()
	if err := m.setConfigLocked(cfg); err != nil {
		panic("ports: NewManager: invalid config: " + err.Error())
	}
	return m
}

// Config returns the current settings, with defaults filled in (LocalPortRange,
// UnprivilegedPortStart and the Secret in use); SetConfig replaces them (existing bindings
// stay).
func (m *Manager) Config() Config {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := m.cfg
	c.ReservedPorts = append([]Range(nil), c.ReservedPorts...)
	return c
}

// SetConfig replaces the settings; it fails with EINVAL on an empty or inverted range.
func (m *Manager) SetConfig(cfg Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.setConfigLocked(cfg)
}

func (m *Manager) setConfigLocked(cfg Config) error {
	if cfg.LocalPortRange == (Range{}) {
		cfg.LocalPortRange = DefaultLocalPortRange
	}
	r := cfg.LocalPortRange
	if r.Low == 0 || r.Low > r.High {
		return syscall.EINVAL
	}
	for _, rr := range cfg.ReservedPorts {
		if rr.Low > rr.High {
			return syscall.EINVAL
		}
	}
	if cfg.UnprivilegedPortStart == 0 {
		cfg.UnprivilegedPortStart = DefaultUnprivilegedPortStart
	}
	if cfg.Secret == ([16]byte{}) {
		if m.cfg.Secret != ([16]byte{}) {
			cfg.Secret = m.cfg.Secret // keep the key: changing it reshuffles nothing useful
		} else {
			_, _ = crand.Read(cfg.Secret[:])
		}
	}
	cfg.ReservedPorts = append([]Range(nil), cfg.ReservedPorts...)
	m.cfg = cfg
	m.k0 = binary.LittleEndian.Uint64(cfg.Secret[:8])
	m.k1 = binary.LittleEndian.Uint64(cfg.Secret[8:])
	m.reserved = bitmap{}
	for _, rr := range cfg.ReservedPorts {
		for p := int(rr.Low); p <= int(rr.High); p++ {
			m.reserved.set(Port(p), true)
		}
	}
	m.freeAny = [2]int{}
	m.rangeParity = [2]uint32{}
	for p := int(r.Low); p <= int(r.High); p++ {
		m.rangeParity[p&1]++
		if !m.busyAny.get(Port(p)) && !m.reserved.get(Port(p)) {
			m.freeAny[p&1]++
		}
	}
	m.rebuildDests() // the index covers the range only
	return nil
}

// Len reports the number of live bindings (bound plus connected).
func (m *Manager) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.n
}

// takeFree pops an object off a free list (Manager.freeEntries, freeGroups, freeBlocks),
// or makes a new one when the list is empty.
func takeFree[T any](list *[]*T) *T {
	l := *list
	if n := len(l); n > 0 {
		x := l[n-1]
		l[n-1] = nil
		*list = l[:n-1]
		return x
	}
	return new(T)
}

// getOrTake returns tbl[k], storing there first an object from the free list (or a new
// one) if k has none.
func getOrTake[K comparable, T any](tbl map[K]*T, k K, free *[]*T) *T {
	x := tbl[k]
	if x == nil {
		x = takeFree(free)
		tbl[k] = x
	}
	return x
}

// Binding is one entry in a Manager: a bound (address, port), and once connected, its
// remote end.
type Binding struct {
	m      *Manager
	local  netip.AddrPort
	remote netip.AddrPort
	owner  any
	opts   BindOptions

	inTable   bool // in m.ports[port].owners (takes part in bind conflicts)
	explicit  bool // counted in portEntry.explicit
	inGroup   bool // in m.bound (unconnected, receives by (addr, port))
	connected bool // in m.conns
	counted   bool // counted in portEntry.conns (Register)
	released  bool
}

// Local returns the bound local address and port.
func (b *Binding) Local() netip.AddrPort {
	b.m.mu.RLock()
	defer b.m.mu.RUnlock()
	return b.local
}

// Remote returns the remote end, or the zero AddrPort while unconnected.
func (b *Binding) Remote() netip.AddrPort {
	b.m.mu.RLock()
	defer b.m.mu.RUnlock()
	return b.remote
}

// Owner returns the socket the binding belongs to: what Lookup answers for it.
func (b *Binding) Owner() any {
	b.m.mu.RLock()
	defer b.m.mu.RUnlock()
	return b.owner
}

// SetOwner makes o the binding's owner: Lookup answers o for its packets from now on (TCP
// hands a 4-tuple from a connection to its TIME-WAIT record). It is cheap on a connected
// binding; on a bound one it rebuilds the port's demux slot, which holds a copy.
func (b *Binding) SetOwner(o any) {
	m := b.m
	m.mu.Lock()
	b.owner = o
	if b.connected && m.conns.get(b.local, b.remote) == b {
		m.conns.set(b.local, b.remote, b)
	}
	if b.inGroup {
		m.rebuildDemux(Port(b.local.Port())) // the slot holds a copy of the owner
	}
	m.mu.Unlock()
}

// Options returns the binding's socket options.
func (b *Binding) Options() BindOptions {
	b.m.mu.RLock()
	defer b.m.mu.RUnlock()
	return b.opts
}

// Release removes the binding; releasing twice is a no-op.
func (b *Binding) Release() {
	m := b.m
	m.mu.Lock()
	m.releaseLocked(b)
	m.mu.Unlock()
}

func (m *Manager) releaseLocked(b *Binding) {
	if b.released {
		return
	}
	b.released = true
	m.n--
	port := Port(b.local.Port())
	if b.connected {
		if m.conns.get(b.local, b.remote) == b {
			m.delConn(b.local, b.remote)
		}
		b.connected = false
	}
	if b.inGroup {
		m.setGrouped(b, false)
	}
	e := m.ports[port]
	if e == nil {
		return
	}
	if b.inTable {
		for i, o := range e.owners {
			if o == b {
				last := len(e.owners) - 1
				e.owners[i] = e.owners[last]
				e.owners[last] = nil
				e.owners = e.owners[:last]
				break
			}
		}
		b.inTable = false
		if b.explicit {
			e.explicit--
			b.explicit = false
		}
	}
	if b.counted {
		e.conns--
		b.counted = false
	}
	m.updatePort(port, e)
}
