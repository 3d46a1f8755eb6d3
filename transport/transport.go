// Package transport declares, once, the contract between berth's network layer (package
// stack) and its transport protocols (tcp, udp): what a transport needs from the network
// (Network, GSONetwork) and what the network calls on a transport (Handler, BatchHandler,
// TransparentHandler, UnmatchedHandler). *stack.Stack implements the first two; tcp and
// udp implement the handlers; neither side imports the other.
//
// The rules that make the two sides safe to combine are part of these types:
//   - Inbound packets run to completion on the link's goroutine; a segment handed to a
//     handler is valid only during the call (the link reuses its buffer).
//   - Output does not retain pkt and never calls back into a transport on the caller's
//     goroutine, so a transport may call it with its own connection lock held.
//   - IP protocol numbers are wire's constants (wire.ProtoTCP, wire.ProtoUDP, ...).
package transport

import (
	"net/netip"
	"syscall"

	"github.com/berthnet/berth/clock"
)

// Network is what a transport protocol needs from the network layer.
type Network interface {
	// Route picks the source address towards dst and reports the path MTU; ENETUNREACH
	// when no route matches, EADDRNOTAVAIL when the route's interface has no address of
	// dst's family.
	Route(dst netip.Addr) (src netip.Addr, mtu int, err error)
	// IsLocal reports whether a is one of the stack's addresses (bind checks:
	// EADDRNOTAVAIL).
	IsLocal(a netip.Addr) bool
	// Output sends one transport packet of IP protocol proto from src to dst.
	// pkt[:wire.NetworkHeadroom] is free space for the network header, which Output
	// writes there (no copy); the transport header, with its checksum set, and the
	// payload follow. Output does not retain pkt after it returns, and it never calls
	// back into a transport protocol on the caller's goroutine (pipes and loopback
	// deliver on goroutines of their own), so the caller may hold its connection lock
	// across the call. EMSGSIZE if the packet exceeds the MTU and may not be fragmented.
	Output(src, dst netip.Addr, proto uint8, pkt []byte) error
	// Clock is the stack's time source; transports schedule every timer on it.
	Clock() clock.Clock
}

// GSONetwork is an optional extension of Network for links that segment TCP themselves
// (generic segmentation offload, link.GSOEndpoint): TCP then sends super-segments of
// several MSS at once when the windows allow. The rules of Network.Output apply.
type GSONetwork interface {
	// GSOMax is the largest TCP packet (header and payload) OutputGSO takes towards dst;
	// 0 when the route's link cannot segment.
	GSOMax(dst netip.Addr) int
	// OutputGSO sends pkt (as for Output, proto TCP) for the link to cut into segments of
	// mss payload bytes each. The TCP checksum of pkt may hold anything: the link
	// computes every segment's.
	OutputGSO(src, dst netip.Addr, pkt []byte, mss int) error
}

// Handler is what a transport protocol registers with the network layer
// (stack.RegisterTransport) to receive the packets of its IP protocol number.
type Handler interface {
	// HandlePacket gets one transport segment from src addressed to dst, a local
	// address; segment is valid only during the call. unreachable means "no socket
	// here": the stack then offers the segment to the UnmatchedHandler, if any, and
	// otherwise answers ICMP port unreachable (rate limited). TCP answers with RST itself
	// and never reports unreachable.
	HandlePacket(src, dst netip.Addr, segment []byte) (unreachable bool)
	// HandleICMPError reports an ICMP error quoting a packet this host sent from local
	// to remote: quoted is the quoted transport header (at least 8 bytes, valid only
	// during the call); errno is ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EMSGSIZE (with
	// the next-hop mtu), ETIMEDOUT (time exceeded), ...
	HandleICMPError(local, remote netip.Addr, quoted []byte, errno syscall.Errno, mtu int)
}

// BatchHandler is a Handler that can defer the work a packet causes until the end of the
// batch of packets the link delivered it in: TCP answers a batch of ACKs with one
// transmission per connection rather than one per ACK, as a kernel does for a GRO
// super-packet. Packets of a link batch go to HandleBatched, and EndBatch follows every
// batch on the same goroutine; other callers use HandlePacket, which never defers.
type BatchHandler interface {
	Handler
	// HandleBatched is HandlePacket for a packet of a batch. csumOK says the link vouched
	// for a TCP segment's checksum (link.VerifiedDispatcher: the kernel behind TUN left it
	// partial or checked it): the handler must not check it, as it may hold only the
	// pseudo-header sum.
	HandleBatched(src, dst netip.Addr, segment []byte, csumOK bool) (unreachable bool)
	// EndBatch does what HandleBatched deferred. It is called once after every batch,
	// whether or not the batch held packets for this handler.
	EndBatch()
}

// TransparentHandler is a BatchHandler that also holds connections for addresses that are
// not the stack's own (like Linux's IP_TRANSPARENT sockets: tcp's AcceptTransparent and
// DialTransparent, which a forwarder uses). While an UnmatchedHandler is installed, the
// stack offers every segment of the handler's protocol addressed to another host
// (reassembled if it came fragmented) to HandleForeign first, as part of the link batch
// (EndBatch follows); only what it does not take reaches the UnmatchedHandler. Forwarded
// flows are thus demultiplexed by the transport itself, once, as local ones are.
type TransparentHandler interface {
	BatchHandler
	// HandleForeign takes segment (from src to dst, dst not local; valid only during the
	// call) when a connection holds its exact 4-tuple, and reports taken; one that fails
	// validation is then dropped and counted, as on the local path. It leaves everything
	// else untouched and uncounted for the UnmatchedHandler: segments of no connection (a
	// new SYN), and a SYN that ended a TIME-WAIT connection of the same 4-tuple and so
	// opens a new flow (RFC 6191). csumOK as for HandleBatched.
	HandleForeign(src, dst netip.Addr, segment []byte, csumOK bool) (taken bool)
}

// UnmatchedHandler takes over flows no local socket wants: a transparent forwarder
// installs one (stack.SetUnmatchedHandler). It gets segments addressed to other hosts
// that no TransparentHandler took (reassembled if they came fragmented), and segments for
// local addresses that a Handler reported unreachable. segment, the transport header and
// payload, is valid only during the call: keep a copy. taken reports whether the handler
// took it; if not, the stack answers as usual (ICMP port unreachable for a local
// address, a counted drop for another host's). csumOK says the link vouched for a TCP
// segment's checksum, which may then hold only the pseudo-header sum. The handler runs on
// the link's goroutine and may call the stack (Output) and the transports.
type UnmatchedHandler func(proto uint8, src, dst netip.Addr, segment []byte, csumOK bool) (taken bool)

// ECN is the ECN field of an IP header (RFC 3168 §5): the two low bits of IPv4's TOS byte
// and of IPv6's traffic class. It is the per-packet information a transport that uses
// Explicit Congestion Notification (TCP, RFC 3168 §6.1) exchanges with the network layer:
// the codepoint a packet is to be sent with (ECNNetwork) and the one it arrived with,
// which a router may have set to CE (ECNHandler).
type ECN uint8

// The ECN codepoints (RFC 3168 §5).
const (
	NotECT ECN = 0 // not ECN-capable transport
	ECT1   ECN = 1 // ECN-capable transport, ECT(1)
	ECT0   ECN = 2 // ECN-capable transport, ECT(0): what TCP sends (RFC 3168 §6.1.2)
	CE     ECN = 3 // congestion experienced, set by a router instead of dropping
)

// ECNNetwork is an optional extension of Network (and of GSONetwork, when the network is
// one) for transports that send ECN-capable packets: OutputECN and OutputGSOECN are
// Output and OutputGSO with the IP header's ECN field set to ecn, on every segment the
// link cuts a super-segment into, and on every fragment (RFC 3168 §5.3). The rules of
// Output and OutputGSO apply. *stack.Stack implements it.
type ECNNetwork interface {
	// OutputECN is Network.Output with the IP header's ECN field set to ecn.
	OutputECN(src, dst netip.Addr, proto uint8, pkt []byte, ecn ECN) error
	// OutputGSOECN is GSONetwork.OutputGSO with every segment's ECN field set to ecn.
	OutputGSOECN(src, dst netip.Addr, pkt []byte, mss int, ecn ECN) error
}

// GSOGatherNetwork is an optional extension of ECNNetwork for a GSO network whose links
// may take a super-segment in pieces (link.GSOGatherWriter): TCP then sends the payload
// from its send buffer as it lies there, with no copy into a packet. *stack.Stack
// implements it.
type GSOGatherNetwork interface {
	// OutputGSOGather is OutputGSOECN of the packet head+p1+p2: head is the headroom and
	// the TCP header, p1 and p2 the payload (either may be empty). When the route's link
	// cannot gather it returns syscall.EOPNOTSUPP having sent and counted nothing, and
	// the caller sends the joined packet with OutputGSOECN. It retains no slice.
	OutputGSOGather(src, dst netip.Addr, head, p1, p2 []byte, mss int, ecn ECN) error
}

// ECNHandler is an optional extension of BatchHandler for transports that read the ECN
// field of the packets they receive: the network layer then delivers each packet of a
// link batch to HandleBatchedECN instead of HandleBatched, with the ECN field of its IP
// header (of the first fragment's, for a reassembled datagram). The rules of
// HandleBatched apply.
type ECNHandler interface {
	BatchHandler
	// HandleBatchedECN is BatchHandler.HandleBatched for a packet whose IP header had the
	// ECN field ecn.
	HandleBatchedECN(src, dst netip.Addr, segment []byte, csumOK bool, ecn ECN) (unreachable bool)
}
