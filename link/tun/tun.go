//go:build linux

// Package tun connects a link.Endpoint to a Linux TUN device: the kernel on one side, a
// berth stack on the other, IP packets without a link-layer header (IFF_TUN|IFF_NO_PI).
//
// With Options.VnetHdr every packet carries a virtio-net header (IFF_VNET_HDR) and the
// kernel may hand over TCP super-segments (TSO) and packets whose checksum it left
// partial. The endpoint completes partial checksums before delivery, so the stack only
// ever sees valid packets, and delivers super-segments whole: inbound packets may then be
// larger than MTU, up to MaxInboundSize. Outbound, WriteGSO (link.GSOEndpoint) lets the
// kernel cut a large TCP segment into MSS-sized ones.
package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/nsthread"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

const (
	// vnetHdrLen is struct virtio_net_hdr without num_buffers (linux/virtio_net.h): the
	// size set with TUNSETVNETHDRSZ.
	vnetHdrLen = 10
	// maxPacket is the largest IP packet (IPv4 total length): the read buffer size, and
	// the largest super-segment the kernel sends when GSO is on (no BIG TCP).
	maxPacket = 65535
	batchSize = 64
	devPath   = "/dev/net/tun"
)

// DefaultTxQueueLen is the queue length Open gives a device unless Options.TxQueueLen
// says otherwise: how many packets the kernel holds for berth's reader (the device's
// txqueuelen). Linux makes TUN devices with 500, which a burst overflows: when
// thousands of connections close at once the kernel sends a FIN and an ACK for each
// faster than the stack takes them, and every packet past the queue is dropped (the
// device's tx_dropped) and waits for a retransmission timeout. The queue holds
// pointers to packets the kernel has already made, which the sockets that sent them
// account for, so a longer one costs 8 bytes a slot.
const DefaultTxQueueLen = 16384

// Options configure Open.
type Options struct {
	// MTU, when positive, is set on the device; otherwise the device's MTU is used.
	MTU int
	// VnetHdr enables the virtio-net header and asks the kernel for checksum and TCP
	// segmentation offloads (TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6), falling back to fewer
	// when refused; Offloads reports what is on.
	VnetHdr bool
	// TxQueueLen is the device's queue length toward berth (txqueuelen), which Open
	// raises the device's to when it is shorter: 0 means DefaultTxQueueLen, negative
	// leaves the device's as it is. FromFile does not apply it (the device may be in
	// another namespace, where ioctls by name do not reach it).
	TxQueueLen int
	// NetNS, when set, is the path of a network namespace (/run/netns/NAME,
	// /proc/PID/ns/net) in which Open and OpenTAP open the device: the device is created
	// or found there, and its MTU and queue length set there, while the endpoint serves
	// it from the caller's namespace. This is how a device that rootlesskit or a
	// container engine made inside a namespace is handed over. Needs CAP_SYS_ADMIN over
	// the namespace (setns) as well as CAP_NET_ADMIN in it.
	NetNS string
}

// Offloads says which offloads the kernel accepted (TUNSETOFFLOAD).
type Offloads struct {
	Csum, TSO4, TSO6 bool // checksum offload, TCP segmentation offload for IPv4 and IPv6
	// USO: the kernel may send UDP super-segments (TUN_F_USO4|TUN_F_USO6, Linux 6.2),
	// which the endpoint cuts into datagrams before delivery. Asked for on TAP devices.
	USO bool
}

// Stats counts the endpoint's traffic.
type Stats struct {
	RxPackets, RxBytes uint64 // packets and bytes read from the device
	RxGSO              uint64 // super-segments delivered whole
	RxCsumCompleted    uint64 // partial checksums finished before delivery
	RxDropped          uint64 // malformed virtio-net header, or no Dispatcher attached
	RxRunt             uint64 // TAP: frames shorter than an Ethernet header (also in RxDropped)
	RxTooLong          uint64 // TAP: frames over MTU+14 that are not super-segments (also in RxDropped)
	TxPackets, TxBytes uint64
	TxGSO              uint64 // WriteGSO super-segments
	TxDropped          uint64 // the device's queue was full (EAGAIN)
}

// Endpoint is an open TUN device. It implements link.Endpoint and link.GSOEndpoint.
type Endpoint struct {
	name     string
	mtu      int
	vnet     bool
	l2       int // link-layer header before the IP packet: 0 (TUN), ethHdrLen (TAP)
	offloads Offloads
	file     *os.File
	rc       syscall.RawConn
	disp     atomic.Pointer[dispatcherBox]
	wg       sync.WaitGroup
	once     sync.Once
	closed   atomic.Bool
	fd       int          // the device descriptor, for writes (see writev)
	wmu      sync.RWMutex // writers hold it shared; Close exclusively before closing fd
	readErr  atomic.Pointer[error]

	rxPackets, rxBytes, rxGSO, rxCsum, rxDropped atomic.Uint64
	rxRunt, rxTooLong                            atomic.Uint64
	txPackets, txBytes, txGSO, txDropped         atomic.Uint64
}

var _ link.GSOEndpoint = (*Endpoint)(nil)

type dispatcherBox struct{ d link.Dispatcher }

// Open creates the TUN device name (the kernel picks one when name is empty or holds a
// pattern like "berth%d"), or attaches to an existing TUN device of that name, and starts
// the reader goroutine. The caller needs CAP_NET_ADMIN.
func Open(name string, opts Options) (*Endpoint, error) { return open(name, opts, false) }

// open opens /dev/net/tun (in opts.NetNS when set), attaches the descriptor to the TUN or
// TAP device name and starts the reader.
func open(name string, opts Options, tap bool) (*Endpoint, error) {
	var e *Endpoint
	fd := -1
	// In opts.NetNS: the device is created in the namespace its descriptor is opened in.
	err := nsthread.Run(opts.NetNS, func() error {
		var err error
		fd, err = unix.Open(devPath, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			switch {
			case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
				return fmt.Errorf("tun: no TUN support: open %s: %w (load the tun module, or create the node: mknod %s c 10 200)", devPath, err, devPath)
			case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
				return fmt.Errorf("tun: open %s: %w (needs CAP_NET_ADMIN or access to the device node)", devPath, err)
			}
			return &os.PathError{Op: "open", Path: devPath, Err: err}
		}
		// The ioctls by name (MTU, queue length) must run in the device's namespace too.
		if e, err = setup(fd, name, opts, tap); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := e.start(fd); err != nil {
		return nil, err
	}
	return e, nil
}

// start takes over fd, a configured non-blocking TUN descriptor, and starts the reader.
// On error fd is closed.
func (e *Endpoint) start(fd int) error {
	// A non-blocking descriptor joins the runtime poller, so the reader waits without
	// holding a thread and Close wakes it.
	e.fd = fd
	e.file = os.NewFile(uintptr(fd), devPath)
	var err error
	if e.rc, err = e.file.SyscallConn(); err != nil {
		e.file.Close()
		return fmt.Errorf("tun: %w", err)
	}
	e.wg.Add(1)
	go e.reader()
	return nil
}

func setup(fd int, name string, opts Options, tap bool) (*Endpoint, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("tun: device name %q: %w", name, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if tap {
		flags = unix.IFF_TAP | unix.IFF_NO_PI
	}
	if opts.VnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		why := ""
		switch {
		case errors.Is(err, unix.EPERM):
			why = " (needs CAP_NET_ADMIN)"
		case errors.Is(err, unix.EBUSY):
			why = " (a device of that name is in use, or was created with other flags)"
		case errors.Is(err, unix.EINVAL):
			why = " (a device of that name exists and is not a " + kindName(tap) + " device?)"
		}
		return nil, fmt.Errorf("tun: TUNSETIFF %q: %w%s", name, err, why)
	}
	e := &Endpoint{name: ifr.Name(), vnet: opts.VnetHdr}
	if tap {
		e.l2 = ethHdrLen
	}
	if err := e.setVnet(fd); err != nil {
		return nil, err
	}
	if err := e.setMTU(opts.MTU); err != nil {
		return nil, err
	}
	if err := e.setTxQueueLen(opts.TxQueueLen); err != nil {
		return nil, err
	}
	return e, nil
}

// ifreqSocket is an ordinary socket for ioctls on the device by name.
func ifreqSocket() (int, error) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("tun: socket for device ioctls: %w", err)
	}
	return s, nil
}

// setTxQueueLen raises the device's queue length to n (0: DefaultTxQueueLen; negative:
// leave it). A longer queue set by the administrator is kept.
func (e *Endpoint) setTxQueueLen(n int) error {
	if n < 0 {
		return nil
	}
	if n == 0 {
		n = DefaultTxQueueLen
	}
	s, err := ifreqSocket()
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, _ := unix.NewIfreq(e.name)
	if err := unix.IoctlIfreq(s, unix.SIOCGIFTXQLEN, ifr); err != nil {
		return fmt.Errorf("tun: read the queue length of %s: %w", e.name, err)
	}
	if int(ifr.Uint32()) >= n {
		return nil
	}
	ifr.SetUint32(uint32(n))
	if err := unix.IoctlIfreq(s, unix.SIOCSIFTXQLEN, ifr); err != nil {
		return fmt.Errorf("tun: set the queue length of %s to %d: %w", e.name, n, err)
	}
	return nil
}

// setVnet sets the virtio-net header size and asks for offloads when e.vnet is set.
func (e *Endpoint) setVnet(fd int) error {
	if e.vnet {
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
			return fmt.Errorf("tun: TUNSETVNETHDRSZ: %w", err)
		}
		// Ask for the most, then less: old kernels refuse flags they do not know with
		// EINVAL. USO (TUN_F_USO4/6) is not asked for: a UDP super-segment holds several
		// datagrams, which the stack cannot take as one packet.
		tries := []struct {
			flags int
			o     Offloads
		}{
			{unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6, Offloads{Csum: true, TSO4: true, TSO6: true}},
			{unix.TUN_F_CSUM | unix.TUN_F_TSO4, Offloads{Csum: true, TSO4: true}},
			{unix.TUN_F_CSUM, Offloads{Csum: true}},
		}
		if e.l2 != 0 {
			// On a TAP device the endpoint cuts UDP super-segments itself (splitUDP).
			tries = append(tries[:0:0], append([]struct {
				flags int
				o     Offloads
			}{{unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | tunFUSO4 | tunFUSO6,
				Offloads{Csum: true, TSO4: true, TSO6: true, USO: true}}}, tries...)...)
		}
		for _, try := range tries {
			if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, try.flags) == nil {
				e.offloads = try.o
				break
			}
		}
	}
	return nil
}

// setMTU sets (mtu > 0) or reads the device MTU through an ordinary socket's ioctl.
func (e *Endpoint) setMTU(mtu int) error {
	s, err := ifreqSocket()
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, _ := unix.NewIfreq(e.name)
	if mtu > 0 {
		ifr.SetUint32(uint32(mtu))
		if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
			return fmt.Errorf("tun: set MTU %d on %s: %w", mtu, e.name, err)
		}
		e.mtu = mtu
		return nil
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFMTU, ifr); err != nil {
		return fmt.Errorf("tun: read MTU of %s: %w", e.name, err)
	}
	e.mtu = int(ifr.Uint32())
	return nil
}

// Err reports why the reader stopped early (a read error other than Close), or nil.
func (e *Endpoint) Err() error {
	if p := e.readErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Name is the device's name.
func (e *Endpoint) Name() string { return e.name }

// MTU is the device MTU as of Open.
func (e *Endpoint) MTU() int { return e.mtu }

// Offloads reports which offloads are on (all false without Options.VnetHdr).
func (e *Endpoint) Offloads() Offloads { return e.offloads }

// MaxInboundSize is the largest packet the endpoint delivers: the MTU, or 65535 when the
// kernel may send TCP super-segments; on a TAP device, 14 more for the Ethernet header.
func (e *Endpoint) MaxInboundSize() int {
	if e.offloads.TSO4 || e.offloads.TSO6 {
		return maxPacket + e.l2
	}
	return e.mtu + e.l2
}

// GSOMaxSize is the largest super-segment WriteGSO takes, IP header included (0 without
// the vnet header). On a TAP device the Ethernet header comes on top: WriteGSO takes
// frames of up to GSOMaxSize()+14 bytes.
func (e *Endpoint) GSOMaxSize() int {
	if !e.vnet {
		return 0
	}
	return maxPacket
}

// Attach sets where inbound packets go; nil detaches (packets are then dropped).
func (e *Endpoint) Attach(d link.Dispatcher) {
	if d == nil {
		e.disp.Store(nil)
		return
	}
	e.disp.Store(&dispatcherBox{d})
}

// Stats returns a snapshot of the counters.
func (e *Endpoint) Stats() Stats {
	return Stats{
		RxPackets: e.rxPackets.Load(), RxBytes: e.rxBytes.Load(), RxGSO: e.rxGSO.Load(),
		RxCsumCompleted: e.rxCsum.Load(), RxDropped: e.rxDropped.Load(),
		RxRunt: e.rxRunt.Load(), RxTooLong: e.rxTooLong.Load(),
		TxPackets: e.txPackets.Load(), TxBytes: e.txBytes.Load(), TxGSO: e.txGSO.Load(),
		TxDropped: e.txDropped.Load(),
	}
}

// Close closes the device (a non-persistent device disappears), wakes the reader and
// waits for it to end.
func (e *Endpoint) Close() error {
	err := net.ErrClosed
	e.once.Do(func() {
		e.wmu.Lock()
		e.closed.Store(true)
		e.wmu.Unlock()
		err = e.file.Close()
		e.wg.Wait()
	})
	return err
}

// WritePackets writes each packet to the device. A full device queue (EAGAIN) drops and
// counts the packet instead of waiting. Packets longer than the MTU (on a TAP device:
// frames longer than MTU+14) stop the batch with EMSGSIZE; after Close, net.ErrClosed.
func (e *Endpoint) WritePackets(pkts [][]byte) (int, error) {
	var hdr [vnetHdrLen]byte // GSO_NONE, no flags: the packet is complete as it is
	for i, p := range pkts {
		if len(p) > e.mtu+e.l2 {
			return i, syscall.EMSGSIZE
		}
		if err := e.write(hdr[:], p); err != nil {
			return i, err
		}
	}
	return len(pkts), nil
}

// WriteGSO implements link.GSOEndpoint: the kernel segments pkt (one IPv4 or IPv6 TCP
// packet; on a TAP device, one Ethernet frame carrying it) into mss-sized segments. The
// TCP checksum field is overwritten with the pseudo-header sum that
// VIRTIO_NET_HDR_F_NEEDS_CSUM asks for; the kernel finishes every segment's checksum.
func (e *Endpoint) WriteGSO(pkt []byte, mss int) error {
	if len(pkt) < e.l2 {
		return syscall.EINVAL
	}
	return e.writeGSO(pkt[:e.l2], pkt[e.l2:], mss)
}

// writeGSO writes the super-segment whose link-layer header is hdr (empty on TUN) and
// whose IP packet is ipp, gathered by writev without joining them.
func (e *Endpoint) writeGSO(hdr, ipp []byte, mss int) error {
	return e.writeGSOv(hdr, ipp, nil, nil, mss, false)
}

var (
	_ link.GSOGatherWriter      = (*Endpoint)(nil)
	_ link.GSOFrameGatherWriter = (*Endpoint)(nil)
)

// WriteGSOGather implements link.GSOGatherWriter on a TUN device: WriteGSO of the packet
// head+p1+p2, whose IP and TCP headers are all in head, gathered by writev. On a TAP
// device it fails with EOPNOTSUPP (WriteGSOFrameGather takes the Ethernet header).
func (e *Endpoint) WriteGSOGather(head, p1, p2 []byte, mss int) error {
	if e.l2 != 0 {
		return fmt.Errorf("tun: WriteGSOGather on the TAP device %s: %w", e.name, unix.EOPNOTSUPP)
	}
	return e.writeGSOv(nil, head, p1, p2, mss, true)
}

// WriteGSOFrameGather implements link.GSOFrameGatherWriter on a TAP device: the frame is
// the Ethernet header hdr and the packet head+p1+p2, as WriteGSOGather.
func (e *Endpoint) WriteGSOFrameGather(hdr, head, p1, p2 []byte, mss int) error {
	if e.l2 == 0 {
		return fmt.Errorf("tun: WriteGSOFrameGather on the TUN device %s: %w", e.name, unix.EOPNOTSUPP)
	}
	return e.writeGSOv(hdr, head, p1, p2, mss, true)
}

// writeGSOv writes the super-segment whose link-layer header is hdr and whose IP packet
// is head+p1+p2 (gather: the IP and TCP headers are all in head, whose IPv4 total
// length counts the pieces; otherwise p1 and p2 are empty and head is the packet).
func (e *Endpoint) writeGSOv(hdr, head, p1, p2 []byte, mss int, gather bool) error {
	if !e.vnet {
		return fmt.Errorf("tun: WriteGSO on %s without the vnet header: %w", e.name, syscall.EOPNOTSUPP)
	}
	n := len(head) + len(p1) + len(p2)
	if n > maxPacket || mss <= 0 {
		return syscall.EMSGSIZE
	}
	if e.l2 != 0 && (len(hdr) != e.l2 || etherTypeOf(hdr) != ipEtherType(head)) {
		return fmt.Errorf("tun: WriteGSO: not an Ethernet frame of an IP packet: %w", syscall.EINVAL)
	}
	var ipLen, tcpOff int
	var src, dst []byte
	var gsoType uint8
	switch {
	case len(head) >= wire.IPv4MinHeaderLen && head[0]>>4 == 4:
		if gather {
			// ParseIPv4's checks, on a header whose packet goes on past head.
			ipLen = int(head[0]&0xf) * 4
			if ipLen < wire.IPv4MinHeaderLen || ipLen > len(head) || head[9] != wire.ProtoTCP ||
				int(binary.BigEndian.Uint16(head[2:])) != n || wire.Checksum(head[:ipLen], 0) != 0xffff {
				return fmt.Errorf("tun: WriteGSO: not an IPv4 TCP packet: %w", syscall.EINVAL)
			}
		} else {
			ip, err := wire.ParseIPv4(head)
			if err != nil || ip.Protocol() != wire.ProtoTCP {
				return fmt.Errorf("tun: WriteGSO: not an IPv4 TCP packet: %w", syscall.EINVAL)
			}
			ipLen = ip.HeaderLen()
		}
		gsoType = unix.VIRTIO_NET_HDR_GSO_TCPV4
		src, dst = head[12:16], head[16:20]
	case len(head) >= wire.IPv6HeaderLen && head[0]>>4 == 6 && head[6] == wire.ProtoTCP:
		ipLen, gsoType = wire.IPv6HeaderLen, unix.VIRTIO_NET_HDR_GSO_TCPV6
		src, dst = head[8:24], head[24:40]
	default:
		return fmt.Errorf("tun: WriteGSO: not a TCP packet (IPv6 extension headers unsupported): %w", syscall.EINVAL)
	}
	tcpOff = ipLen
	if len(head) < tcpOff+wire.TCPMinHeaderLen {
		return syscall.EINVAL
	}
	thl := int(head[tcpOff+12]>>4) * 4
	if thl < wire.TCPMinHeaderLen || tcpOff+thl > len(head) {
		return syscall.EINVAL
	}
	payload := n - tcpOff - thl
	// Offsets in the virtio-net header count from the start of what follows it: the
	// Ethernet header on a TAP device.
	vh := [vnetHdrLen]byte{}
	if payload > mss {
		vh[1] = gsoType
		binary.LittleEndian.PutUint16(vh[2:], uint16(len(hdr)+tcpOff+thl)) // hdr_len
		binary.LittleEndian.PutUint16(vh[4:], uint16(mss))                 // gso_size
	}
	vh[0] = unix.VIRTIO_NET_HDR_F_NEEDS_CSUM
	binary.LittleEndian.PutUint16(vh[6:], uint16(len(hdr)+tcpOff)) // csum_start
	binary.LittleEndian.PutUint16(vh[8:], 16)                      // csum_offset: TCP checksum field
	// The partial checksum is the pseudo-header sum, not complemented (virtio spec
	// §5.1.6.2), over this packet's TCP length; the kernel adjusts it per segment.
	sa, _ := netip.AddrFromSlice(src)
	da, _ := netip.AddrFromSlice(dst)
	var csum [2]byte
	binary.BigEndian.PutUint16(csum[:], wire.PseudoHeaderChecksum(wire.ProtoTCP, sa, da, n-tcpOff))
	// The checksum goes in through its own iovec: the caller's packet is never modified.
	if err := e.writev([][]byte{vh[:], hdr, head[:tcpOff+16], csum[:], head[tcpOff+18:], p1, p2}, len(hdr)+n); err != nil {
		return err
	}
	e.txGSO.Add(1)
	return nil
}

// write writes one packet, with the virtio-net header first when enabled.
func (e *Endpoint) write(hdr, p []byte) error {
	if e.vnet {
		return e.writev([][]byte{hdr, p}, len(p))
	}
	return e.writev([][]byte{p}, len(p))
}

// writev writes one packet gathered from iov (at most 7 pieces; n bytes of IP packet or
// frame).
// It calls writev(2) directly on the descriptor, with the iovecs on the stack, so a write
// allocates nothing; wmu keeps Close from closing the descriptor during the call.
func (e *Endpoint) writev(iov [][]byte, n int) error {
	var vec [7]unix.Iovec
	for i, b := range iov {
		vec[i].Base = unsafe.SliceData(b)
		vec[i].SetLen(len(b))
	}
	e.wmu.RLock()
	if e.closed.Load() {
		e.wmu.RUnlock()
		return net.ErrClosed
	}
	// A raw system call (no entersyscall/exitsyscall): the descriptor is non-blocking,
	// so the call never waits, and the runtime's monitor (sysmon), which otherwise sees a
	// P in a system call on every tick of a bulk transfer, retakes it and wakes every
	// 20 µs, stays asleep; that was ~9 % of the drop-ins' CPU at MTU 65520.
	_, _, errno := unix.RawSyscall(unix.SYS_WRITEV, uintptr(e.fd), uintptr(unsafe.Pointer(&vec[0])), uintptr(len(iov)))
	e.wmu.RUnlock()
	var werr error
	if errno != 0 {
		werr = errno
	}
	switch {
	case werr == nil:
		e.txPackets.Add(1)
		e.txBytes.Add(uint64(n))
	case errors.Is(werr, unix.EAGAIN), errors.Is(werr, unix.ENOBUFS):
		e.txDropped.Add(1)
	case errors.Is(werr, unix.EIO):
		// The link is down (no carrier): like a real NIC, the packet is lost.
		e.txDropped.Add(1)
	default:
		return &net.OpError{Op: "write", Net: "tun", Err: os.NewSyscallError("write", werr)}
	}
	return nil
}

// reader reads batches until Close: it drains what the device has queued (up to
// batchSize packets), then hands the batch to the Dispatcher on this goroutine.
func (e *Endpoint) reader() {
	defer e.wg.Done()
	// Buffers for the largest packet, not the MTU: the device's MTU may be raised after
	// Open, and a short read would truncate packets.
	size := maxPacket + e.l2
	if e.vnet {
		size += vnetHdrLen
	}
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	sizes := make([]int, batchSize)
	batch := make([][]byte, 0, batchSize)
	var segBuf []byte
	var segs [][]byte
	if e.offloads.USO {
		segBuf, segs = make([]byte, usoScratch), make([][]byte, 0, usoMaxSegs)
	}
	// One closure for the goroutine's life: a closure per read would allocate per batch.
	var n int
	var rerr error
	readBatch := func(fd uintptr) bool {
		for n < batchSize {
			m, err := rawRead(int(fd), bufs[n])
			if err == unix.EAGAIN {
				return n > 0 // nothing yet: wait in the poller
			}
			if err != nil {
				rerr = err
				return true
			}
			sizes[n] = m
			n++
		}
		return true
	}
	var box *dispatcherBox
	var vd link.VerifiedDispatcher
	var vouched bool
	deliver := func(batch [][]byte) {
		if len(batch) > 0 {
			switch {
			case box == nil:
				e.rxDropped.Add(uint64(len(batch)))
			case vouched:
				vd.DeliverVerified(batch)
			default:
				box.d.DeliverPackets(batch)
			}
		}
	}
	for {
		n, rerr = 0, nil
		if err := e.rc.Read(readBatch); err != nil {
			return // closed
		}
		batch = batch[:0]
		box, vd = e.disp.Load(), nil
		if box != nil && e.vnet {
			vd, _ = box.d.(link.VerifiedDispatcher)
		}
		// With a dispatcher that takes it, a batch whose TCP checksums the kernel vouches
		// for all (link.VerifiedDispatcher) goes without summing any of them.
		vouched = vd != nil
		for i := 0; i < n && vouched; i++ {
			vouched = e.tcpVouched(bufs[i][:sizes[i]])
		}
		for i := 0; i < n; i++ {
			b := bufs[i][:sizes[i]]
			if segBuf != nil && isUSO(b) {
				// The datagrams of a UDP super-segment go as a batch of their own, in
				// order after the packets read before it.
				deliver(batch)
				batch = batch[:0]
				segs = e.splitUDP(b, segBuf, segs[:0])
				deliver(segs)
				continue
			}
			if p := e.inbound(b, vouched); p != nil {
				batch = append(batch, p)
			}
		}
		deliver(batch)
		if rerr != nil && !errors.Is(rerr, unix.EINTR) {
			// EBADFD (the device was deleted under us) or worse: nothing more will come,
			// and retrying would spin. Err reports it.
			err := error(&net.OpError{Op: "read", Net: "tun", Err: os.NewSyscallError("read", rerr)})
			e.readErr.Store(&err)
			return
		}
	}
}

// rawRead is read(2) on the non-blocking descriptor fd as a raw system call: it never
// blocks, so it need not tell the scheduler (see writev).
func rawRead(fd int, p []byte) (int, error) {
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// tcpVouched reports whether b (virtio-net header and packet or frame) is not TCP, or is
// TCP whose checksum the kernel vouches for: left partial (NEEDS_CSUM, generated on this
// machine) or checked (DATA_VALID).
func (e *Endpoint) tcpVouched(b []byte) bool {
	if len(b) < vnetHdrLen+e.l2+1 {
		return true // inbound drops it
	}
	if b[0]&(unix.VIRTIO_NET_HDR_F_NEEDS_CSUM|unix.VIRTIO_NET_HDR_F_DATA_VALID) != 0 {
		return true
	}
	p := e.ipOf(b[vnetHdrLen:])
	if p == nil {
		return true // not IP (ARP, a VLAN tag): no TCP checksum to vouch for
	}
	switch proto, v := nextProto(p); {
	case v == 4:
		return proto != wire.ProtoTCP
	case v == 6:
		// Only a header chain that ends at once in UDP or ICMPv6 is surely not TCP.
		return proto == wire.ProtoUDP || proto == wire.ProtoICMPv6
	case p[0]>>4 == 4 || p[0]>>4 == 6:
		return false // a truncated IP header: as before, not vouched for
	}
	return true // not IP: the stack drops it
}

// inbound strips and applies the virtio-net header; it returns nil for a packet to drop.
// vouched: the batch goes to a link.VerifiedDispatcher, so a TCP checksum the kernel left
// partial stays so.
func (e *Endpoint) inbound(b []byte, vouched bool) []byte {
	if !e.vnet {
		if !e.frameFits(b, false) {
			return nil
		}
		e.rxPackets.Add(1)
		e.rxBytes.Add(uint64(len(b)))
		return b
	}
	if len(b) < vnetHdrLen {
		e.rxDropped.Add(1)
		return nil
	}
	flags, gsoType := b[0], b[1]&^unix.VIRTIO_NET_HDR_GSO_ECN
	csumStart := int(binary.LittleEndian.Uint16(b[6:]))
	csumOff := int(binary.LittleEndian.Uint16(b[8:]))
	p := b[vnetHdrLen:]
	if !e.frameFits(p, gsoType != unix.VIRTIO_NET_HDR_GSO_NONE) {
		return nil
	}
	if flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
		// The kernel left the transport checksum partial: the field holds the
		// pseudo-header sum; summing from csum_start to the end and complementing
		// finishes it (virtio spec §5.1.6.2.1).
		at := csumStart + csumOff
		// An odd offset cannot be a 16-bit checksum field of the sum started at csumStart,
		// and a transport checksum never starts inside the IP header: writing it there
		// would rewrite the header itself (the fuzzer turned a non-IP packet into IPv4).
		if at+2 > len(p) || csumStart >= len(p) || csumOff%2 != 0 || csumStart < e.l2+wire.IPv4MinHeaderLen {
			e.rxDropped.Add(1)
			return nil
		}
		ipp := e.ipOf(p)
		if vouched && isTCP(ipp) {
			e.rxPackets.Add(1)
			e.rxBytes.Add(uint64(len(p)))
			if gsoType != unix.VIRTIO_NET_HDR_GSO_NONE {
				e.rxGSO.Add(1)
			}
			return p
		}
		c := ^wire.Checksum(p[csumStart:], 0)
		if c == 0 && gsoType != unix.VIRTIO_NET_HDR_GSO_TCPV4 && gsoType != unix.VIRTIO_NET_HDR_GSO_TCPV6 && isUDP(ipp) {
			c = 0xffff // RFC 768: a computed zero is sent as all ones
		}
		binary.BigEndian.PutUint16(p[at:], c)
		e.rxCsum.Add(1)
	}
	if gsoType != unix.VIRTIO_NET_HDR_GSO_NONE {
		e.rxGSO.Add(1)
	}
	e.rxPackets.Add(1)
	e.rxBytes.Add(uint64(len(p)))
	return p
}

// nextProto returns the protocol field of an IPv4 header or the next-header field of an
// IPv6 fixed header (which may name an extension header), and the IP version.
func nextProto(p []byte) (proto uint8, version uint8) {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		return p[9], 4
	case len(p) >= 40 && p[0]>>4 == 6:
		return p[6], 6
	}
	return 0, 0
}

func isTCP(p []byte) bool {
	proto, v := nextProto(p)
	return v != 0 && proto == wire.ProtoTCP
}

func isUDP(p []byte) bool {
	proto, v := nextProto(p)
	return v != 0 && proto == wire.ProtoUDP
}
