package sock

import (
	"net/netip"
	"syscall"
	"testing"

	"github.com/berthnet/berth/wire"
)

// Urgent data as Linux's sockets without SO_OOBINLINE read it, through splice(2) and
// recv(2) (tcp/splice/tcp_splice_loop_test.pkt: "< U. 1:101(100) ... urg 100", splice of
// 99 returns 99, the next splice 0 at the mark, instead of looping): recv skips the
// urgent byte and stops at a mark after data.
func TestHostSpliceUrgent(t *testing.T) {
	h := New(Config{Local: netip.PrefixFrom(local, 16), Sysctl: sysctls(map[string]string{"ipv4/tcp_timestamps": "0"})})
	defer h.Close()
	fd, _ := h.Socket(syscall.AF_INET, syscall.SOCK_STREAM|sockNonblock, 0)
	if e := h.Bind(fd, netip.AddrPortFrom(netip.IPv4Unspecified(), 8080)); e != 0 {
		t.Fatal(e)
	}
	if e := h.Listen(fd, 1); e != 0 {
		t.Fatal(e)
	}
	h.Inject(packet(wire.TCPFields{SrcPort: 5000, DstPort: 8080, Seq: 100, Flags: wire.TCPFlagSYN, Window: 65535,
		Options: &wire.TCPOptions{HasMSS: true, MSS: 1000}}, nil))
	pkt, _, ok := h.Sniff()
	if !ok {
		t.Fatal("no SYN-ACK")
	}
	iss := wire.TCP(pkt[wire.IPv4MinHeaderLen:]).Seq()
	h.Inject(packet(wire.TCPFields{SrcPort: 5000, DstPort: 8080, Seq: 101, Ack: iss + 1, Flags: wire.TCPFlagACK, Window: 65535}, nil))
	nfd, _, e := h.Accept(fd)
	if e != 0 {
		t.Fatalf("accept: %v", e)
	}
	if e := h.SetNonblock(nfd, true); e != 0 {
		t.Fatal(e)
	}
	seq := uint32(101)
	urg := func(data string, up uint16) {
		h.Inject(packet(wire.TCPFields{SrcPort: 5000, DstPort: 8080, Seq: seq, Ack: iss + 1,
			Flags: wire.TCPFlagACK | wire.TCPFlagURG, Window: 65535, Urgent: up}, []byte(data)))
		seq += uint32(len(data))
	}
	var piped []byte
	pipe := func(b []byte) (int, error) { piped = append(piped, b...); return len(b), nil }
	data := make([]byte, 100)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	urg(string(data), 100)
	if n, e := h.Splice(nfd, 99, maxSplice, pipe); n != 99 || e != 0 || string(piped) != string(data[:99]) {
		t.Fatalf("splice 99: %d %v (%d bytes piped), want the 99 bytes before the urgent one", n, e, len(piped))
	}
	if n, e := h.Splice(nfd, 1, maxSplice, pipe); n != 0 || e != 0 || len(piped) != 99 {
		t.Fatalf("splice at the mark: %d %v, want 0", n, e)
	}
	if n, e := h.Ioctl(nfd, siocAtmark); n != 1 || e != 0 {
		t.Fatalf("SIOCATMARK: %d %v, want 1", n, e)
	}
	if n, e := h.Splice(nfd, 1, 0, pipe); n != -1 || e != syscall.EAGAIN {
		t.Fatalf("splice into a full pipe: %d %v, want EAGAIN", n, e)
	}
	buf := make([]byte, 16)
	if n, e := h.Read(nfd, buf, 0); n != -1 || e != syscall.EAGAIN {
		t.Fatalf("recv of the urgent byte alone: %d %q %v, want it skipped and EAGAIN", n, buf[:max(n, 0)], e)
	}
	if n, e := h.Ioctl(nfd, siocAtmark); n != 0 || e != 0 {
		t.Fatalf("SIOCATMARK after the urgent byte was skipped: %d %v, want 0", n, e)
	}
	urg("xyz", 2) // 'y' is urgent
	if n, e := h.Read(nfd, buf, 0); e != 0 || string(buf[:n]) != "x" {
		t.Fatalf("recv: %q %v, want what precedes the mark", buf[:max(n, 0)], e)
	}
	if n, e := h.Read(nfd, buf, 0); e != 0 || string(buf[:n]) != "z" {
		t.Fatalf("recv at the mark: %q %v, want the urgent byte skipped", buf[:max(n, 0)], e)
	}
}
