package wire_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/berthnet/berth/wire"
)

// validPackets returns a good IPv4 header + UDP, an IPv6 header, a TCP header, an ICMPv4
// and an ICMPv6 echo, for the error tables to break one field at a time.
func validIPv4() []byte {
	b := make([]byte, 28)
	(&wire.IPv4Fields{TotalLen: 28, TTL: 64, Protocol: wire.ProtoUDP, Src: src4, Dst: dst4}).Encode(b)
	(&wire.UDPFields{SrcPort: 1, DstPort: 2, Length: 8}).Encode(b[20:])
	return b
}

func validICMPv4() []byte {
	b := make([]byte, 12)
	(&wire.ICMPv4Fields{Type: wire.ICMPv4EchoRequest, ID: 1, Seq: 2}).Encode(b)
	wire.SetICMPv4Checksum(b)
	return b
}

func validICMPv6() []byte {
	b := make([]byte, 12)
	(&wire.ICMPv6Fields{Type: wire.ICMPv6EchoRequest, ID: 1, Seq: 2}).Encode(b)
	wire.SetICMPv6Checksum(b, src6, dst6)
	return b
}

func edit(b []byte, f func([]byte)) []byte {
	b = append([]byte(nil), b...)
	f(b)
	return b
}

func TestParseErrors(t *testing.T) {
	fixIPv4Sum := func(b []byte) {
		binary.BigEndian.PutUint16(b[10:], 0)
		binary.BigEndian.PutUint16(b[10:], ^wire.Checksum(b[:int(b[0]&15)*4], 0))
	}
	ipv4 := func(b []byte) error { _, err := wire.ParseIPv4(b); return err }
	ipv4q := func(b []byte) error { _, err := wire.ParseIPv4Quote(b); return err }
	ipv6 := func(b []byte) error { _, err := wire.ParseIPv6(b); return err }
	tcp := func(b []byte) error { _, err := wire.ParseTCP(b); return err }
	tcpOpts := func(b []byte) error { var o wire.TCPOptions; return wire.ParseTCPOptions(b, &o) }
	udp := func(b []byte) error { _, err := wire.ParseUDP(b); return err }
	icmp4 := func(b []byte) error { _, err := wire.ParseICMPv4(b); return err }
	icmp6 := func(b []byte) error { _, err := wire.ParseICMPv6(b, src6, dst6); return err }

	v6 := make([]byte, 48)
	(&wire.IPv6Fields{PayloadLen: 8, NextHeader: wire.ProtoUDP, HopLimit: 1, Src: src6, Dst: dst6}).Encode(v6)
	tcpHdr := make([]byte, 20)
	(&wire.TCPFields{SrcPort: 1, DstPort: 2}).Encode(tcpHdr)

	tests := []struct {
		name  string
		parse func([]byte) error
		in    []byte
		layer string
		kind  wire.ErrorKind
	}{
		{"ipv4 empty", ipv4, nil, "ipv4", wire.ErrTooShort},
		{"ipv4 19 bytes", ipv4, validIPv4()[:19], "ipv4", wire.ErrTooShort},
		{"ipv4 version 6", ipv4, edit(validIPv4(), func(b []byte) { b[0] = 0x65 }), "ipv4", wire.ErrBadVersion},
		{"ipv4 IHL 4", ipv4, edit(validIPv4(), func(b []byte) { b[0] = 0x44 }), "ipv4", wire.ErrBadLength},
		{"ipv4 IHL past end", ipv4, edit(validIPv4(), func(b []byte) { b[0] = 0x4f }), "ipv4", wire.ErrBadLength},
		{"ipv4 total > bytes", ipv4, edit(validIPv4(), func(b []byte) { b[3] = 29; fixIPv4Sum(b) }), "ipv4", wire.ErrBadLength},
		{"ipv4 total < IHL", ipv4, edit(validIPv4(), func(b []byte) { b[3] = 19; fixIPv4Sum(b) }), "ipv4", wire.ErrBadLength},
		{"ipv4 checksum", ipv4, edit(validIPv4(), func(b []byte) { b[8]-- }), "ipv4", wire.ErrBadChecksum},
		{"ipv4 quote short", ipv4q, validIPv4()[:10], "ipv4", wire.ErrTooShort},
		{"ipv4 quote version", ipv4q, edit(validIPv4(), func(b []byte) { b[0] = 0x55 }), "ipv4", wire.ErrBadVersion},
		{"ipv4 quote IHL", ipv4q, edit(validIPv4(), func(b []byte) { b[0] = 0x43 }), "ipv4", wire.ErrBadLength},
		{"ipv6 short", ipv6, v6[:39], "ipv6", wire.ErrTooShort},
		{"ipv6 version 4", ipv6, edit(v6, func(b []byte) { b[0] = 0x40 }), "ipv6", wire.ErrBadVersion},
		{"ipv6 payload length past end", ipv6, edit(v6, func(b []byte) { b[5] = 9 }), "ipv6", wire.ErrBadLength},
		{"ipv6 jumbo", ipv6, edit(v6, func(b []byte) { b[5] = 0 }), "ipv6", wire.ErrBadLength},
		{"tcp short", tcp, tcpHdr[:19], "tcp", wire.ErrTooShort},
		{"tcp offset 4", tcp, edit(tcpHdr, func(b []byte) { b[12] = 4 << 4 }), "tcp", wire.ErrBadLength},
		{"tcp offset past end", tcp, edit(tcpHdr, func(b []byte) { b[12] = 6 << 4 }), "tcp", wire.ErrBadLength},
		{"tcp option no length", tcpOpts, []byte{1, 1, 1, 2}, "tcp", wire.ErrBadOption},
		{"tcp option length 1", tcpOpts, []byte{30, 1, 0, 0}, "tcp", wire.ErrBadOption},
		{"tcp option length 0", tcpOpts, []byte{30, 0, 0, 0}, "tcp", wire.ErrBadOption},
		{"tcp option past end", tcpOpts, []byte{30, 5, 0, 0}, "tcp", wire.ErrBadOption},
		{"tcp MSS length 3", tcpOpts, []byte{2, 3, 5, 0}, "tcp", wire.ErrBadOption},
		{"tcp wscale length 4", tcpOpts, []byte{3, 4, 5, 0}, "tcp", wire.ErrBadOption},
		{"tcp sack-permitted length 3", tcpOpts, []byte{4, 3, 0, 1}, "tcp", wire.ErrBadOption},
		{"tcp sack length 2", tcpOpts, []byte{5, 2, 1, 1}, "tcp", wire.ErrBadOption},
		{"tcp sack length 6", tcpOpts, []byte{5, 6, 0, 0, 0, 0, 1, 1}, "tcp", wire.ErrBadOption},
		{"tcp timestamps length 8", tcpOpts, []byte{8, 8, 0, 0, 0, 0, 0, 0}, "tcp", wire.ErrBadOption},
		{"udp short", udp, make([]byte, 7), "udp", wire.ErrTooShort},
		{"udp length 7", udp, []byte{0, 1, 0, 2, 0, 7, 0, 0}, "udp", wire.ErrBadLength},
		{"udp length past end", udp, []byte{0, 1, 0, 2, 0, 9, 0, 0}, "udp", wire.ErrBadLength},
		{"icmpv4 short", icmp4, validICMPv4()[:7], "icmpv4", wire.ErrTooShort},
		{"icmpv4 checksum", icmp4, edit(validICMPv4(), func(b []byte) { b[11] ^= 1 }), "icmpv4", wire.ErrBadChecksum},
		{"icmpv6 short", icmp6, validICMPv6()[:7], "icmpv6", wire.ErrTooShort},
		{"icmpv6 checksum", icmp6, edit(validICMPv6(), func(b []byte) { b[4] ^= 0x80 }), "icmpv6", wire.ErrBadChecksum},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.parse(tc.in)
			var we *wire.Error
			if !errors.As(err, &we) || we.Layer != tc.layer || we.Kind != tc.kind {
				t.Fatalf("err = %v, want %s %v", err, tc.layer, tc.kind)
			}
			if !errors.Is(err, &wire.Error{Kind: tc.kind}) || !errors.Is(err, &wire.Error{Layer: tc.layer, Kind: tc.kind}) {
				t.Fatal("errors.Is does not match")
			}
			if errors.Is(err, &wire.Error{Layer: "other", Kind: tc.kind}) || errors.Is(err, &wire.Error{Kind: tc.kind%6 + 1}) {
				t.Fatal("errors.Is matches the wrong thing")
			}
		})
	}
	// The valid inputs the table breaks are themselves accepted.
	for i, err := range []error{ipv4(validIPv4()), ipv4q(validIPv4()), ipv6(v6), tcp(tcpHdr), udp(validIPv4()[20:]), icmp4(validICMPv4()), icmp6(validICMPv6())} {
		if err != nil {
			t.Errorf("valid input %d: %v", i, err)
		}
	}
}

func TestRejectDoesNotAllocate(t *testing.T) {
	bad := edit(validIPv4(), func(b []byte) { b[8]-- })
	if n := testing.AllocsPerRun(100, func() { _, _ = wire.ParseIPv4(bad) }); n != 0 {
		t.Fatalf("%v allocs per rejected packet", n)
	}
}
