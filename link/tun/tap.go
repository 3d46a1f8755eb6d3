//go:build linux

package tun

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

// ethHdrLen is the Ethernet II header a TAP device's frames begin with (destination and
// source MAC, EtherType; IEEE 802.3 §3.1.1), without preamble or FCS, which the TAP
// device neither sends nor expects.
const ethHdrLen = 14

// vlanTagLen is one IEEE 802.1Q tag: a tagged frame may be this much longer than
// MTU+ethHdrLen, and is delivered so that the Ethernet layer counts and drops it.
const vlanTagLen = 4

// OpenTAP creates the TAP device name (the kernel picks one when name is empty or holds a
// pattern like "tap%d"), or attaches to an existing TAP device of that name, and starts
// the reader: IFF_TAP|IFF_NO_PI, with IFF_VNET_HDR and the offloads of Options.VnetHdr as
// for a TUN device.
//
// The endpoint is a frame device: every packet it delivers and takes is an Ethernet II
// frame (14-byte header, no FCS). MTU is still the largest IP packet (the device's MTU),
// so frames are up to MTU()+14 bytes; WriteGSO takes an Ethernet frame that carries one
// TCP super-segment, MaxInboundSize counts the header. Frames shorter than an Ethernet
// header, and frames longer than MTU()+14 (+4 for one VLAN tag) that are not
// super-segments, are dropped and counted (Stats.RxRunt, RxTooLong). Answering ARP and
// NDP is the Ethernet layer's job (link/ether), not the device's.
//
// With Options.NetNS the device is opened inside that network namespace (see Options).
func OpenTAP(name string, opts Options) (*Endpoint, error) { return open(name, opts, true) }

// TAPFromFile is FromFile for a TAP descriptor (IFF_TAP|IFF_NO_PI, IFF_VNET_HDR exactly
// when opts.VnetHdr): the endpoint is a frame device as OpenTAP describes.
func TAPFromFile(f *os.File, opts Options) (*Endpoint, error) { return fromFile(f, opts, true) }

// IsTAP reports whether the endpoint's device is a TAP device (Ethernet frames) rather
// than a TUN device (IP packets).
func (e *Endpoint) IsTAP() bool { return e.l2 != 0 }

func kindName(tap bool) string {
	if tap {
		return "TAP"
	}
	return "TUN"
}

// ipOf returns the IP packet in p (the bytes after the virtio-net header): p itself on a
// TUN device; on a TAP device the frame's payload when its EtherType is IPv4 or IPv6, nil
// otherwise (ARP, VLAN-tagged or unknown frames carry no checksum the device handles).
func (e *Endpoint) ipOf(p []byte) []byte {
	if e.l2 == 0 {
		return p
	}
	if len(p) < ethHdrLen {
		return nil
	}
	switch binary.BigEndian.Uint16(p[12:]) {
	case 0x0800, 0x86dd: // IEEE EtherTypes of IPv4 (RFC 894) and IPv6 (RFC 2464)
		return p[ethHdrLen:]
	}
	return nil
}

// frameFits reports whether p (after the virtio-net header) may be delivered; a TAP
// device's runts and over-long frames are dropped and counted. gso: the kernel marked p
// as a super-segment, which may exceed the MTU.
func (e *Endpoint) frameFits(p []byte, gso bool) bool {
	if e.l2 == 0 {
		return true
	}
	switch {
	case len(p) < ethHdrLen:
		e.rxRunt.Add(1)
	case !gso && len(p) > e.mtu+ethHdrLen+vlanTagLen:
		e.rxTooLong.Add(1)
	default:
		return true
	}
	e.rxDropped.Add(1)
	return false
}

// Constants of linux/if_tun.h and linux/virtio_net.h that x/sys/unix does not have.
const (
	tunFUSO4 = 0x20 // TUN_F_USO4: the reader takes UDP super-segments over IPv4
	tunFUSO6 = 0x40 // TUN_F_USO6: ... over IPv6 (the kernel wants both or neither)
	gsoUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4: a UDP super-segment, gso_size payload each
)

const (
	// usoMaxSegs is the most datagrams one UDP super-segment holds (the kernel's
	// UDP_MAX_SEGMENTS).
	usoMaxSegs = 128
	// usoScratch holds the datagrams of the largest super-segment: its bytes, plus
	// headers (Ethernet, IP with options, UDP) copied into every datagram.
	usoScratch = maxPacket + ethHdrLen + usoMaxSegs*(ethHdrLen+60+8)
)

// isUSO reports whether b (virtio-net header and frame) is a UDP super-segment.
func isUSO(b []byte) bool {
	return len(b) >= vnetHdrLen && b[1]&^unix.VIRTIO_NET_HDR_GSO_ECN == gsoUDPL4
}

// splitUDP cuts the UDP super-segment b (virtio-net header and frame) into its datagrams
// in scratch, as the kernel's UDP GSO would (__udp_gso_segment): each with the headers
// copied, gso_size payload bytes (the last one the rest), the lengths and the IPv4
// identification and header checksum set, and a complete UDP checksum. It appends them
// to segs; a malformed one is dropped and counted.
func (e *Endpoint) splitUDP(b, scratch []byte, segs [][]byte) [][]byte {
	gso := int(binary.LittleEndian.Uint16(b[4:]))
	p := b[vnetHdrLen:]
	ip := e.ipOf(p)
	var ipLen int
	var v6 bool
	switch {
	case len(ip) >= wire.IPv4MinHeaderLen && ip[0]>>4 == 4 && ip[9] == wire.ProtoUDP:
		ipLen = int(ip[0]&0xf) * 4
	case len(ip) >= wire.IPv6HeaderLen && ip[0]>>4 == 6 && ip[6] == wire.ProtoUDP:
		ipLen, v6 = wire.IPv6HeaderLen, true
	}
	hdr := e.l2 + ipLen + wire.UDPHeaderLen
	if ipLen < wire.IPv4MinHeaderLen || gso <= 0 || len(p) <= hdr {
		e.rxDropped.Add(1)
		return segs
	}
	payload := p[hdr:]
	if (len(payload)+gso-1)/gso > usoMaxSegs || len(payload)+(len(payload)+gso-1)/gso*hdr > len(scratch) {
		e.rxDropped.Add(1)
		return segs
	}
	var src, dst netip.Addr
	if v6 {
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	} else {
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	}
	id := binary.BigEndian.Uint16(ip[4:])
	e.rxGSO.Add(1)
	off := 0
	for i := 0; len(payload) > 0; i++ {
		n := min(gso, len(payload))
		d := scratch[off : off+hdr+n]
		off += hdr + n
		copy(d, p[:hdr])
		copy(d[hdr:], payload[:n])
		payload = payload[n:]
		h := d[e.l2:]
		udpLen := wire.UDPHeaderLen + n
		if v6 {
			binary.BigEndian.PutUint16(h[4:], uint16(udpLen))
		} else {
			binary.BigEndian.PutUint16(h[2:], uint16(ipLen+udpLen))
			binary.BigEndian.PutUint16(h[4:], id+uint16(i)) // RFC 6864: a new ID per datagram
			h[10], h[11] = 0, 0
			binary.BigEndian.PutUint16(h[10:], ^wire.Checksum(h[:ipLen], 0))
		}
		u := h[ipLen:]
		binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
		u[6], u[7] = 0, 0
		c := ^wire.Checksum(u, wire.PseudoHeaderChecksum(wire.ProtoUDP, src, dst, udpLen))
		if c == 0 {
			c = 0xffff // RFC 768: a computed zero is sent as all ones
		}
		binary.BigEndian.PutUint16(u[6:], c)
		segs = append(segs, d)
		e.rxPackets.Add(1)
		e.rxBytes.Add(uint64(len(d)))
	}
	return segs
}

var (
	_ link.FrameWriter    = (*Endpoint)(nil)
	_ link.GSOFrameWriter = (*Endpoint)(nil)
)

// WriteFrames implements link.FrameWriter on a TAP device: frame i is hdrs[i] (its
// Ethernet header) and pkts[i] behind it, gathered by writev(2), so link/ether never
// copies a packet behind a header. Limits, drops and errors are WritePackets'. On a TUN
// device it fails with EOPNOTSUPP.
func (e *Endpoint) WriteFrames(hdrs, pkts [][]byte) (int, error) {
	if e.l2 == 0 {
		return 0, fmt.Errorf("tun: WriteFrames on the TUN device %s: %w", e.name, unix.EOPNOTSUPP)
	}
	var vh [vnetHdrLen]byte // GSO_NONE, no flags: the frame is complete as it is
	for i, p := range pkts {
		h := hdrs[i]
		n := len(h) + len(p)
		if n > e.mtu+e.l2 {
			return i, unix.EMSGSIZE
		}
		var err error
		if e.vnet {
			err = e.writev([][]byte{vh[:], h, p}, n)
		} else {
			err = e.writev([][]byte{h, p}, n)
		}
		if err != nil {
			return i, err
		}
	}
	return len(pkts), nil
}

// WriteGSOFrame implements link.GSOFrameWriter on a TAP device: WriteGSO of the frame
// whose Ethernet header is hdr and whose IP packet is pkt, without joining them.
func (e *Endpoint) WriteGSOFrame(hdr, pkt []byte, mss int) error {
	if e.l2 == 0 {
		return fmt.Errorf("tun: WriteGSOFrame on the TUN device %s: %w", e.name, unix.EOPNOTSUPP)
	}
	return e.writeGSO(hdr, pkt, mss)
}

// etherTypeOf is the EtherType of an Ethernet header (0 if h is shorter than one).
func etherTypeOf(h []byte) uint16 {
	if len(h) < ethHdrLen {
		return 0
	}
	return binary.BigEndian.Uint16(h[12:])
}

// ipEtherType is the EtherType that carries the IP packet p: IPv4's or IPv6's by its
// version, 0 for anything else.
func ipEtherType(p []byte) uint16 {
	if len(p) > 0 {
		switch p[0] >> 4 {
		case 4:
			return 0x0800
		case 6:
			return 0x86dd
		}
	}
	return 0
}
