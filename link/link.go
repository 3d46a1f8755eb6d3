// Package link defines the device side of a network interface: an Endpoint moves whole IP
// packets (no link-layer header) in batches. Implementations live in subpackages: pipe
// (in-memory), impair (loss, delay, reordering, duplication, corruption), pcap (a recording
// tap) and tun (Linux TUN devices).
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

// DispatcherFunc adapts a function to the Dispatcher interface.
type DispatcherFunc func(pkts [][]byte)

// DeliverPackets calls f(pkts).
func (f DispatcherFunc) DeliverPackets(pkts [][]byte) { f(pkts) }
