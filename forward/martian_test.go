//go:build linux

package forward

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/wire"
)

// martianPacket is an IPv6 packet from src to dst carrying a minimal segment of proto
// (ICMPv6 echo request, UDP datagram or TCP SYN to port) with a checksum valid for those
// addresses.
func martianPacket(src, dst netip.Addr, proto uint8, port uint16) []byte {
	var seg []byte
	switch proto {
	case wire.ProtoICMPv6:
		seg = []byte{wire.ICMPv6EchoRequest, 0, 0, 0, 0, 1, 0, 1, 'x'}
	case wire.ProtoUDP:
		seg = []byte{0x30, 0x39, byte(port >> 8), byte(port), 0, 9, 0, 0, 'x'}
	case wire.ProtoTCP:
		seg = make([]byte, 20)
		seg[0], seg[1], seg[2], seg[3] = 0x30, 0x39, byte(port>>8), byte(port)
		seg[7] = 1
		seg[12], seg[13], seg[14] = 5<<4, 0x02, 0xff
	}
	b := make([]byte, wire.IPv6HeaderLen+len(seg))
	f := wire.IPv6Fields{PayloadLen: len(seg), NextHeader: proto, HopLimit: 64, Src: src, Dst: dst}
	f.Encode(b)
	s := b[wire.IPv6HeaderLen:]
	copy(s, seg)
	sum := ^wire.Checksum(s, wire.PseudoHeaderChecksum(proto, src, dst, len(s)))
	off := map[uint8]int{wire.ProtoICMPv6: 2, wire.ProtoUDP: 6, wire.ProtoTCP: 16}[proto]
	s[off], s[off+1] = byte(sum>>8), byte(sum)
	return b
}

// Issue 19 (7): a process inside the namespace sending one IPv6 packet with an
// IPv4-mapped source (UDP, a TCP SYN or ICMPv6) killed `berth run` (As4 on an IPv6 address
// in the UDP checksum) and left the namespace behind. Now such packets are dropped and
// counted, and the forwarder keeps serving.
func TestMartianFromNamespace(t *testing.T) {
	testenv.NeedRoot(t)
	ns, s := session(t, SessionConfig{})
	hp := httpServer(t, "127.0.0.1:0")
	// The namespace's device, just up, sends IPv6 packets of its own (one of them counted
	// in Ip6InAddrErrors, in about one run of four): wait until the counter stays still.
	before := s.Stack.Stats()["Ip6InAddrErrors"]
	for still, deadline := time.Now(), time.Now().Add(5*time.Second); time.Since(still) < 500*time.Millisecond && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if n := s.Stack.Stats()["Ip6InAddrErrors"]; n != before {
			before, still = n, time.Now()
		}
	}
	var sent int
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(DeviceName)
		if err != nil {
			return err
		}
		// A packet socket writes the IPv6 packet to the TUN device as it is: the
		// namespace's own stack would refuse to send from a v4-mapped source.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IPV6)))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifc.Index}
		mapped := netip.MustParseAddr("::ffff:10.0.2.100")
		for _, p := range []struct {
			src, dst netip.Addr
		}{
			{mapped, DefaultGateway6},
			{DefaultNSAddr6.Addr(), netip.MustParseAddr("::ffff:10.0.2.2")},
		} {
			for _, proto := range []uint8{wire.ProtoUDP, wire.ProtoTCP, wire.ProtoICMPv6} {
				if err := unix.Sendto(fd, martianPacket(p.src, p.dst, proto, hp.Port()), 0, sa); err != nil {
					return fmt.Errorf("sendto: %w", err)
				}
				sent++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The forwarder is alive and still forwards; by then it has read every packet sent
	// before the request.
	resp, err := nsClient(ns).Get(fmt.Sprintf("http://10.0.2.2:%d/hello", hp.Port()))
	if err != nil {
		t.Fatalf("after the martians: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), "hello ") {
		t.Errorf("after the martians: %q", b)
	}
	if got := s.Stack.Stats()["Ip6InAddrErrors"] - before; got != uint64(sent) {
		t.Errorf("Ip6InAddrErrors grew by %d, want %d (one per martian)", got, sent)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
