// Package tcp is berth's TCP (RFC 9293): the connection state machine with active,
// passive and simultaneous open and close, TIME-WAIT and its safe reuse; retransmission
// (RFC 6298); congestion control behind the CongestionControl interface (CUBIC, RFC 9438,
// with HyStart++, RFC 9406, by default; NewReno, RFC 5681 and RFC 6582, per stack or
// connection; initial window RFC 6928); SYN cookies when the SYN queue overflows
// (syncookie.go); RST and SYN handling hardened by RFC 5961 (challenge
// ACKs rate-limited per socket); initial sequence numbers by RFC 6528; MSS, window scale,
// timestamps with PAWS and RTT measurement (RFC 7323) and SACK (RFC 2018, D-SACK RFC 2883),
// negotiated in sendSYN and negotiate, the one place for options; with SACK, a scoreboard,
// RACK-TLP loss detection (RFC 8985) and RFC 6675 recovery (recovery.go); flow control with
// sender and receiver SWS avoidance, zero-window probing, receive-buffer auto-tuning, and
// reassembly in the receive buffer itself under a stack-wide out-of-order cap; path MTU
// from ICMP; super-segments on GSO links (transport.GSONetwork).
//
// TCP never picks ports: its ports.Manager owns every binding and demultiplexes. Inbound
// segments run to completion on the caller's (link's) goroutine; a connection has no
// goroutine, only timers (retransmit/persist/keep-alive/TIME-WAIT share one; delayed ACK;
// read and write deadlines). Segments are built in pooled scratch buffers and the
// per-connection buffers are rings that grow to their limit, so steady-state traffic
// allocates nothing.
//
// The endpoint API: Protocol.Dial and Protocol.Listen; Conn (Read, Write, CloseRead,
// CloseWrite, Close, Abort, deadlines, options, Info) and Listener (Accept, SetDeadline,
// Close). Errors are bare: syscall errnos (ECONNREFUSED, ECONNRESET, ETIMEDOUT,
// EADDRINUSE, EADDRNOTAVAIL, EPIPE), io.EOF, net.ErrClosed, os.ErrDeadlineExceeded; the
// module root wraps them in *net.OpError as package net does.
package tcp

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/ports"
	"github.com/berthnet/berth/transport"
	"github.com/berthnet/berth/wire"
)

// Config holds TCP's settings; zero fields take the defaults shown (Linux's where Linux
// has one).
type Config struct {
	// Ports configures the protocol's port Manager. Its TupleReclaimable is set by TCP.
	Ports ports.Config
	// TimeWait is how long TIME-WAIT holds a 4-tuple (2*MSL). Default 60 s, like Linux.
	TimeWait time.Duration
	// FinTimeout is tcp_fin_timeout: how long an orphaned connection stays in FIN-WAIT-2.
	// Default 60 s.
	FinTimeout time.Duration
	// MinRTO, MaxRTO and InitialRTO bound the retransmission timeout (RFC 6298).
	// Defaults 200 ms (as Linux), 120 s, 1 s.
	MinRTO, MaxRTO, InitialRTO time.Duration
	// SynRetries (tcp_syn_retries, default 6), SynAckRetries (tcp_synack_retries,
	// default 5) and Retries (tcp_retries2, default 15) bound retransmissions before the
	// connection fails with ETIMEDOUT.
	SynRetries, SynAckRetries, Retries int
	// SendBuffer and ReceiveBuffer are the largest per-connection buffers in bytes, the
	// max of tcp_wmem/tcp_rmem (RMem[2]/WMem[2] are the same knob). Defaults 256 KiB each
	// (Linux: 4 MiB and 6 MiB): on the in-memory and loopback paths larger windows cost
	// about 40% of bulk throughput in cache misses, and no test path needs more; raise
	// them for long fat paths. The window scale we offer covers ReceiveBuffer.
	SendBuffer, ReceiveBuffer int
	// RMem and WMem are tcp_rmem and tcp_wmem: {min, default, max} in bytes. A
	// connection starts with default (at most max) and auto-tunes toward max: the
	// receive buffer toward twice what the reader takes per RTT (as Linux's
	// tcp_rcv_space_adjust), the send buffer toward twice the usable window
	// (tcp_sndbuf_expand). Idle connections stay at their initial size, and ring memory
	// is only taken as data arrives. SetBuffers (SO_SNDBUF/SO_RCVBUF) fixes a size and
	// stops its auto-tuning; min is the smallest it accepts. Defaults {4096, 256 KiB,
	// 256 KiB} each: auto-tuning acts once max is raised above default.
	RMem, WMem [3]int
	// DelayedACK is the delayed-ACK timeout (RFC 9293 §3.8.6.3); default 40 ms, negative
	// disables delayed ACKs.
	DelayedACK time.Duration
	// ChallengeACKLimit is tcp_challenge_ack_limit: challenge ACKs per second (RFC 5961
	// §7). Default 1000.
	ChallengeACKLimit int
	// CongestionControl names the default congestion control: "cubic" (RFC 9438 with
	// HyStart++, the default) or "reno" ("newreno"). Conn.SetCongestionControl overrides
	// it per connection. New panics on an unknown name.
	CongestionControl string
	// Congestion, if set, makes connections' congestion control instead (a custom
	// policy); SetCongestionControl still overrides it.
	Congestion func(mss int) CongestionControl
	// ISNSecret keys the RFC 6528 hash; zero means a random key.
	ISNSecret [16]byte
	// NoTimestamps and NoSACK turn off offering and accepting RFC 7323 timestamps and RFC
	// 2018 SACK (tcp_timestamps=0, tcp_sack=0).
	NoTimestamps, NoSACK bool
	// MaxOutOfOrder caps the out-of-order bytes all connections of the stack hold for
	// reassembly together; segments beyond it are dropped and counted (Stats.OFODrops).
	// Default 64 MiB.
	MaxOutOfOrder int
	// MaxTimeWait is tcp_max_tw_buckets: how many connections of the stack may be in
	// TIME-WAIT at once; a connection that would enter TIME-WAIT beyond it closes at once
	// (Stats.TimeWaitOverflows, Linux's TcpExtTCPTimeWaitOverflow). Default 16384: Linux
	// scales its default with memory (262144 on a 16 GiB host); a TIME-WAIT connection
	// holds no buffers, only its Conn, timer and port-table entries (about 2.9 KiB of
	// heap on amd64, measured by TestHardenTimeWaitHeap), so the default bounds them to
	// some 47 MiB and allows 16384 active closes per TimeWait (273 per second at 60 s)
	// before TIME-WAIT is skipped. Negative holds none: every connection skips TIME-WAIT.
	MaxTimeWait int
	// SynCookies and MaxSynBacklog: SYN flood defences (when SYN cookies are sent; how
	// many half-open connections all listeners hold together).
	SynCookies    SynCookieMode
	MaxSynBacklog int
	// FastOpen is tcp_fastopen: the FastOpen* bits (FastOpenClient, ...). Zero means Linux's
	// default, client only (FastOpenClient); negative turns Fast Open off.
	FastOpen int
	// FastOpenKey is tcp_fastopen_key, the secret of the server's cookies; zero means a
	// random key.
	FastOpenKey [16]byte
	// ECN is tcp_ecn, Explicit Congestion Notification (RFC 3168): ECNRequest
	// requests it on active opens and accepts it on passive ones, ECNAccept only accepts
	// it. Zero means Linux's default, ECNAccept; negative turns ECN off. Protocol.SetECN
	// changes it at run time. Connections that negotiated ECN send new data ECT(0), which
	// takes a network that implements transport.ECNNetwork (*stack.Stack does); over one
	// that does not, ECN is never requested or accepted.
	ECN int
	// NotSentLowat is tcp_notsent_lowat: the default of Conn.SetNotSentLowat for
	// connections that set none (TCP_NOTSENT_LOWAT). Zero or negative means no limit (Linux's
	// default, UINT_MAX).
	NotSentLowat int
	// Counter registers a named counter (the stack's Counters.Counter), as for UDP: TCP's
	// Stats then live in the stack's registry under the kernel's names. nil keeps them
	// private.
	Counter func(name string) *atomic.Uint64
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defi := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.TimeWait, 60*time.Second)
	def(&c.FinTimeout, 60*time.Second)
	def(&c.MinRTO, 200*time.Millisecond)
	def(&c.MaxRTO, 120*time.Second)
	def(&c.InitialRTO, time.Second)
	def(&c.DelayedACK, 40*time.Millisecond)
	defi(&c.SynRetries, 6)
	defi(&c.SynAckRetries, 5)
	defi(&c.Retries, 15)
	if c.RMem[2] > 0 {
		c.ReceiveBuffer = c.RMem[2]
	}
	if c.WMem[2] > 0 {
		c.SendBuffer = c.WMem[2]
	}
	defi(&c.SendBuffer, 256<<10)
	defi(&c.ReceiveBuffer, 256<<10)
	c.RMem[2], c.WMem[2] = c.ReceiveBuffer, c.SendBuffer
	defi(&c.RMem[0], 4096)
	defi(&c.WMem[0], 4096)
	defi(&c.RMem[1], 256<<10)
	defi(&c.WMem[1], 256<<10)
	c.RMem[1], c.WMem[1] = min(c.RMem[1], c.RMem[2]), min(c.WMem[1], c.WMem[2])
	defi(&c.ChallengeACKLimit, 1000)
	defi(&c.MaxOutOfOrder, 64<<20)
	defi(&c.MaxSynBacklog, defaultMaxSynBacklog) // listener.go
	defi(&c.MaxTimeWait, 16384)
	defi(&c.FastOpen, FastOpenClient)
	defi(&c.ECN, ECNAccept)
	if c.ECN < 0 {
		c.ECN = 0
	}
	if c.FastOpen < 0 {
		c.FastOpen = 0
	}
	if c.CongestionControl == "" {
		c.CongestionControl = CCCubic
	}
	if n := canonicalCC(c.CongestionControl); n != "" {
		c.CongestionControl = n
	} else {
		panic("tcp: unknown congestion control " + c.CongestionControl)
	}
}

// Stats are TCP's counters. Each is registered under the kernel's name (statNames: the
// TCP MIB of RFC 4022 as /proc/net/snmp's "Tcp:" line, and TcpExt as nstat shows it)
// through Config.Counter, so that the stack's registry holds them with the network
// layer's and UDP's. New sets every field.
type Stats struct {
	ActiveOpens, PassiveOpens, AttemptFails, EstabResets *atomic.Uint64 // tcpActiveOpens, tcpPassiveOpens, tcpAttemptFails, tcpEstabResets (RFC 4022)
	// CurrEstab is a gauge: the connections in ESTABLISHED or CLOSE-WAIT now (RFC 4022
	// tcpCurrEstab), kept on every state transition (Conn.setState).
	CurrEstab                                     *atomic.Uint64
	InSegs, OutSegs, RetransSegs, InErrs, OutRsts *atomic.Uint64
	ChallengeACKs, ListenDrops, TimeWaitReused    *atomic.Uint64
	// PAWSDrops: segments dropped by PAWS (RFC 7323 §5); OFODrops: out-of-order segments
	// dropped at the stack's MaxOutOfOrder cap; DSACKsRcvd: D-SACK blocks received;
	// TLPs: tail loss probes sent; PMTUUpdates: MSS lowered by ICMP; SACKRecoveries and
	// RACKLost: recoveries entered and segments RACK declared lost; Timeouts:
	// retransmission timeouts (RFC 6298).
	PAWSDrops, OFODrops, DSACKsRcvd, TLPs, PMTUUpdates *atomic.Uint64
	SACKRecoveries, RACKLost, Timeouts                 *atomic.Uint64
	// SynFinDrops: segments with both SYN and FIN, dropped unanswered.
	// TimeWaitOverflows: connections closed at once instead of entering
	// TIME-WAIT because Config.MaxTimeWait were already held (Linux's "time wait bucket
	// table overflow").
	SynFinDrops, TimeWaitOverflows *atomic.Uint64
	// FastOpenPassive: SYNs whose Fast Open was taken (a child made, its data accepted);
	// FastOpenPassiveFail: Fast Open SYNs with a wrong cookie.
	FastOpenPassive, FastOpenPassiveFail *atomic.Uint64

	ListenStats // SYN queue and SYN cookie counters
}

// newStats registers every counter with reg, in the kernel's order: the "Tcp:" line of
// /proc/net/snmp, then TcpExt. PMTUUpdates, RACKLost and SynFinDrops have no kernel
// counterpart and keep names of berth's own in the TcpExt group.
func newStats(reg func(name string) *atomic.Uint64) Stats {
	var s Stats
	for _, c := range []struct {
		p    **atomic.Uint64
		name string
	}{
		{&s.ActiveOpens, "TcpActiveOpens"}, {&s.PassiveOpens, "TcpPassiveOpens"},
		{&s.AttemptFails, "TcpAttemptFails"}, {&s.EstabResets, "TcpEstabResets"},
		{&s.CurrEstab, "TcpCurrEstab"}, {&s.InSegs, "TcpInSegs"}, {&s.OutSegs, "TcpOutSegs"},
		{&s.RetransSegs, "TcpRetransSegs"}, {&s.InErrs, "TcpInErrs"}, {&s.OutRsts, "TcpOutRsts"},
		{&s.SyncookiesSent, "TcpExtSyncookiesSent"}, {&s.SyncookiesRecv, "TcpExtSyncookiesRecv"},
		{&s.SyncookiesFailed, "TcpExtSyncookiesFailed"}, {&s.PAWSDrops, "TcpExtPAWSEstab"},
		{&s.TimeWaitReused, "TcpExtTWRecycled"}, {&s.ListenOverflows, "TcpExtListenOverflows"},
		{&s.ListenDrops, "TcpExtListenDrops"}, {&s.Timeouts, "TcpExtTCPTimeouts"},
		{&s.SACKRecoveries, "TcpExtTCPSackRecovery"}, {&s.TLPs, "TcpExtTCPLossProbes"},
		{&s.DSACKsRcvd, "TcpExtTCPDSACKRecv"}, {&s.ChallengeACKs, "TcpExtTCPChallengeACK"},
		{&s.OFODrops, "TcpExtTCPOFODrop"}, {&s.TCPReqQFullDoCookies, "TcpExtTCPReqQFullDoCookies"},
		{&s.TCPReqQFullDrop, "TcpExtTCPReqQFullDrop"},
		{&s.PMTUUpdates, "TcpExtPMTUUpdates"}, {&s.RACKLost, "TcpExtRACKLost"},
		{&s.SynFinDrops, "TcpExtSynFinDrops"}, {&s.TimeWaitOverflows, "TcpExtTCPTimeWaitOverflow"},
		{&s.FastOpenPassive, "TcpExtTCPFastOpenPassive"}, {&s.FastOpenPassiveFail, "TcpExtTCPFastOpenPassiveFail"},
	} {
		*c.p = reg(c.name)
	}
	return s
}

// setState moves the connection to state st (c.mu held), keeping the CurrEstab gauge.
// Every transition goes through here; only a new connection's first state (SYN-SENT or
// SYN-RECEIVED, from CLOSED), which the gauge does not count either way, may be set
// directly.
func (c *Conn) setState(st State) {
	was, is := c.state.currEstab(), st.currEstab()
	c.state = st
	switch {
	case is && !was:
		c.p.Stats.CurrEstab.Add(1)
	case was && !is:
		c.p.Stats.CurrEstab.Add(^uint64(0))
	}
}

// currEstab reports whether RFC 4022's tcpCurrEstab counts a connection in s.
func (s State) currEstab() bool { return s == StateEstablished || s == StateCloseWait }

// Protocol is TCP on one stack.
type Protocol struct {
	net    transport.Network
	clk    clock.Clock
	cfg    Config
	mgr    *ports.Manager
	secret [16]byte

	mu      sync.Mutex
	socks   map[any]struct{} // every live *Conn and *Listener, for Sockets and leak checks
	closed  bool
	foCache map[netip.Addr]foEntry // Fast Open cookies by server (fastopen_client.go)

	bufs  sync.Pool // *[]byte scratch for building segments, room for the largest
	small sync.Pool // *[]byte scratch for segments up to smallScratch bytes

	epoch   time.Time    // origin of mono(), for transmission times (sack.go)
	ecnMode atomic.Int32 // tcp_ecn: Config.ECN, SetECN (ecn.go)
	noTS    atomic.Bool  // tcp_timestamps=0: Config.NoTimestamps, SetTimestamps
	foMode  atomic.Int32 // tcp_fastopen: Config.FastOpen, SetFastOpen (sysctl.go)
	ecnNet  transport.ECNNetwork
	// gatherNet: net takes super-segments in pieces (transport.GSOGatherNetwork), so
	// the payload goes from the send buffer to the link without a copy (sender.go's emit).
	gatherNet transport.GSOGatherNetwork
	oooBytes  atomic.Int64 // out-of-order bytes held by all connections (Config.MaxOutOfOrder)
	twCount   atomic.Int64 // connections in TIME-WAIT (Config.MaxTimeWait)

	// Connections whose transmissions wait for the end of the link batch (EndBatch);
	// pendSpare is the other buffer, reused so that batches allocate nothing.
	pendMu          sync.Mutex
	pend, pendSpare []*Conn

	synq synQueue // listener.go: half-open (SYN-RECEIVED) entries across all listeners

	// Stats counts segments and connection events.
	Stats Stats
}

// New returns TCP over net with cfg. It owns a ports.Manager for TCP. When net is also a
// transport.GSONetwork, connections send super-segments on routes whose link segments.
func New(net transport.Network, cfg Config) *Protocol {
	cfg.setDefaults()
	p := &Protocol{net: net, clk: net.Clock(), cfg: cfg, secret: cfg.ISNSecret, socks: make(map[any]struct{})}
	p.epoch = p.clk.Now()
	p.noTS.Store(cfg.NoTimestamps)
	p.foMode.Store(int32(cfg.FastOpen))
	if en, ok := net.(transport.ECNNetwork); ok {
		p.ecnNet = en
		p.ecnMode.Store(int32(cfg.ECN))
	}
	p.gatherNet, _ = net.(transport.GSOGatherNetwork)
	reg := cfg.Counter
	if reg == nil {
		reg = func(string) *atomic.Uint64 { return new(atomic.Uint64) }
	}
	p.Stats = newStats(reg)
	if p.secret == ([16]byte{}) {
		rand.Read(p.secret[:])
	}
	pc := cfg.Ports
	pc.TupleReclaimable = p.tupleReclaimable
	p.mgr = ports.NewManager(ports.TCP, pc)
	return p
}

var _ transport.ECNHandler = (*Protocol)(nil)

// SetTimestamps turns offering and accepting RFC 7323 timestamps on or off for the
// handshakes that follow (tcp_timestamps written while the stack runs); connections
// keep what their handshake negotiated.
func (p *Protocol) SetTimestamps(on bool) { p.noTS.Store(!on) }

// timestamps reports whether new handshakes offer and accept timestamps.
func (p *Protocol) timestamps() bool { return !p.noTS.Load() }

// Ports returns the protocol's port Manager.
func (p *Protocol) Ports() *ports.Manager { return p.mgr }

// Config returns the protocol's settings (with defaults filled in).
func (p *Protocol) Config() Config {
	c := p.cfg
	c.NoTimestamps = !p.timestamps()
	return c
}

func (p *Protocol) track(s any) {
	p.mu.Lock()
	p.socks[s] = struct{}{}
	p.mu.Unlock()
}

func (p *Protocol) untrack(s any) {
	p.mu.Lock()
	delete(p.socks, s)
	p.mu.Unlock()
}

// NumSockets reports how many connections and listeners exist, TIME-WAIT included.
func (p *Protocol) NumSockets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.socks)
}

// isn is RFC 6528's ISN = M + F(localip, localport, remoteip, remoteport, secretkey), with
// M a 4 µs clock (RFC 9293 §3.4.1) and F a keyed SHA-256.
func (p *Protocol) isn(local, remote netip.AddrPort) uint32 {
	var b [16 + 36]byte
	copy(b[:16], p.secret[:])
	la, ra := local.Addr().As16(), remote.Addr().As16()
	copy(b[16:], la[:])
	copy(b[32:], ra[:])
	binary.BigEndian.PutUint16(b[48:], local.Port())
	binary.BigEndian.PutUint16(b[50:], remote.Port())
	h := sha256.Sum256(b[:])
	m := uint32(p.clk.Now().UnixNano() / 4000)
	return m + binary.BigEndian.Uint32(h[:])
}

// smallScratch is the size of the small scratch buffers: a control segment (SYN-ACK, ACK,
// RST) or a full segment of a 1500-byte path, with the headroom.
const smallScratch = 2048

// scratch returns a buffer of at least n bytes for building a segment. Small segments
// take small buffers: under a SYN flood thousands of SYN-ACK retransmission timers fire
// at once, each on its own goroutine, and a 64 KiB buffer for each 60-byte SYN-ACK grew
// the heap by tens of MiB.
func (p *Protocol) scratch(n int) *[]byte {
	pool, size := &p.bufs, wire.NetworkHeadroom+wire.TCPMaxHeaderLen+65535 // the loopback MSS
	if n <= smallScratch {
		pool, size = &p.small, smallScratch
	}
	if bp, ok := pool.Get().(*[]byte); ok && cap(*bp) >= n {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, max(n, size))
	return &b
}

// release returns a buffer from scratch to its pool.
func (p *Protocol) release(bp *[]byte) {
	if cap(*bp) <= smallScratch {
		p.small.Put(bp)
		return
	}
	p.bufs.Put(bp)
}

// HandlePacket processes one inbound segment from src to dst (a local address). It always
// returns false: TCP answers segments for closed ports with RST itself (RFC 9293
// §3.10.7.1).
func (p *Protocol) HandlePacket(src, dst netip.Addr, b []byte) (unreachable bool) {
	p.handle(src, dst, b, false, false, false)
	return false
}

// HandleBatched is HandlePacket for a packet of a link batch (transport.BatchHandler): what
// an ACK makes sendable waits for EndBatch, so that a batch of ACKs for one connection is
// answered with one transmission (one GSO super-segment), not one per ACK. ACKs the
// segment calls for at once (RFC 5681 §4.2: out of order, every second full segment) are
// not delayed.
func (p *Protocol) HandleBatched(src, dst netip.Addr, b []byte, csumOK bool) (unreachable bool) {
	p.handle(src, dst, b, true, false, csumOK)
	return false
}

// HandleBatchedECN is HandleBatched with the ECN field of the packet's IP header
// (transport.ECNHandler), which ECN reads (RFC 3168 §6.1.3).
func (p *Protocol) HandleBatchedECN(src, dst netip.Addr, b []byte, csumOK bool, ecn transport.ECN) (unreachable bool) {
	p.handleECN(src, dst, b, true, false, csumOK, ecn)
	return false
}

// EndBatch sends for the connections HandleBatched left pending.
func (p *Protocol) EndBatch() {
	p.pendMu.Lock()
	if len(p.pend) == 0 {
		p.pendMu.Unlock()
		return
	}
	list := p.pend
	p.pend = p.pendSpare[:0]
	p.pendSpare = nil
	p.pendMu.Unlock()
	for i, c := range list {
		c.flushPending()
		list[i] = nil
	}
	p.pendMu.Lock()
	if p.pendSpare == nil {
		p.pendSpare = list[:0]
	}
	p.pendMu.Unlock()
}

// handle processes one inbound segment. With transparent (HandleTransparent,
// HandleForeign), a SYN that ends a TIME-WAIT connection and finds no listener is not
// answered: handle reports reopened, and the caller treats it as a new flow. csumOK: the
// link vouched for the checksum (link.VerifiedDispatcher), which is then not checked.
func (p *Protocol) handle(src, dst netip.Addr, b []byte, batched, transparent, csumOK bool) (reopened bool) {
	return p.handleECN(src, dst, b, batched, transparent, csumOK, transport.NotECT)
}

// handleECN is handle for a segment whose IP header had the ECN field ecn.
func (p *Protocol) handleECN(src, dst netip.Addr, b []byte, batched, transparent, csumOK bool, ecn transport.ECN) (reopened bool) {
	var seg segment
	if !p.parse(&seg, src, dst, b, batched, csumOK) {
		return false
	}
	seg.ecn = ecn
	owner, ok := p.mgr.Lookup(seg.local(), seg.remote())
	return p.dispatch(&seg, owner, ok, transparent)
}

// parse validates the segment b (from src to dst) and fills seg; false when it is to be
// dropped (counted).
func (p *Protocol) parse(seg *segment, src, dst netip.Addr, b []byte, batched, csumOK bool) bool {
	h, err := wire.ParseTCP(b)
	if err != nil || (!csumOK && !h.VerifyChecksum(src, dst)) {
		p.Stats.InErrs.Add(1)
		return false
	}
	p.Stats.InSegs.Add(1)
	if src.IsMulticast() || src.IsUnspecified() || dst.IsMulticast() || src == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false // RFC 9293 §3.10.7.2, RFC 1122 §4.2.3.10: not from or to a broadcast or multicast address
	}
	if h.Flags()&(wire.TCPFlagSYN|wire.TCPFlagFIN|wire.TCPFlagACK) == wire.TCPFlagSYN|wire.TCPFlagFIN {
		// SYN+FIN is no legitimate segment but in one place, only a scanner's probe (and a
		// way past filters that look at one flag): Linux drops it in LISTEN
		// (tcp_rcv_state_process) without an answer; berth drops it everywhere, before
		// any connection or listener sees it. The one place is a SYN-ACK that also
		// closes, in SYN-SENT (a Fast Open server's whole answer, RFC 7413 §4.2.2;
		// Linux takes it): with ACK it goes on, for synFinDropped to judge.
		p.Stats.SynFinDrops.Add(1)
		return false
	}
	*seg = segment{hdr: h, src: src, dst: dst, batched: batched}
	if h.DataOffset() > wire.TCPMinHeaderLen && h.ParseOptions(&seg.opts) != nil {
		p.Stats.InErrs.Add(1)
		return false
	}
	seg.init()
	return true
}

// dispatch hands seg to owner, what the port Manager's lookup of its 4-tuple found (ok),
// or answers it as for a closed port (handle's reopened).
func (p *Protocol) dispatch(seg *segment, owner any, ok, transparent bool) (reopened bool) {
	if ok {
		switch o := owner.(type) {
		case *Conn:
			if o.input(seg) {
				return false
			}
			// A TIME-WAIT connection gave way to a new SYN: look again for a listener.
			if owner, ok = p.mgr.Lookup(seg.local(), seg.remote()); ok {
				if l, isL := owner.(*Listener); isL {
					if !p.synFinDropped(seg) {
						l.input(seg)
					}
					return false
				}
			}
			if transparent {
				return true
			}
		case *Listener:
			if !p.synFinDropped(seg) {
				o.input(seg)
			}
			return false
		}
	}
	if !p.synFinDropped(seg) {
		p.resetClosed(seg)
	}
	return false
}

// synFinDropped drops (and counts) a SYN+FIN+ACK anywhere but in SYN-SENT (parse).
func (p *Protocol) synFinDropped(s *segment) bool {
	if s.flags&(flagSYN|flagFIN) != flagSYN|flagFIN {
		return false
	}
	p.Stats.SynFinDrops.Add(1)
	return true
}

// resetClosed answers a segment for which no connection exists (RFC 9293 §3.10.7.1).
func (p *Protocol) resetClosed(s *segment) {
	if s.flags&wire.TCPFlagRST != 0 {
		return
	}
	if s.flags&wire.TCPFlagACK != 0 {
		p.sendRST(s.dst, s.src, s.hdr.DstPort(), s.hdr.SrcPort(), s.ack, 0, false)
	} else {
		p.sendRST(s.dst, s.src, s.hdr.DstPort(), s.hdr.SrcPort(), 0, s.seq+uint32(s.len), true)
	}
}

// sendRST sends a bare RST (with ACK when withAck).
func (p *Protocol) sendRST(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, withAck bool) {
	p.sendRSTOpts(src, dst, sport, dport, seq, ack, withAck, nil)
}

// sendRSTOpts is sendRST with options (a connection's timestamps).
func (p *Protocol) sendRSTOpts(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, withAck bool, opts *wire.TCPOptions) {
	f := wire.TCPFields{SrcPort: sport, DstPort: dport, Seq: seq, Flags: wire.TCPFlagRST, Options: opts}
	if withAck {
		f.Flags |= wire.TCPFlagACK
		f.Ack = ack
	}
	bp := p.scratch(wire.NetworkHeadroom + f.HeaderLen())
	b := (*bp)[:wire.NetworkHeadroom+f.HeaderLen()]
	f.Encode(b[wire.NetworkHeadroom:])
	wire.SetTCPChecksum(b[wire.NetworkHeadroom:], src, dst)
	p.net.Output(src, dst, wire.ProtoTCP, b)
	p.release(bp)
	p.Stats.OutSegs.Add(1)
	p.Stats.OutRsts.Add(1)
}

// HandleICMPError reacts to an ICMP error quoting a segment this host sent (RFC 5927:
// only if the quoted sequence number is outstanding; RFC 1122 §4.2.3.9: hard errors abort
// a connection that is being opened, soft errors are remembered).
func (p *Protocol) HandleICMPError(local, remote netip.Addr, quoted []byte, errno syscall.Errno, mtu int) {
	if len(quoted) < 8 {
		return
	}
	lp := binary.BigEndian.Uint16(quoted[0:])
	rp := binary.BigEndian.Uint16(quoted[2:])
	seq := binary.BigEndian.Uint32(quoted[4:])
	owner, ok := p.mgr.Lookup(netip.AddrPortFrom(local, lp), netip.AddrPortFrom(remote, rp))
	if !ok {
		return
	}
	c, ok := owner.(*Conn)
	if !ok {
		return
	}
	c.icmpError(seq, errno, mtu)
}

// tupleReclaimable lets the port Manager take over a 4-tuple held in TIME-WAIT (the safe
// reuse rule: see Conn.reclaim).
func (p *Protocol) tupleReclaimable(owner any) bool {
	c, ok := owner.(*Conn)
	if !ok {
		return false
	}
	return c.reclaim()
}

// segment is a parsed inbound segment.
type segment struct {
	hdr      wire.TCP
	opts     wire.TCPOptions
	src, dst netip.Addr
	seq, ack uint32
	flags    uint8
	wnd      uint32
	payload  []byte
	len      int           // segment length in sequence space: payload + SYN + FIN
	unscaled bool          // the window field is not scaled (it came in a SYN)
	batched  bool          // part of a link batch: the connection may send at EndBatch
	ecn      transport.ECN // the IP header's ECN field (ecn.go)
}

// local and remote are the segment's 4-tuple as the receiving side names it.
func (s *segment) local() netip.AddrPort  { return netip.AddrPortFrom(s.dst, s.hdr.DstPort()) }
func (s *segment) remote() netip.AddrPort { return netip.AddrPortFrom(s.src, s.hdr.SrcPort()) }

// window is the segment's window in bytes, given the peer's window scale.
func (s *segment) window(scale uint8) uint32 {
	if s.unscaled {
		return s.wnd
	}
	return s.wnd << scale
}

func (s *segment) init() {
	s.seq, s.ack, s.flags = s.hdr.Seq(), s.hdr.Ack(), s.hdr.Flags()
	s.wnd = uint32(s.hdr.Window())
	s.payload = s.hdr.Payload()
	s.len = len(s.payload)
	if s.flags&wire.TCPFlagSYN != 0 {
		s.len++
	}
	if s.flags&wire.TCPFlagFIN != 0 {
		s.len++
	}
}

// Close shuts TCP down with its stack: listeners close, connections are aborted (RST to
// peers that hold state; Read and Write then fail with ECONNABORTED), TIME-WAIT records
// and timers go. Later Dial and Listen calls fail with ENETDOWN.
func (p *Protocol) Close() {
	p.mu.Lock()
	p.closed = true
	socks := make([]any, 0, len(p.socks))
	for s := range p.socks {
		socks = append(socks, s)
	}
	p.mu.Unlock()
	for _, s := range socks {
		if l, ok := s.(*Listener); ok {
			l.Close()
		}
	}
	for _, s := range socks {
		if c, ok := s.(*Conn); ok {
			c.mu.Lock()
			if c.state != StateClosed {
				if c.err == nil && !c.errTaken {
					c.err = syscall.ECONNABORTED
				}
				c.abort()
			}
			c.rd.stop()
			c.wd.stop()
			c.mu.Unlock()
		}
	}
}

func (p *Protocol) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}
