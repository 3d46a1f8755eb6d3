package ports

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"syscall"

	"github.com/berthnet/berth/wire"
)

// Protocol is a transport protocol number whose ports a Manager manages.
type Protocol uint8

const (
	TCP Protocol = Protocol(wire.ProtoTCP)
	UDP Protocol = Protocol(wire.ProtoUDP)
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "proto-" + itoa(int(p))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// Range is an inclusive range of ports.
type Range struct{ Low, High Port }

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
	// BindOptions.Privileged. Zero value means the default, 1024; use a pointer-free
	// sentinel: set NoPrivilegedPorts to allow every port.
	UnprivilegedPortStart Port
	NoPrivilegedPorts     bool
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

// BindOptions are the socket options that decide whether binds may share a port.
type BindOptions struct {
	ReuseAddr  bool   // SO_REUSEADDR
	ReusePort  bool   // SO_REUSEPORT
	V6Only     bool   // IPV6_V6ONLY: a "::" bind does not also hold the IPv4 port
	Privileged bool   // CAP_NET_BIND_SERVICE: may bind below UnprivilegedPortStart
	UID        uint32 // SO_REUSEPORT groups only form between sockets of the same user
	// Listening marks a TCP listener (Linux lets SO_REUSEADDR sockets share a port only
	// while none of them listens). Update it with Binding.SetListening.
	Listening bool
}

// perturbSize is the size of RFC 6056 Algorithm 4's table of perturbation counters. Linux
// uses 2^16 entries (since 5.18, against device tracking through shared counters); 2^12
// keeps a Manager at 16 KiB while still spreading destinations widely.
const perturbSize = 1 << 12

// key kinds: a bound (address, port) entry, or the IPv4 view of a dual-stack "::" socket.
const (
	kindAddr uint8 = iota
	kindDual
)

// epKey is a fixed-size, comparable (address, port) key. IPv4 addresses are stored in
// their IPv4-mapped 16-byte form, so 0.0.0.0 and :: are different keys.
type epKey struct {
	a    [16]byte
	port Port
	kind uint8
}

// tupleKey is a connected 4-tuple.
type tupleKey struct {
	la, ra [16]byte
	lp, rp Port
}

func mkTuple(local, remote netip.AddrPort) tupleKey {
	return tupleKey{la: local.Addr().As16(), ra: remote.Addr().As16(), lp: Port(local.Port()), rp: Port(remote.Port())}
}

// tuple4 is an IPv4 4-tuple: 12 bytes, a third of tupleKey, so the IPv4 table is smaller
// and hashes faster.
type tuple4 struct {
	la, ra [4]byte
	lp, rp uint16
}

// connTable holds the connected 4-tuples, IPv4 and IPv6 apart. Both ends of a 4-tuple are
// of one family (Connect and Register check it). Entries carry a copy of the owner so that
// Lookup does not touch the Binding (one cache miss less with many connections); SetOwner
// keeps the copy current.
type connTable struct {
	v4 map[tuple4]connEntry
	v6 map[tupleKey]connEntry
}

type connEntry struct {
	owner any
	b     *Binding
}

func (t *connTable) get(l, r netip.AddrPort) *Binding {
	if l.Addr().Is4() {
		if !r.Addr().Is4() {
			return nil
		}
		return t.v4[tuple4{l.Addr().As4(), r.Addr().As4(), l.Port(), r.Port()}].b
	}
	return t.v6[mkTuple(l, r)].b
}

// set stores b under (l, r) with b's current owner.
func (t *connTable) set(l, r netip.AddrPort, b *Binding) {
	e := connEntry{b.owner, b}
	if l.Addr().Is4() {
		t.v4[tuple4{l.Addr().As4(), r.Addr().As4(), l.Port(), r.Port()}] = e
		return
	}
	t.v6[mkTuple(l, r)] = e
}

func (t *connTable) del(l, r netip.AddrPort) {
	if l.Addr().Is4() {
		delete(t.v4, tuple4{l.Addr().As4(), r.Addr().As4(), l.Port(), r.Port()})
		return
	}
	delete(t.v6, mkTuple(l, r))
}

// group is every unconnected binding on one (address, port), in bind order, and the members
// that receive packets (recv): one socket, or a SO_REUSEPORT group.
type group struct {
	members []*Binding
	recv    []*Binding
}

// portEntry is the bind-table bucket of one port (Linux's inet_bind_bucket): every binding
// that takes part in bind conflicts on it.
type portEntry struct {
	owners   []*Binding // explicit binds, autobinds and connect-time ephemeral users
	explicit int        // owners that came from Bind (or UDP autobind): Connect skips the port
	conns    int        // Register'd 4-tuples on the port (they make it "used" for bind(0))
}

func (e *portEntry) empty() bool { return len(e.owners) == 0 && e.conns == 0 }

// demuxInline is how many IPv4 receiving groups a demuxSlot holds itself: two covers one
// socket per port, a socket plus a wildcard one, or a port bound on two addresses.
const demuxInline = 2

// demuxSlot is what Lookup reads about the unconnected bindings of one local port, in one
// 64-byte cache line: when the port has at most demuxInline IPv4 (address, port) groups
// with one receiver each, their addresses and owners, so an IPv4 lookup of an unconnected
// socket reads this line and nothing else (Manager.connPorts, in the cache, says first
// whether the port has 4-tuples to probe). Otherwise slow sends IPv4 lookups to the bind-table map,
// which also serves SO_REUSEPORT groups (pick) and every IPv6 lookup (v6 says whether the
// port has IPv6 groups at all). rebuildDemux rewrites it whenever the port's groups, their
// receivers or an owner change.
type demuxSlot struct {
	conns uint32 // 4-tuples in m.conns with this local port (connPorts: conns > 0)
	bound bool   // the port has unconnected bound bindings (groups)
	slow  bool
	v6    bool
	n     uint8
	v4    [demuxInline]demuxEntry
	_     [8]byte // pad to 64 bytes: in a demuxBlock no slot straddles two cache lines
}

func (s *demuxSlot) used() bool { return s.conns > 0 || s.bound }

// demuxBlock holds the slots of 64 consecutive ports: 4 KiB, page-aligned by the
// allocator's size class. Manager.demux indexes blocks by port>>6, so finding a port's slot
// is a load from the 8 KiB top level (hot in the cache) and then the slot's own line: one
// cache miss per lookup whatever the number of bindings, where the maps cost several
// (directory, control word, slot, then the group, its receivers and the Binding). Blocks
// exist only for ranges of ports in use, so an idle Manager costs the 8 KiB top level.
type demuxBlock [64]demuxSlot

// demuxEntry is one IPv4 receiving group of a port: its address and its one receiver.
type demuxEntry struct {
	a     [4]byte
	kind  uint8 // demuxAddr, demuxAny (0.0.0.0) or demuxDual ("::" without V6Only)
	owner any
}

// Lookup's order of preference among a port's IPv4 groups: the packet's own address, then
// 0.0.0.0, then a dual-stack "::".
const (
	demuxAddr uint8 = iota
	demuxAny
	demuxDual
)

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
// selection, and the demultiplexing lookup. It is safe for concurrent use.
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

// Owner returns the socket the binding belongs to; SetOwner changes it (TCP hands a
// 4-tuple from a connection to its TIME-WAIT record).
func (b *Binding) Owner() any {
	b.m.mu.RLock()
	defer b.m.mu.RUnlock()
	return b.owner
}

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

// SetListening marks (or unmarks) the binding as a TCP listener. It does not check the
// reuse rules again; Listen does, as Linux's listen() does.
func (b *Binding) SetListening(v bool) {
	m := b.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.released {
		return
	}
	b.opts.Listening = v
	m.regroup(b)
}

// Listen checks that b may start listening and marks it a listener. On Linux two sockets
// with SO_REUSEADDR may share a port while bound, but the second listen() then fails with
// EADDRINUSE: SO_REUSEADDR never lets two TCP listeners share an address (SO_REUSEPORT does).
func (b *Binding) Listen() error {
	m := b.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.released || b.connected {
		return syscall.EINVAL
	}
	if b.opts.Listening {
		return nil
	}
	opts := b.opts
	opts.Listening = true
	if e := m.ports[Port(b.local.Port())]; e != nil {
		for _, o := range e.owners {
			if o != b && m.conflicts(b.local.Addr(), opts, o) {
				return syscall.EADDRINUSE
			}
		}
	}
	b.opts.Listening = true
	m.regroup(b)
	return nil
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
		m.ungroup(b)
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

// freeListMax bounds Manager.freeEntries and freeGroups.
const freeListMax = 32

func (m *Manager) updatePort(port Port, e *portEntry) {
	if e.empty() {
		delete(m.ports, port)
		if len(m.freeEntries) < freeListMax {
			clear(e.owners[:cap(e.owners)])
			*e = portEntry{owners: e.owners[:0]}
			m.freeEntries = append(m.freeEntries, e)
		}
	}
	m.busyBind.set(port, e.explicit > 0)
	if busy := !e.empty(); busy != m.busyAny.get(port) {
		m.busyAny.set(port, busy)
		if m.cfg.LocalPortRange.Contains(port) && !m.reserved.get(port) {
			if busy {
				m.freeAny[port&1]--
			} else {
				m.freeAny[port&1]++
			}
		}
	}
}

func (m *Manager) entry(port Port) *portEntry {
	e := m.ports[port]
	if e == nil {
		if k := len(m.freeEntries); k > 0 {
			e = m.freeEntries[k-1]
			m.freeEntries[k-1] = nil
			m.freeEntries = m.freeEntries[:k-1]
		} else {
			e = &portEntry{}
		}
		m.ports[port] = e
	}
	return e
}

// groupKeys returns the demux keys under which an unconnected binding receives: its own
// (address, port), and for a dual-stack "::" socket also the IPv4 view.
func groupKeys(b *Binding) (k epKey, dual epKey, hasDual bool) {
	a := b.local.Addr()
	k = epKey{a: a.As16(), port: Port(b.local.Port())}
	if a.Is6() && a.IsUnspecified() && !b.opts.V6Only {
		dual = epKey{port: Port(b.local.Port()), kind: kindDual}
		hasDual = true
	}
	return
}

func (m *Manager) group(b *Binding) {
	k, d, hasDual := groupKeys(b)
	m.addTo(k, b)
	if hasDual {
		m.addTo(d, b)
	}
	b.inGroup = true
	m.rebuildDemux(Port(b.local.Port()))
}

func (m *Manager) addTo(k epKey, b *Binding) {
	g := m.bound[k]
	if g == nil {
		if n := len(m.freeGroups); n > 0 {
			g = m.freeGroups[n-1]
			m.freeGroups[n-1] = nil
			m.freeGroups = m.freeGroups[:n-1]
		} else {
			g = &group{}
		}
		m.bound[k] = g
	}
	g.members = append(g.members, b)
	m.recompute(g)
}

func (m *Manager) ungroup(b *Binding) {
	k, d, hasDual := groupKeys(b)
	m.removeFrom(k, b)
	if hasDual {
		m.removeFrom(d, b)
	}
	b.inGroup = false
	m.rebuildDemux(Port(b.local.Port()))
}

func (m *Manager) removeFrom(k epKey, b *Binding) {
	g := m.bound[k]
	if g == nil {
		return
	}
	for i, o := range g.members {
		if o == b {
			last := len(g.members) - 1
			copy(g.members[i:], g.members[i+1:])
			g.members[last] = nil // no stale pointer keeping a released Binding alive
			g.members = g.members[:last]
			break
		}
	}
	if len(g.members) == 0 {
		delete(m.bound, k)
		if len(m.freeGroups) < freeListMax {
			clear(g.recv[:cap(g.recv)])
			g.recv = g.recv[:0]
			m.freeGroups = append(m.freeGroups, g)
		}
		return
	}
	m.recompute(g)
}

// regroup recomputes the receivers of b's groups after its options changed.
func (m *Manager) regroup(b *Binding) {
	if !b.inGroup {
		return
	}
	k, d, hasDual := groupKeys(b)
	if g := m.bound[k]; g != nil {
		m.recompute(g)
	}
	if hasDual {
		if g := m.bound[d]; g != nil {
			m.recompute(g)
		}
	}
	m.rebuildDemux(Port(b.local.Port()))
}

// slot returns port's demuxSlot, allocating its block if needed. The caller changes it and
// then calls slotDone with what used() reported before.
func (m *Manager) slot(port Port) *demuxSlot {
	blk := m.demux[port>>6]
	if blk == nil {
		if n := len(m.freeBlocks); n > 0 {
			blk = m.freeBlocks[n-1]
			m.freeBlocks[n-1] = nil
			m.freeBlocks = m.freeBlocks[:n-1]
		} else {
			blk = new(demuxBlock)
		}
		m.demux[port>>6] = blk
	}
	return &blk[port&63]
}

// freeBlocksMax bounds Manager.freeBlocks (4 KiB each).
const freeBlocksMax = 4

// slotDone keeps the count of used slots per block after port's slot changed, and drops a
// block that no port uses any more.
func (m *Manager) slotDone(port Port, wasUsed bool) {
	i := port >> 6
	blk := m.demux[i]
	switch now := blk[port&63].used(); {
	case now && !wasUsed:
		m.demuxUsed[i]++
	case !now && wasUsed:
		m.demuxUsed[i]--
	}
	if m.demuxUsed[i] == 0 {
		m.demux[i] = nil
		if len(m.freeBlocks) < freeBlocksMax {
			*blk = demuxBlock{}
			m.freeBlocks = append(m.freeBlocks, blk)
		}
	}
}

// rebuildDemux recomputes port's demuxSlot from the bind table: the distinct groups of the
// port's grouped bindings and their receivers. It costs O(bindings on the port), paid by
// bind, release, listen and SetOwner so that Lookup pays nothing.
func (m *Manager) rebuildDemux(port Port) {
	s := m.slot(port)
	was := s.used()
	*s = demuxSlot{conns: s.conns}
	if e := m.ports[port]; e != nil {
		for _, o := range e.owners {
			if !o.inGroup {
				continue
			}
			s.bound = true
			k, dk, hasDual := groupKeys(o)
			a := o.local.Addr()
			switch {
			case a.Is6():
				s.v6 = true
			case a.IsUnspecified():
				m.slotAdd(s, k, [4]byte{}, demuxAny)
			default:
				m.slotAdd(s, k, a.As4(), demuxAddr)
			}
			if hasDual {
				m.slotAdd(s, dk, [4]byte{}, demuxDual)
			}
		}
	}
	m.slotDone(port, was)
}

// slotAdd records the IPv4 group k (address a, of the given kind) in s, once.
func (m *Manager) slotAdd(s *demuxSlot, k epKey, a [4]byte, kind uint8) {
	for i := range s.n {
		if e := &s.v4[i]; e.a == a && e.kind == kind {
			return
		}
	}
	g := m.bound[k]
	if g == nil || len(g.recv) == 0 {
		return // no receiver (a TCP socket that does not listen): Lookup skips it too
	}
	if len(g.recv) > 1 || int(s.n) == len(s.v4) {
		s.slow = true // a SO_REUSEPORT group (pick hashes the 4-tuple) or too many groups
		return
	}
	s.v4[s.n] = demuxEntry{a: a, kind: kind, owner: g.recv[0].owner}
	s.n++
}

// recompute decides who receives unicast packets for a group. For TCP only listeners get
// packets through the bind table (a bound, non-listening socket gets nothing: RST). The
// newest eligible member receives (Linux UDP with SO_REUSEADDR: the last bound socket wins);
// if it is in a SO_REUSEPORT group, every eligible SO_REUSEPORT member of the same UID
// shares the traffic by a hash of the 4-tuple.
func (m *Manager) recompute(g *group) {
	clear(g.recv)
	g.recv = g.recv[:0]
	var last *Binding
	for i := len(g.members) - 1; i >= 0; i-- {
		o := g.members[i]
		if m.proto == TCP && !o.opts.Listening {
			continue
		}
		last = o
		break
	}
	if last == nil {
		return
	}
	if !last.opts.ReusePort {
		g.recv = append(g.recv, last)
		return
	}
	for _, o := range g.members {
		if m.proto == TCP && !o.opts.Listening {
			continue
		}
		if o.opts.ReusePort && o.opts.UID == last.opts.UID {
			g.recv = append(g.recv, o)
		}
	}
}

// overlap reports whether binds on addresses a and b (same port) compete for packets:
// equal addresses, 0.0.0.0 against any IPv4 address, "::" against any IPv6 address, and a
// dual-stack "::" (not v6only) against IPv4 addresses too.
func overlap(a netip.Addr, aV6Only bool, b netip.Addr, bV6Only bool) bool {
	if a == b {
		return true
	}
	if a.Is4() == b.Is4() {
		return a.IsUnspecified() || b.IsUnspecified()
	}
	// Different families: only a dual-stack "::" covers IPv4.
	if a.Is6() {
		return a.IsUnspecified() && !aV6Only
	}
	return b.IsUnspecified() && !bV6Only
}

// conflicts reports whether a new bind of addr with opts may not share its port with the
// existing binding o (Linux inet_bind_conflict / inet_csk_bind_conflict):
//   - addresses that do not overlap never conflict;
//   - SO_REUSEADDR on both: no conflict, unless (TCP) the existing one is a listener;
//   - SO_REUSEPORT on both with the same UID: no conflict (a reuseport group);
//   - anything else conflicts.
func (m *Manager) conflicts(addr netip.Addr, opts BindOptions, o *Binding) bool {
	if !overlap(addr, opts.V6Only, o.local.Addr(), o.opts.V6Only) {
		return false
	}
	// Linux looks only at whether the existing socket listens: bind happens before listen,
	// and listen() re-runs this check (Binding.Listen) when the others are listening.
	if opts.ReuseAddr && o.opts.ReuseAddr && (m.proto != TCP || !o.opts.Listening) {
		return false
	}
	if opts.ReusePort && o.opts.ReusePort && opts.UID == o.opts.UID {
		return false
	}
	return true
}

// Bind reserves local (address and port) for owner. Port 0 picks a free port at random from
// LocalPortRange (bind(0)). Errors are syscall errnos: EADDRINUSE, EACCES (below the
// privileged floor without Privileged), EADDRNOTAVAIL (no free port). A zero (invalid)
// address binds "::", like ":80" in Go's net.Listen; IPv4-mapped addresses are unmapped.
//
// bind(0) picks a port no binding of this Manager uses at all, starting at a random point
// of the range and preferring ports of the parity opposite to Connect's (as Linux does);
// reserved ports are skipped.
func (m *Manager) Bind(local netip.AddrPort, opts BindOptions, owner any) (*Binding, error) {
	addr := local.Addr().Unmap()
	if !addr.IsValid() {
		// No address at all (":80") means every address, as in Go's net.Listen: "::",
		// dual-stack unless V6Only.
		addr = netip.IPv6Unspecified()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	port := Port(local.Port())
	if port == 0 {
		p, ok := m.pickFree(m.rng.Uint32(), 1)
		if !ok {
			return nil, syscall.EADDRNOTAVAIL
		}
		port = p
	} else {
		if !m.cfg.NoPrivilegedPorts && port < m.cfg.UnprivilegedPortStart && !opts.Privileged {
			return nil, syscall.EACCES
		}
		if e := m.ports[port]; e != nil {
			for _, o := range e.owners {
				if m.conflicts(addr, opts, o) {
					return nil, syscall.EADDRINUSE
				}
			}
		}
	}
	b := &Binding{m: m, local: netip.AddrPortFrom(addr, uint16(port)), owner: owner, opts: opts}
	m.addOwner(b, true)
	m.group(b)
	m.n++
	return b, nil
}

func (m *Manager) addOwner(b *Binding, explicit bool) {
	port := Port(b.local.Port())
	e := m.entry(port)
	e.owners = append(e.owners, b)
	b.inTable = true
	if explicit {
		e.explicit++
		b.explicit = true
	}
	m.updatePort(port, e)
}

// pickFree returns a port of the local range that no binding uses and that is not reserved,
// starting at offset (mod the range size). parity 1 prefers ports whose distance from the
// range's low end is odd, 0 even; the other parity is tried next.
func (m *Manager) pickFree(offset uint32, parity uint32) (Port, bool) {
	r := m.cfg.LocalPortRange
	n := uint32(r.High-r.Low) + 1
	start := offset % n
	for pass := 0; pass < 2; pass++ {
		want := (uint32(r.Low) + parity) & 1 // absolute parity of the ports wanted
		if n == 1 {
			want = uint32(r.Low) & 1
		}
		if m.freeAny[want] > 0 { // else nothing of this parity is free: skip the sweep
			if p, ok := m.scan(r, Port(uint32(r.Low)+start), want, &m.busyAny, nil); ok {
				return p, true
			}
		}
		if n == 1 {
			break
		}
		parity ^= 1
	}
	return 0, false
}

// parityMask selects the bits of a bitmap word whose port has absolute parity want.
func parityMask(want uint32) uint64 {
	if want == 0 {
		return 0x5555555555555555
	}
	return 0xaaaaaaaaaaaaaaaa
}

// scan finds the first port of absolute parity want, from `from` up to r.High and then
// wrapping from r.Low, that is neither reserved nor marked in busy nor in extra (a
// destination's bitmap over r, destEntry.bits; nil for none). It looks at 64 ports at a
// time, so a nearly full range costs a few word operations per 64 ports, not a probe per
// port.
func (m *Manager) scan(r Range, from Port, want uint32, busy *bitmap, extra []uint64) (Port, bool) {
	if p, ok := m.scanSpan(r, from, r.High, want, busy, extra); ok {
		return p, true
	}
	if from > r.Low {
		return m.scanSpan(r, r.Low, from-1, want, busy, extra)
	}
	return 0, false
}

func (m *Manager) scanSpan(r Range, lo, hi Port, want uint32, busy *bitmap, extra []uint64) (Port, bool) {
	pm := parityMask(want)
	wlo, whi := int(lo>>6), int(hi>>6)
	head := ^uint64(0) << (lo & 63)    // ports >= lo in the first word
	tail := ^uint64(0) >> (63 - hi&63) // ports <= hi in the last word
	bs := busy[wlo : whi+1]
	rs := m.reserved[wlo : whi+1]
	var ex []uint64
	if extra != nil {
		base := int(r.Low >> 6)
		ex = extra[wlo-base : whi-base+1]
	}
	// The loop is the whole cost in a nearly full range: keep it to a few word operations
	// and only look at the edges once a word has a candidate.
	for i, bw := range bs {
		free := ^(bw | rs[i]) & pm
		if ex != nil {
			free &^= ex[i]
		}
		if free == 0 {
			continue
		}
		if i == 0 {
			free &= head
		}
		if i == len(bs)-1 {
			free &= tail
		}
		if free != 0 {
			return Port((wlo+i)<<6 + bits.TrailingZeros64(free)), true
		}
	}
	return 0, false
}

// Connect gives a socket its remote end and registers the 4-tuple.
//
// With b == nil the socket was not bound: Connect picks the local port — for TCP by RFC 6056
// Algorithm 4 (a keyed hash of (local addr, remote addr, remote port) plus a table of
// perturbation counters), so one ephemeral port may serve many different destinations while
// every 4-tuple stays unique; for UDP an exclusive port at random, as Linux's autobind does.
// local must then be a concrete address (the route's source address).
// With b != nil (bound earlier), b's port is kept; a wildcard address in b is replaced by
// local. The returned Binding is b itself in that case.
// Errors: EADDRNOTAVAIL when no port (or no unique 4-tuple) is left — at once, never a hang;
// EADDRINUSE when b's 4-tuple is taken.
func (m *Manager) Connect(b *Binding, local netip.Addr, remote netip.AddrPort, owner any) (*Binding, error) {
	local = local.Unmap()
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !remote.Addr().IsValid() || remote.Port() == 0 {
		return nil, syscall.EINVAL
	}
	if b != nil {
		return m.connectBound(b, local, remote, owner)
	}
	if !local.IsValid() || local.IsUnspecified() || local.Is4() != remote.Addr().Is4() {
		return nil, syscall.EINVAL
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proto != TCP {
		// Linux autobind: an exclusive port at random, then connected.
		p, ok := m.pickFree(m.rng.Uint32(), 1)
		if !ok {
			return nil, syscall.EADDRNOTAVAIL
		}
		nb := &Binding{m: m, local: netip.AddrPortFrom(local, uint16(p)), remote: remote, owner: owner}
		m.addOwner(nb, true)
		m.addConn(nb.local, remote, nb)
		nb.connected = true
		m.n++
		return nb, nil
	}
	return m.connectAlg4(local, remote, owner)
}

// connectAlg4 is RFC 6056 §3.3.4 (Algorithm 4, "double-hash port selection") as Linux's
// __inet_hash_connect implements it:
//
//	offset = F(local, remote, rport, secret) + table[G(local, remote, rport, secret)]
//
// then walk the range from offset, trying ports of one parity first (bind(0) prefers the
// other), skipping reserved ports and ports held by explicit binds; a port that only
// connected sockets use is fine when the 4-tuple is unique. Afterwards the counter
// table[G] advances by the distance walked plus 2, so the next connection to the same
// destination gets a new port, while destinations with other G values are unaffected
// (no global counter leaking connection rates).
//
// The walk skips the ports that already carry a 4-tuple toward this destination with the
// destination index (dest.go), 64 ports per step once the destination has many
// connections, so a nearly full range costs word operations rather than a 4-tuple lookup
// per port. A free port is preferred to taking over a 4-tuple through TupleReclaimable
// (TCP's TIME-WAIT reuse): a fresh 4-tuple cannot meet old duplicates, and Linux by default
// reuses TIME-WAIT 4-tuples only on loopback (tcp_tw_reuse=2). Only when no port is free
// does Connect walk again, asking about each holder in walk order.
func (m *Manager) connectAlg4(local netip.Addr, remote netip.AddrPort, owner any) (*Binding, error) {
	r := m.cfg.LocalPortRange
	n := uint32(r.High-r.Low) + 1
	h := m.hash3(local, remote)
	idx := uint32(h) & (perturbSize - 1) // G
	offset := (uint32(h>>32) + m.perturb[idx]) % n
	if n > 1 {
		offset &^= 1
	}
	dst := m.dests.get(local, remote)
	passes := uint32(2)
	if n == 1 {
		passes = 1
	}
	// Pass 1 walks the other parity from the next port. The parity is absolute (the
	// bitmaps' masks): with an odd-sized range, offset n-1 wraps to 0, which has the same
	// parity as n-1, so deriving it from the wrapped start would walk one parity twice and
	// report EADDRNOTAVAIL with the other half of the range free.
	want0 := (uint32(r.Low) + offset) & 1
	for pass := uint32(0); pass < passes; pass++ {
		o := offset + pass
		if o >= n {
			o -= n
		}
		if p, walked, ok := m.walkFree(r, n, o, want0^pass, &dst); ok {
			return m.connectOn(local, remote, owner, p, walked, idx), nil
		}
	}
	if m.cfg.TupleReclaimable == nil || dst.n == 0 {
		return nil, syscall.EADDRNOTAVAIL // no port free, and no 4-tuple to take over
	}
	for pass := uint32(0); pass < passes; pass++ {
		o := offset + pass
		if o >= n {
			o -= n
		}
		want := want0 ^ pass
		cur := Port(uint32(r.Low) + o)
		walked := uint32(0)
		for walked < n {
			p, ok := m.scan(r, cur, want, &m.busyBind, nil)
			if !ok {
				break
			}
			d := (uint32(p) + n - uint32(r.Low) - o) % n // distance from the start
			if d < walked {
				break // wrapped round to ports already tried
			}
			walked = d
			got, err := m.takeTuple(netip.AddrPortFrom(local, uint16(p)), remote)
			if err != nil {
				return nil, err
			}
			// The lock was dropped while asking TupleReclaimable: someone may have bound
			// the port meanwhile.
			if got && !m.busyBind.get(p) && !m.reserved.get(p) {
				return m.connectOn(local, remote, owner, p, walked, idx), nil
			}
			walked++
			cur = nextPort(r, p)
		}
	}
	return nil, syscall.EADDRNOTAVAIL
}

// walkFree returns the first port of absolute parity want, walking from distance o of the
// range, that no explicit bind holds, is not reserved and carries no 4-tuple toward the
// destination dst; walked is its distance from o.
func (m *Manager) walkFree(r Range, n, o, want uint32, dst *destEntry) (p Port, walked uint32, ok bool) {
	if dst.np[want] == m.rangeParity[want] {
		// Every port of this parity carries a 4-tuple toward the destination (Connect fills
		// one parity first, so past half the range this is the usual case): skip the sweep.
		return 0, 0, false
	}
	cur := Port(uint32(r.Low) + o)
	for {
		p, ok := m.scan(r, cur, want, &m.busyBind, dst.bits)
		if !ok {
			return 0, 0, false
		}
		d := (uint32(p) + n - uint32(r.Low) - o) % n // distance from the start
		if d < walked {
			return 0, 0, false // wrapped round to ports already tried
		}
		if dst.bits != nil || !dst.holds(p, r) {
			return p, d, true
		}
		// One of the few (at most destSmall) ports in the destination's list.
		walked = d + 1
		cur = nextPort(r, p)
	}
}

// connectOn registers the new 4-tuple (local:p, remote), found walked ports from the start
// of the walk, and advances the perturbation counter idx.
func (m *Manager) connectOn(local netip.Addr, remote netip.AddrPort, owner any, p Port, walked, idx uint32) *Binding {
	// Linux adds 2 plus the walk; once in 16 it adds 2 more so that the counters do not
	// advance in lockstep with connection counts.
	inc := walked + 2
	if walked == 0 && m.rng.Uint32N(16) == 0 {
		inc += 2
	}
	m.perturb[idx] += inc
	lap := netip.AddrPortFrom(local, uint16(p))
	nb := &Binding{m: m, local: lap, remote: remote, owner: owner}
	m.addOwner(nb, false)
	m.addConn(lap, remote, nb)
	nb.connected = true
	m.n++
	return nb
}

func nextPort(r Range, p Port) Port {
	if p >= r.High {
		return r.Low
	}
	return p + 1
}

// takeTuple reports whether the 4-tuple (local, remote) is free, asking TupleReclaimable
// (with the lock dropped) about a current holder; a reclaimed holder is removed. m.mu is
// held on entry and on return.
func (m *Manager) takeTuple(local, remote netip.AddrPort) (bool, error) {
	for tries := 0; tries < 4; tries++ {
		old := m.conns.get(local, remote)
		if old == nil {
			return true, nil
		}
		reclaim := m.cfg.TupleReclaimable
		if reclaim == nil {
			return false, nil
		}
		owner := old.owner
		m.mu.Unlock()
		ok := reclaim(owner)
		m.mu.Lock()
		if !ok {
			return false, nil
		}
		if m.conns.get(local, remote) == old {
			m.releaseLocked(old)
		}
	}
	return false, nil
}

func (m *Manager) connectBound(b *Binding, local netip.Addr, remote netip.AddrPort, owner any) (*Binding, error) {
	if b.m != m {
		return nil, syscall.EINVAL
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.released {
		return nil, syscall.EINVAL
	}
	la := b.local.Addr()
	if la.IsUnspecified() {
		switch {
		case !local.IsValid() || local.IsUnspecified():
			return nil, syscall.EINVAL
		case la.Is4() && !local.Is4():
			return nil, syscall.EINVAL
		case la.Is6() && local.Is4() && b.opts.V6Only:
			return nil, syscall.EINVAL
		}
		la = local
	}
	if la.Is4() != remote.Addr().Is4() {
		return nil, syscall.EINVAL
	}
	lap := netip.AddrPortFrom(la, b.local.Port())
	if b.connected && b.local == lap && b.remote == remote {
		b.owner = owner
		m.conns.set(lap, remote, b)
		return b, nil
	}
	ok, err := m.takeTuple(lap, remote)
	if err != nil {
		return nil, err
	}
	if b.released {
		return nil, syscall.EINVAL
	}
	if !ok {
		return nil, syscall.EADDRINUSE
	}
	if b.connected { // reconnect (UDP): drop the old 4-tuple
		m.delConn(b.local, b.remote)
	}
	if b.inGroup {
		m.ungroup(b)
	}
	b.local = lap
	b.remote = remote
	b.owner = owner
	m.addConn(lap, remote, b)
	b.connected = true
	return b, nil
}

// Register adds a connected 4-tuple on a port that is already held (a TCP connection
// accepted by a listener, or a TIME-WAIT entry): no port is allocated and the bind table is
// not consulted. EADDRINUSE if the 4-tuple exists.
//
// Registered 4-tuples make their port "used" for bind(0) but do not make later explicit
// binds of the port fail (as if every such socket had SO_REUSEADDR, which Go's and most
// servers' listeners set): restarting a server while its old connections sit in TIME-WAIT
// works.
func (m *Manager) Register(local, remote netip.AddrPort, owner any) (*Binding, error) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !local.Addr().IsValid() || !remote.Addr().IsValid() || local.Addr().Is4() != remote.Addr().Is4() {
		return nil, syscall.EINVAL
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns.get(local, remote) != nil {
		return nil, syscall.EADDRINUSE
	}
	b := &Binding{m: m, local: local, remote: remote, owner: owner, connected: true, counted: true}
	m.addConn(local, remote, b)
	e := m.entry(Port(local.Port()))
	e.conns++
	m.updatePort(Port(local.Port()), e)
	m.n++
	return b, nil
}

// Lookup demultiplexes an inbound packet addressed to local from remote and returns the
// owner it belongs to: first the exact 4-tuple, then a socket bound to (local address,
// port), then one bound to the wildcard address on that port (for IPv4 packets, a "::"
// socket without V6Only counts). A SO_REUSEPORT group answers with one member chosen by a
// hash of the 4-tuple. Bound sockets that are connected match only their remote. It costs
// O(1) whatever the number of bindings and does not allocate.
//
// The 4-tuple map is probed only when some 4-tuple uses the port (connPorts), and an IPv4
// packet for an unconnected socket is answered from the port's demuxSlot (one cache line,
// found by direct indexing), so with many bindings that case costs one cache miss rather
// than the several of the hash maps.
//
// For TCP only listeners (BindOptions.Listening / SetListening / Listen) are found through
// the bind table; a bound socket that does not listen gets no packets. Addresses must be
// unmapped (IPv4 as 4-byte addresses).
func (m *Manager) Lookup(local, remote netip.AddrPort) (owner any, ok bool) {
	port := Port(local.Port())
	l4 := local.Addr().Is4()
	if l4 != remote.Addr().Is4() {
		return nil, false // mixed families: no socket can match
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	blk := m.demux[port>>6]
	if blk == nil {
		return nil, false // no port of the block is bound or connected
	}
	if m.connPorts.get(port) { // else no 4-tuple uses the port: skip the 4-tuple probe
		if l4 {
			if e, ok := m.conns.v4[tuple4{local.Addr().As4(), remote.Addr().As4(), local.Port(), remote.Port()}]; ok {
				return e.owner, true
			}
		} else if e, ok := m.conns.v6[mkTuple(local, remote)]; ok {
			return e.owner, true
		}
	}
	s := &blk[port&63]
	if !s.bound {
		return nil, false // nothing bound on the port: skip the bind-table probes
	}
	if l4 && !s.slow {
		// The common case: the port's IPv4 receivers are all in s.
		a := local.Addr().As4()
		var wild, dual *demuxEntry
		for i := range s.n {
			e := &s.v4[i]
			switch {
			case e.kind == demuxAddr:
				if e.a == a {
					return e.owner, true
				}
			case e.kind == demuxAny:
				wild = e
			default:
				dual = e
			}
		}
		if wild != nil {
			return wild.owner, true
		}
		if dual != nil {
			return dual.owner, true
		}
		return nil, false
	}
	if !l4 && !s.v6 {
		return nil, false // no IPv6 group on the port
	}
	return m.lookupBound(local, remote)
}

// lookupTables is Lookup without the per-port index (m.demux): the 4-tuple map, then the
// bind-table map. Tests check Lookup against it. m.mu is held.
func (m *Manager) lookupTables(local, remote netip.AddrPort) (owner any, ok bool) {
	if local.Addr().Is4() {
		if e, ok := m.conns.v4[tuple4{local.Addr().As4(), remote.Addr().As4(), local.Port(), remote.Port()}]; ok {
			return e.owner, true
		}
	} else if e, ok := m.conns.v6[mkTuple(local, remote)]; ok {
		return e.owner, true
	}
	return m.lookupBound(local, remote)
}

// lookupBound finds the unconnected receiver of local in the bind-table map: (address,
// port), then the wildcard, then (IPv4) a dual-stack "::". m.mu is held.
func (m *Manager) lookupBound(local, remote netip.AddrPort) (owner any, ok bool) {
	port := Port(local.Port())
	l4 := local.Addr().Is4()
	la := local.Addr().As16()
	k := epKey{a: la, port: port}
	if g := m.bound[k]; g != nil && len(g.recv) > 0 {
		return m.pick(g, local, remote), true
	}
	if l4 {
		k.a = [16]byte{10: 0xff, 11: 0xff} // 0.0.0.0
		if g := m.bound[k]; g != nil && len(g.recv) > 0 {
			return m.pick(g, local, remote), true
		}
		k = epKey{port: port, kind: kindDual}
	} else {
		k.a = [16]byte{} // ::
	}
	if g := m.bound[k]; g != nil && len(g.recv) > 0 {
		return m.pick(g, local, remote), true
	}
	return nil, false
}

func (m *Manager) pick(g *group, local, remote netip.AddrPort) any {
	if len(g.recv) == 1 {
		return g.recv[0].owner
	}
	la, ra := local.Addr().As16(), remote.Addr().As16()
	h := m.reuseSeed ^ uint64(local.Port())<<16 ^ uint64(remote.Port())
	for i := 0; i < 16; i += 8 {
		h = mix(h ^ binary.LittleEndian.Uint64(la[i:]))
		h = mix(h ^ binary.LittleEndian.Uint64(ra[i:]))
	}
	return g.recv[h%uint64(len(g.recv))].owner
}

// mix is a 64-bit finalizer (splitmix64): cheap and well spread, for the SO_REUSEPORT choice.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// LookupAll calls f for every owner bound to local's port that would accept a datagram
// from remote (UDP multicast/broadcast delivery). Unused for unicast. f is called after the
// Manager's lock is released, so it may call back into the Manager.
func (m *Manager) LookupAll(local, remote netip.AddrPort, f func(owner any)) {
	la := local.Addr().Unmap()
	ra := netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	var buf [8]any
	owners := buf[:0]
	m.mu.RLock()
	if e := m.ports[Port(local.Port())]; e != nil {
		for _, o := range e.owners {
			if o.connected && o.remote != ra {
				continue // connected sockets hear only their peer
			}
			oa := o.local.Addr()
			if oa == la || oa.IsUnspecified() && overlap(oa, o.opts.V6Only, la, false) {
				owners = append(owners, o.owner)
			}
		}
	}
	m.mu.RUnlock()
	for _, o := range owners {
		f(o)
	}
}

// hash3 is F and G of RFC 6056 §3.3.4: SipHash-2-4, keyed with the secret, of (local
// address, remote address, remote port). The low bits index the perturbation table (G) and
// the high 32 bits are the offset (F), as Linux derives both from one siphash.
func (m *Manager) hash3(local netip.Addr, remote netip.AddrPort) uint64 {
	var buf [34]byte
	la := local.As16()
	ra := remote.Addr().As16()
	copy(buf[:16], la[:])
	copy(buf[16:32], ra[:])
	binary.BigEndian.PutUint16(buf[32:], uint16(remote.Port()))
	return sipHash24(m.k0, m.k1, buf[:])
}

// sipHash24 is SipHash-2-4 (Aumasson and Bernstein, 2012).
func sipHash24(k0, k1 uint64, p []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	n := len(p)
	for len(p) >= 8 {
		mm := binary.LittleEndian.Uint64(p)
		v3 ^= mm
		round()
		round()
		v0 ^= mm
		p = p[8:]
	}
	var last [8]byte
	copy(last[:], p)
	last[7] = byte(n)
	mm := binary.LittleEndian.Uint64(last[:])
	v3 ^= mm
	round()
	round()
	v0 ^= mm
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}
