package tcp

import (
	"encoding/binary"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/wire"
)

// A "fragmentation needed" quoting a SYN that carried data (Fast Open) lowers the MSS the
// SYN announces to the path MTU's (800 - 40 = 760) and sends the SYN again at once,
// without the data or the Fast Open option; the data follows the handshake in segments
// of the lower MSS, its 240-byte tail not held by Nagle (it was sent once already).
// An error quoting another sequence number, and one reporting no lower MTU, change nothing
// (tcp/fastopen/client/syn-data-icmp-unreach-frag-needed.pkt and -with-seq.pkt:
// "< icmp unreachable frag_needed mtu 800", "> S 0:0(0) <mss 760,...>", "< S. ... <mss
// 1040,...>", "> P. 1:1001(1000) ack 1", TCPI_OPT_SYN_DATA clear).
func TestLinuxFragNeededSynData(t *testing.T) {
	s := newScript(t, Config{FastOpen: FastOpenClient, NoTimestamps: true})
	data := strings.Repeat("x", 1000)
	c, syn := fastOpenSYN(t, s, data)
	if err := c.SetNoDelay(false); err != nil {
		t.Fatal(err)
	}
	iss := syn.Seq()
	wrong := append([]byte(nil), syn[:8]...)
	binary.BigEndian.PutUint32(wrong[4:], iss+5000)
	s.p.HandleICMPError(scriptLocal, scriptRemote, wrong, syscall.EMSGSIZE, 800)
	s.p.HandleICMPError(scriptLocal, scriptRemote, syn[:8], syscall.EMSGSIZE, 1500)
	s.none()
	s.p.HandleICMPError(scriptLocal, scriptRemote, syn[:8], syscall.EMSGSIZE, 800)
	s.expect(want{Flags: is(wire.TCPFlagSYN), Seq: is(iss), Len: is(0),
		Opts: is(wire.TCPOptions{HasMSS: true, MSS: 760, HasWindowScale: true, WindowScale: syn2ws(syn), SACKPermitted: true})})
	s.p.HandleICMPError(scriptLocal, scriptRemote, syn[:8], syscall.EMSGSIZE, 800) // no lower: nothing again
	s.none()
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: iss + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 5840, Options: &wire.TCPOptions{HasMSS: true, MSS: 1040}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(iss + 1), Ack: is[uint32](remoteISS + 1), Len: is(760)})
	s.expect(want{Flags: is(wire.TCPFlagACK), Seq: is(iss + 761), Len: is(240)})
	if c.Info().SynData {
		t.Fatal("SynData set: the SYN-ACK acknowledged none of the SYN's data")
	}
	c.Abort()
}

// syn2ws is the window scale our SYN offered.
func syn2ws(syn wire.TCP) uint8 {
	var o wire.TCPOptions
	syn.ParseOptions(&o)
	return o.WindowScale
}

// A bare SYN fits any path: the error sends nothing, but the SYN retransmitted at its
// timeout announces the path MTU's MSS (Linux's tcp_advertise_mss), and the MSS the
// connection uses is the smaller of it and the SYN-ACK's.
func TestLinuxFragNeededBareSYN(t *testing.T) {
	s := newScript(t, Config{NoTimestamps: true})
	ch := s.dialAsync()
	syn := s.expect(want{Flags: is(wire.TCPFlagSYN), MSS: is[uint16](1460)})
	s.waitTimer()
	s.p.HandleICMPError(scriptLocal, scriptRemote, syn[:8], syscall.EMSGSIZE, 1000)
	s.none()
	s.clk.Advance(time.Second)
	s.expect(want{Flags: is(wire.TCPFlagSYN), Seq: is(syn.Seq()), MSS: is[uint16](960)})
	s.inject(wire.TCPFields{SrcPort: 80, DstPort: syn.SrcPort(), Seq: remoteISS, Ack: syn.Seq() + 1,
		Flags: wire.TCPFlagSYN | wire.TCPFlagACK, Window: 65535, Options: &wire.TCPOptions{HasMSS: true, MSS: 1460}}, nil)
	s.expect(want{Flags: is(wire.TCPFlagACK)})
	c := <-ch
	if c == nil {
		t.FailNow()
	}
	go c.Write(make([]byte, 2000))
	s.expect(want{Flags: is(wire.TCPFlagACK), Len: is(960)})
	c.Abort()
}
