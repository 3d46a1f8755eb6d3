// Package pcap writes packet captures in the classic libpcap file format (readable by
// tcpdump, Wireshark and tshark) and offers a Tap that records everything passing through a
// link.Endpoint. Packets are raw IP (LINKTYPE_RAW), since berth's IP links carry no
// link-layer header; a capture of a frame device (a TAP device, link/vmsock) is
// LINKTYPE_ETHERNET (WithLinkType).
package pcap

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

// File format constants (https://www.tcpdump.org/manpages/pcap-savefile.5.html,
// draft-ietf-opsawg-pcap).
const (
	magicMicro   = 0xa1b2c3d4
	magicNano    = 0xa1b23c4d
	versionMajor = 2
	versionMinor = 4
	LinkTypeRaw  = 101 // LINKTYPE_RAW: the packet begins with an IPv4 or IPv6 header
	// LinkTypeEthernet is LINKTYPE_ETHERNET: the packet begins with an Ethernet II
	// header (IEEE 802.3), without FCS.
	LinkTypeEthernet = 1
	fileHeaderLen    = 24
	recHeaderLen     = 16
	// DefaultSnapLen is used when NewWriter is given 0: every IP packet fits whole.
	DefaultSnapLen = 65535
)

// Option configures a Writer.
type Option func(*Writer)

// Nanosecond makes the capture carry nanosecond timestamps (the 0xa1b23c4d magic) instead
// of microseconds.
func Nanosecond() Option { return func(w *Writer) { w.nano = true } }

// WithClock sets where a Tap takes its timestamps from (default clock.Real), so captures of
// virtual-clock tests show virtual time.
func WithClock(c clock.Clock) Option { return func(w *Writer) { w.clock = c } }

// WithLinkType sets the capture's link type (default LinkTypeRaw): LinkTypeEthernet for
// the frames of a frame device. NewWriter does not check that the packets are of that
// type.
func WithLinkType(t uint32) Option { return func(w *Writer) { w.linkType = t } }

// Writer writes a capture. It is safe for concurrent use; records never interleave.
type Writer struct {
	mu       sync.Mutex
	w        io.Writer
	snaplen  int
	nano     bool
	linkType uint32
	clock    clock.Clock
	buf      []byte // one record (header + captured bytes), reused: no allocation per packet
	err      error  // first write error; later writes return it
}

// NewWriter writes the file header to w and returns a Writer that captures at most snaplen
// bytes of each packet (0: DefaultSnapLen).
func NewWriter(w io.Writer, snaplen int, opts ...Option) (*Writer, error) {
	if snaplen < 0 {
		return nil, errors.New("pcap: negative snaplen")
	}
	if snaplen == 0 {
		snaplen = DefaultSnapLen
	}
	pw := &Writer{w: w, snaplen: snaplen, clock: clock.Real{}, linkType: LinkTypeRaw}
	for _, o := range opts {
		o(pw)
	}
	var h [fileHeaderLen]byte
	magic := uint32(magicMicro)
	if pw.nano {
		magic = magicNano
	}
	// Written in little-endian; readers detect byte order from the magic number.
	binary.LittleEndian.PutUint32(h[0:], magic)
	binary.LittleEndian.PutUint16(h[4:], versionMajor)
	binary.LittleEndian.PutUint16(h[6:], versionMinor)
	// h[8:16]: thiszone and sigfigs are zero (timestamps are UTC).
	binary.LittleEndian.PutUint32(h[16:], uint32(snaplen))
	binary.LittleEndian.PutUint32(h[20:], pw.linkType)
	if _, err := w.Write(h[:]); err != nil {
		return nil, err
	}
	return pw, nil
}

// WritePacket records pkt (cut to the snap length) with timestamp ts.
func (w *Writer) WritePacket(ts time.Time, pkt []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	incl := min(len(pkt), w.snaplen)
	need := recHeaderLen + incl
	if cap(w.buf) < need {
		w.buf = make([]byte, need)
	}
	b := w.buf[:need]
	frac := uint32(ts.Nanosecond())
	if !w.nano {
		frac /= 1000
	}
	binary.LittleEndian.PutUint32(b[0:], uint32(ts.Unix()))
	binary.LittleEndian.PutUint32(b[4:], frac)
	binary.LittleEndian.PutUint32(b[8:], uint32(incl))
	binary.LittleEndian.PutUint32(b[12:], uint32(len(pkt)))
	copy(b[recHeaderLen:], pkt[:incl])
	// One Write per record, so a file is never left with half a header between records
	// from two goroutines.
	if _, err := w.w.Write(b); err != nil {
		w.err = err
		return err
	}
	return nil
}

// Err returns the first write error, if any (a Tap cannot report errors any other way).
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Tap returns an endpoint that behaves like inner and records every packet written through
// it (up to the first one longer than the MTU) and every packet inner delivers, timestamped by w's clock.
// Recording errors do not disturb traffic; see w.Err. If inner is a link.GSOEndpoint, so
// is the tap, and a super-segment is recorded as the one large packet it was written as.
func Tap(inner link.Endpoint, w *Writer) link.Endpoint {
	t := &tap{inner: inner, w: w}
	if g, ok := inner.(link.GSOEndpoint); ok {
		return &gsoTap{tap: t, g: g}
	}
	return t
}

type gsoTap struct {
	*tap
	g link.GSOEndpoint
}

func (t *gsoTap) GSOMaxSize() int { return t.g.GSOMaxSize() }

func (t *gsoTap) WriteGSO(pkt []byte, mss int) error {
	// The sender left the checksum to the link (link.GSOEndpoint); the record shows it
	// complete, as for the super-segment the link will cut.
	wire.FillTCPChecksum(pkt)
	t.w.WritePacket(t.w.clock.Now(), pkt)
	return t.g.WriteGSO(pkt, mss)
}

type tap struct {
	inner link.Endpoint
	w     *Writer
}

func (t *tap) MTU() int     { return t.inner.MTU() }
func (t *tap) Close() error { return t.inner.Close() }

func (t *tap) Attach(d link.Dispatcher) {
	if d == nil {
		t.inner.Attach(nil)
		return
	}
	t.inner.Attach(&tapDispatcher{d: d, w: t.w})
}

func (t *tap) WritePackets(pkts [][]byte) (int, error) {
	// Recorded before the write, so that a reply the peer delivers (and a tap on the peer
	// records) cannot land in the file ahead of its request. Packets longer than the MTU
	// are not recorded: the link rejects them, and stops the batch there.
	now := t.w.clock.Now()
	mtu := t.inner.MTU()
	for _, p := range pkts {
		if len(p) > mtu {
			break
		}
		t.w.WritePacket(now, p)
	}
	return t.inner.WritePackets(pkts)
}

type tapDispatcher struct {
	d link.Dispatcher
	w *Writer
}

func (t *tapDispatcher) DeliverPackets(pkts [][]byte) {
	now := t.w.clock.Now()
	for _, p := range pkts {
		t.w.WritePacket(now, p)
	}
	t.d.DeliverPackets(pkts)
}

// DeliverVerified records a batch whose TCP checksums the link left partial
// (link.VerifiedDispatcher) with the checksums completed, as they will be on the wire,
// and passes it on.
func (t *tapDispatcher) DeliverVerified(pkts [][]byte) {
	now := t.w.clock.Now()
	for _, p := range pkts {
		wire.FillTCPChecksum(p)
		t.w.WritePacket(now, p)
	}
	if vd, ok := t.d.(link.VerifiedDispatcher); ok {
		vd.DeliverVerified(pkts)
	} else {
		t.d.DeliverPackets(pkts)
	}
}
