package ether

import (
	"encoding/binary"

	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/wire"
)

// rxBatch is the IP packets of one input batch, reused from batch to batch.
type rxBatch struct{ p [][]byte }

// rxSide is the Endpoint as the device's Dispatcher, kept a separate type so that the
// Endpoint's own method set is that of a link.Endpoint.
type rxSide Endpoint

// DeliverPackets takes a batch of frames from the device.
func (r *rxSide) DeliverPackets(frames [][]byte) { (*Endpoint)(r).input(frames, false) }

// DeliverVerified takes a batch of frames whose TCP checksums the device vouches for
// (link.VerifiedDispatcher); the IP packets go up the same way when the stack takes them.
func (r *rxSide) DeliverVerified(frames [][]byte) { (*Endpoint)(r).input(frames, true) }

// input handles a batch of frames to completion: IP packets are collected and handed up in
// one batch, ARP, ND and DHCP are answered here.
func (e *Endpoint) input(frames [][]byte, verified bool) {
	bp := e.rx.get()
	up := bp.p[:0]
	maxLen := e.maxIn
	c := &e.ctr
	for _, f := range frames {
		c.EtherInFrames.Add(1)
		if len(f) < wire.EthernetHeaderLen {
			c.EtherInRunts.Add(1)
			continue
		}
		if len(f) > maxLen {
			// Longer than the MTU allows: a device never delivers one; a peer that sends
			// one disagrees about the MTU, and the stack would take it for a packet the
			// link could carry.
			c.EtherInTooBig.Add(1)
			continue
		}
		h := wire.Ethernet(f)
		if dst := h.Dst(); dst != e.mac && !dst.IsMulticast() {
			// Another station's unicast, as a TAP device in promiscuous mode or a bridge
			// flooding an unknown address delivers it.
			c.EtherInNotForUs.Add(1)
			continue
		}
		if h.Src() == e.mac {
			// Our own frame come back (a hub, a bridge's hairpin) or another station
			// sending as us: either would be misread — our DAD probe as another node's
			// (RFC 4862 §5.4.3), our announcement as a conflict.
			c.EtherInLooped.Add(1)
			continue
		}
		switch et := h.EtherType(); et {
		case wire.EtherTypeIPv4:
			p := trim4(h.Payload())
			if e.dhcp != nil && isDHCPToServer(p) {
				e.dhcpInput(h, p)
				continue
			}
			up = append(up, p)
		case wire.EtherTypeIPv6:
			p := trim6(h.Payload())
			if isND(p) {
				e.ndInput(h, p)
				continue
			}
			if e.dhcp6 != nil && isDHCPv6ToServer(p) {
				e.dhcpv6Input(h, p)
				continue
			}
			up = append(up, p)
		case wire.EtherTypeARP:
			e.arpInput(h)
		case wire.EtherTypeVLAN, wire.EtherTypeQinQ:
			// berth's interfaces are untagged: a tagged frame belongs to a VLAN it is not
			// on (IEEE 802.1Q §6.9), and is dropped, counted, rather than misread.
			c.EtherInVLAN.Add(1)
		default:
			c.EtherInUnknownTypes.Add(1)
		}
	}
	if len(up) > 0 {
		if d := e.up.Load(); d != nil {
			if vd, ok := (*d).(link.VerifiedDispatcher); ok && verified {
				vd.DeliverVerified(up)
			} else {
				(*d).DeliverPackets(up)
			}
		}
	}
	clear(up)
	bp.p = up[:0]
	e.rx.put(bp)
}

// trim4 cuts Ethernet padding (a frame carries at least 46 bytes, IEEE 802.3 §3.2.7) off an
// IPv4 packet by its total length, when that is plausible; the stack validates the rest.
func trim4(p []byte) []byte {
	if len(p) >= wire.IPv4MinHeaderLen {
		if t := int(binary.BigEndian.Uint16(p[2:])); t >= wire.IPv4MinHeaderLen && t <= len(p) {
			return p[:t]
		}
	}
	return p
}

// trim6 cuts padding off an IPv6 packet by its payload length.
func trim6(p []byte) []byte {
	if len(p) >= wire.IPv6HeaderLen {
		if t := wire.IPv6HeaderLen + int(binary.BigEndian.Uint16(p[4:])); t <= len(p) {
			return p[:t]
		}
	}
	return p
}
