package wire

import (
	"net/netip"
	"testing"
)

func TestQuickRoundTrip(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	b := make([]byte, 100)
	opts := TCPOptions{HasMSS: true, MSS: 1460, HasWindowScale: true, WindowScale: 7, SACKPermitted: true, HasTimestamps: true, TSVal: 5, TSEcr: 6}
	f := TCPFields{SrcPort: 1, DstPort: 2, Seq: 3, Ack: 4, Flags: TCPFlagSYN, Window: 100, Options: &opts}
	n := f.Encode(b[20:])
	(&IPv4Fields{TotalLen: 20 + n, TTL: 64, Protocol: ProtoTCP, Src: src, Dst: dst}).Encode(b)
	SetTCPChecksum(b[20:20+n], src, dst)
	ip, err := ParseIPv4(b[:20+n])
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := ParseTCP(ip.Payload())
	if err != nil || !tcp.VerifyChecksum(ip.Src(), ip.Dst()) {
		t.Fatal(err)
	}
	var o TCPOptions
	if err := tcp.ParseOptions(&o); err != nil || o != opts {
		t.Fatalf("%v %+v", err, o)
	}
}
