// Package link defines the device side of a network interface: an Endpoint moves whole IP
// packets (no link-layer header) in batches. Implementations live in subpackages: pipe
// (in-memory), impair (loss, delay, reordering, duplication, corruption), pcap (a recording
// tap), tun (Linux TUN devices) and ether (Ethernet, ARP and NDP over a frame device).
//
// # Frame devices
//
// A frame device is an Endpoint whose packets are Ethernet II frames instead of IP
// packets: a TAP device, a virtual machine's socket, pipe.NewEthernet. Its contract
// differs from an IP Endpoint's in exactly these points:
//   - Every packet in WritePackets and DeliverPackets is one frame: the 14-byte header
//     (destination MAC, source MAC, EtherType) and its payload, with no preamble, no FCS
//     and, on output, no 802.1Q tag. Input may carry tags and padding; ether drops or
//     trims them.
//   - MTU is the largest payload (the IP MTU, 1500 for classic Ethernet), so frames are
//     up to MTU()+14 bytes. A device that delivers longer frames (TCP super-segments
//     coalesced by the kernel behind a TAP device with offloads) says how long with a
//     MaxInboundSize() int method, counting the Ethernet header; ether takes frames up to
//     it, and drops longer ones as EtherInTooBig.
//   - If it is also a GSOEndpoint, WriteGSO takes one frame whose payload is the TCP
//     super-segment, and writes each segment with a copy of the Ethernet header;
//     GSOMaxSize counts the IP packet, not the Ethernet header.
//   - VerifiedDispatcher.DeliverVerified batches are frames as well.
//
// A frame device may also be a FrameWriter (and, if it segments, a GSOFrameWriter): it
// then takes each frame as its header and the IP packet behind it, and ether does not
// copy the packet behind a header before handing it over.
//
// Stacks do not use a frame device directly: ether.New wraps it in an Endpoint of IP
// packets.
package link

// Endpoint is a link that carries IP packets.
type Endpoint interface {
	// MTU is the largest IP packet the link carries, in bytes.
	MTU() int
	// Attach sets where inbound packets go; nil detaches. The endpoint calls the
	// dispatcher from its own goroutine(s).
	Attach(d Dispatcher)
	// WritePackets sends a batch of IP packets and returns how many it took. It does not
	// retain pkts or their bytes after it returns. A full queue drops (and counts) packets
	// rather than blocking: two stacks that answer each other must never deadlock.
	WritePackets(pkts [][]byte) (int, error)
	// Close stops the endpoint: readers unblock, its goroutines end, later writes fail.
	Close() error
}

// Dispatcher receives inbound packets from an Endpoint.
type Dispatcher interface {
	// DeliverPackets hands over a batch of IP packets. The buffers are valid only during
	// the call; the receiver copies what it keeps.
	DeliverPackets(pkts [][]byte)
}

// VerifiedDispatcher is a Dispatcher that also takes batches in which the link vouches
// for the TCP checksums: the Linux kernel behind a TUN device with the virtio-net header
// left them for the receiver to fill in (VIRTIO_NET_HDR_F_NEEDS_CSUM: the packet never
// left the machine) or checked them (DATA_VALID). Their checksum fields may hold only the
// pseudo-header sum; the receiver neither checks nor needs them. Other protocols'
// checksums in such a batch are complete, as in DeliverPackets.
type VerifiedDispatcher interface {
	Dispatcher
	DeliverVerified(pkts [][]byte) // like DeliverPackets, for packets whose TCP checksums the link vouches for
}

// DispatcherFunc adapts a function to the Dispatcher interface.
type DispatcherFunc func(pkts [][]byte)

// DeliverPackets calls f(pkts).
func (f DispatcherFunc) DeliverPackets(pkts [][]byte) { f(pkts) }

// FrameWriter is an optional interface of a frame device that gathers each frame from two
// pieces (writev(2), or its own one copy into a queue): the Ethernet header and the packet
// behind it, so the packet is not first copied behind a header.
type FrameWriter interface {
	// WriteFrames writes frame i as hdrs[i] followed by pkts[i] (len(hdrs) == len(pkts)),
	// exactly as WritePackets would write the joined frames: the same limits, results and
	// errors. It retains neither slice nor their bytes.
	WriteFrames(hdrs, pkts [][]byte) (int, error)
}

// GSOFrameWriter is the WriteGSO of a FrameWriter: the frame of a TCP super-segment as
// its Ethernet header hdr and the IP packet pkt, otherwise as GSOEndpoint.WriteGSO.
type GSOFrameWriter interface {
	// WriteGSOFrame writes the frame hdr+pkt as WriteGSO writes a joined frame; it
	// retains neither slice.
	WriteGSOFrame(hdr, pkt []byte, mss int) error
}

// GSOGatherWriter is an optional extension of a GSOEndpoint that takes the super-segment
// in pieces: head (the IP and TCP headers) and the payload p1 then p2 (either may be
// empty: a TCP send buffer's ring wraps at most once), written as WriteGSO writes
// head+p1+p2 but without joining them, so the payload is never copied on its way from
// the send buffer to the device. It retains no slice.
type GSOGatherWriter interface {
	// WriteGSOGather writes the super-segment head+p1+p2, cut into segments of mss
	// payload bytes as WriteGSO cuts it, or returns syscall.EOPNOTSUPP having written
	// nothing when the device cannot take it in pieces now.
	WriteGSOGather(head, p1, p2 []byte, mss int) error
}

// GSOFrameGatherWriter is the WriteGSOGather of a frame device (a GSOFrameWriter): the
// frame is the Ethernet header hdr, then head, p1 and p2.
type GSOFrameGatherWriter interface {
	// WriteGSOFrameGather writes the frame hdr+head+p1+p2 as WriteGSOFrame writes the
	// joined frame, or returns syscall.EOPNOTSUPP having written nothing.
	WriteGSOFrameGather(hdr, head, p1, p2 []byte, mss int) error
}

// GSOEndpoint is an Endpoint that also takes TCP super-segments and cuts them into
// MSS-sized segments itself (generic segmentation offload: the Linux kernel behind a TUN
// device with a virtio-net header). It is optional: check with a type assertion, and
// fall back to WritePackets when GSOMaxSize is 0.
type GSOEndpoint interface {
	Endpoint
	// GSOMaxSize is the largest super-segment WriteGSO takes, IP header included; 0 when
	// the link cannot segment (offload refused by the kernel).
	GSOMaxSize() int
	// WriteGSO sends pkt — one IPv4 or IPv6 packet carrying one TCP segment (IP header,
	// TCP header, payload up to GSOMaxSize) — as segments of at most mss payload bytes,
	// each with the headers copied, sequence numbers advanced and checksums set. The TCP
	// checksum field of pkt may hold anything (full, partial or zero): the link computes
	// every segment's checksum itself. Does not retain pkt.
	WriteGSO(pkt []byte, mss int) error
}
