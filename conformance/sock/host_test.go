package sock

import (
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/wire"
)

var (
	local  = netip.MustParseAddr("192.168.0.1")
	remote = netip.MustParseAddr("192.0.2.1")
)

// packet builds an IPv4 TCP packet from the remote peer.
func packet(f wire.TCPFields, payload []byte) []byte {
	hl := f.HeaderLen()
	b := make([]byte, wire.IPv4MinHeaderLen+hl+len(payload))
	ip := wire.IPv4Fields{TotalLen: len(b), TTL: 64, Protocol: wire.ProtoTCP, Src: remote, Dst: local}
	ip.Encode(b)
	f.Encode(b[wire.IPv4MinHeaderLen:])
	copy(b[wire.IPv4MinHeaderLen+hl:], payload)
	wire.SetTCPChecksum(b[wire.IPv4MinHeaderLen:], remote, local)
	return b
}

func sysctls(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// A passive open through the socket calls, on virtual time: the SYN-ACK goes out at once,
// its retransmission a virtual second later (Sniff moves the clock to the timer), and the
// sysctls in force shape the stack (tcp_timestamps=0: no timestamps option).
func TestHostPassiveOpen(t *testing.T) {
	h := New(Config{Local: netip.PrefixFrom(local, 16), Sysctl: sysctls(map[string]string{"ipv4/tcp_timestamps": "0"})})
	defer h.Close()
	fd, e := h.Socket(syscall.AF_INET, syscall.SOCK_STREAM|sockNonblock, 0)
	if e != 0 || fd != 3 {
		t.Fatalf("socket: %d %v, want fd 3", fd, e)
	}
	if e := h.Bind(fd, netip.AddrPortFrom(netip.IPv4Unspecified(), 8080)); e != 0 {
		t.Fatal(e)
	}
	if e := h.Listen(fd, 1); e != 0 {
		t.Fatal(e)
	}
	if _, _, e := h.Accept(fd); e != syscall.EAGAIN {
		t.Fatalf("accept on an empty queue: %v, want EAGAIN", e)
	}
	start := h.Now()
	h.Inject(packet(wire.TCPFields{SrcPort: 5000, DstPort: 8080, Seq: 100, Flags: wire.TCPFlagSYN, Window: 65535,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1000, HasTimestamps: true, TSVal: 1}}, nil))
	synack := func() (wire.TCP, time.Time) {
		t.Helper()
		pkt, at, ok := h.Sniff()
		if !ok {
			t.Fatal("no packet")
		}
		tcp := wire.TCP(pkt[wire.IPv4MinHeaderLen:])
		if tcp.Flags() != wire.TCPFlagSYN|wire.TCPFlagACK || tcp.Ack() != 101 {
			t.Fatalf("got flags %#x ack %d, want a SYN-ACK of 101", tcp.Flags(), tcp.Ack())
		}
		return tcp, at
	}
	sa, at := synack()
	if d := at.Sub(start); d > time.Millisecond {
		t.Fatalf("SYN-ACK after %v of virtual time", d)
	}
	var o wire.TCPOptions
	if err := sa.ParseOptions(&o); err != nil || o.HasTimestamps {
		t.Fatalf("SYN-ACK options %+v %v: tcp_timestamps=0 should leave them out", o, err)
	}
	if _, at2 := synack(); at2.Sub(at) != time.Second {
		t.Fatalf("SYN-ACK retransmitted after %v, want 1s (virtual)", at2.Sub(at))
	}
	h.Inject(packet(wire.TCPFields{SrcPort: 5000, DstPort: 8080, Seq: 101, Ack: sa.Seq() + 1, Flags: wire.TCPFlagACK, Window: 65535}, []byte("hi")))
	nfd, peer, e := h.Accept(fd)
	if e != 0 || nfd != 4 || peer != netip.AddrPortFrom(remote, 5000) {
		t.Fatalf("accept: %d %v %v", nfd, peer, e)
	}
	buf := make([]byte, 8)
	if n, e := h.Read(nfd, buf, 0); e != 0 || string(buf[:n]) != "hi" {
		t.Fatalf("read %q %v", buf[:n], e)
	}
	fds := []PollFd{{Fd: nfd, Events: PollIn | PollOut}}
	if n, e := h.Poll(fds, 0); n != 1 || e != 0 || fds[0].Revents != PollOut {
		t.Fatalf("poll: %d %v revents %#x, want POLLOUT", n, e, fds[0].Revents)
	}
	if e := h.Close_(nfd); e != 0 {
		t.Fatal(e)
	}
	if e := h.Close_(nfd); e != syscall.EBADF {
		t.Fatalf("second close: %v, want EBADF", e)
	}
}

// A shell command the script runs after its first socket applies to the stack: a
// tcp_timestamps it wrote is read again (synack-data.pkt turns timestamps on midway),
// and `ip tcp_metrics flush` forgets the Fast Open cookies (fallback-exp-opt.pkt).
// Before the first socket there is no stack to apply them to.
func TestHostCommand(t *testing.T) {
	sc := map[string]string{"ipv4/tcp_timestamps": "0"}
	h := New(Config{Local: netip.PrefixFrom(local, 16), Sysctl: sysctls(sc)})
	defer h.Close()
	h.Command("sysctl -q net.ipv4.tcp_timestamps=0") // no stack yet: nothing to do
	if _, e := h.Socket(syscall.AF_INET, syscall.SOCK_STREAM|sockNonblock, 0); e != 0 {
		t.Fatal(e)
	}
	p := h.stack()
	if !p.Config().NoTimestamps {
		t.Fatal("timestamps on with tcp_timestamps=0")
	}
	sc["ipv4/tcp_timestamps"] = "1"
	h.Command("sysctl -q net.ipv4.tcp_timestamps=1")
	if p.Config().NoTimestamps {
		t.Fatal("timestamps still off after the script set tcp_timestamps=1")
	}
	h.Command("ip tcp_metrics flush all > /dev/null 2>&1") // must not fail on an empty cache
	if p.HasFastOpenCookie(remote) {
		t.Fatal("a cookie after the flush")
	}
}
