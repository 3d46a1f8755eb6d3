package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthnet/berth/clock"
	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/pipe"
	"github.com/berthnet/berth/wire"
)

// buildPacket returns an IPv4 or IPv6 packet carrying a TCP or UDP segment with payload,
// checksums set, built with the wire builders.
func buildPacket(src, dst netip.Addr, proto uint8, sport, dport uint16, payload []byte) []byte {
	ipLen := wire.IPv4MinHeaderLen
	if src.Is6() {
		ipLen = wire.IPv6HeaderLen
	}
	thl := wire.UDPHeaderLen
	if proto == wire.ProtoTCP {
		thl = wire.TCPMinHeaderLen
	}
	b := make([]byte, ipLen+thl+len(payload))
	seg := b[ipLen:]
	copy(seg[thl:], payload)
	if proto == wire.ProtoTCP {
		f := wire.TCPFields{SrcPort: sport, DstPort: dport, Seq: 1000, Ack: 2000,
			Flags: 0x18, Window: 65535}
		f.Encode(seg)
		wire.SetTCPChecksum(seg, src, dst)
	} else {
		f := wire.UDPFields{SrcPort: sport, DstPort: dport, Length: len(seg)}
		f.Encode(seg)
		wire.SetUDPChecksum(seg, src, dst)
	}
	if src.Is4() {
		f := wire.IPv4Fields{TotalLen: len(b), TTL: 64, Protocol: proto, Src: src, Dst: dst}
		f.Encode(b)
	} else {
		f := wire.IPv6Fields{PayloadLen: len(seg), NextHeader: proto, HopLimit: 64, Src: src, Dst: dst}
		f.Encode(b)
	}
	return b
}

func tshark(t *testing.T, file string, fields ...string) []string {
	t.Helper()
	path, err := exec.LookPath("tshark")
	testenv.NeedCommand(t, "tshark", err)
	args := []string{"-r", file, "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
		"-T", "fields", "-E", "separator=|"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// tshark may print warnings when running as root; keep only records.
		if strings.Contains(l, "|") {
			lines = append(lines, l)
		}
	}
	return lines
}

var (
	v4a = netip.MustParseAddr("192.0.2.1")
	v4b = netip.MustParseAddr("198.51.100.7")
	v6a = netip.MustParseAddr("2001:db8::1")
	v6b = netip.MustParseAddr("2001:db8::2")
)

// TestTapTshark records traffic both ways through a tapped pipe end under a manual clock
// and checks what tshark decodes: addresses, ports, valid checksums, timestamps in ns.
func TestTapTshark(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tap.pcap")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	clk := clock.NewManual(start)
	w, err := NewWriter(f, 0, Nanosecond(), WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	a, b := pipe.New(1500)
	defer a.Close()
	ta := Tap(a, w)
	var wg sync.WaitGroup
	wg.Add(2)
	ta.Attach(link.DispatcherFunc(func(p [][]byte) {
		for range p {
			wg.Done()
		}
	}))
	b.Attach(link.DispatcherFunc(func(p [][]byte) {}))

	out := [][]byte{
		buildPacket(v4a, v4b, wire.ProtoTCP, 40000, 80, []byte("GET / HTTP/1.0\r\n\r\n")),
		buildPacket(v6a, v6b, wire.ProtoUDP, 5353, 53, []byte("query")),
	}
	if n, err := ta.WritePackets(out); n != 2 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	clk.Advance(1500 * time.Microsecond)
	// Inbound: the peer answers; the tap records on delivery.
	in := [][]byte{
		buildPacket(v4b, v4a, wire.ProtoUDP, 53, 40001, []byte("answer")),
		buildPacket(v6b, v6a, wire.ProtoTCP, 443, 50000, bytes.Repeat([]byte{'x'}, 1000)),
	}
	if _, err := b.WritePackets(in); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := w.Err(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	got := tshark(t, file, "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport", "udp.srcport",
		"tcp.dstport", "udp.dstport", "tcp.checksum.status", "udp.checksum.status", "frame.len", "frame.time_epoch")
	want := []string{
		"192.0.2.1||198.51.100.7||40000||80||1||58|1735787045.123456789",
		"|2001:db8::1||2001:db8::2||5353||53||1|53|1735787045.123456789",
		"198.51.100.7||192.0.2.1|||53||40001||1|34|1735787045.124956789",
		"|2001:db8::2||2001:db8::1|443||50000||1||1060|1735787045.124956789",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tshark decoded\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestWriterSnaplenMicro checks the microsecond format and truncation both by decoding the
// bytes by hand and with tshark.
func TestWriterSnaplenMicro(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, 40)
	if err != nil {
		t.Fatal(err)
	}
	p := buildPacket(v4a, v4b, wire.ProtoUDP, 1, 2, make([]byte, 100))
	ts := time.Unix(1700000000, 987654321)
	if err := w.WritePacket(ts, p); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != magicMicro || le.Uint16(b[4:]) != 2 || le.Uint16(b[6:]) != 4 ||
		le.Uint32(b[16:]) != 40 || le.Uint32(b[20:]) != LinkTypeRaw {
		t.Fatalf("file header % x", b[:24])
	}
	r := b[24:]
	if le.Uint32(r[0:]) != 1700000000 || le.Uint32(r[4:]) != 987654 || le.Uint32(r[8:]) != 40 ||
		le.Uint32(r[12:]) != uint32(len(p)) || len(r) != 16+40 || !bytes.Equal(r[16:], p[:40]) {
		t.Fatalf("record header % x, %d bytes", r[:16], len(r))
	}
	file := filepath.Join(t.TempDir(), "snap.pcap")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got := tshark(t, file, "frame.len", "frame.cap_len", "ip.src", "udp.dstport", "frame.time_epoch")
	if len(got) != 1 || got[0] != "128|40|192.0.2.1|2|1700000000.987654000" {
		t.Fatalf("tshark: %q", got)
	}
}

func TestWriterConcurrent(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, 0)
	p := buildPacket(v4a, v4b, wire.ProtoUDP, 1, 2, make([]byte, 50))
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				w.WritePacket(time.Now(), p)
			}
		}()
	}
	wg.Wait()
	// Every record is whole: walking the file by record lengths lands exactly on its end.
	r := buf.Bytes()[24:]
	n := 0
	for len(r) > 0 {
		l := int(binary.LittleEndian.Uint32(r[8:]))
		if !bytes.Equal(r[16:16+l], p) {
			t.Fatalf("record %d corrupted", n)
		}
		r = r[16+l:]
		n++
	}
	if n != 400 {
		t.Fatalf("%d records, want 400", n)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, os.ErrClosed
	}
	f.n--
	return len(p), nil
}

func TestWriterErrorsSticky(t *testing.T) {
	if _, err := NewWriter(&failWriter{}, 0); err == nil {
		t.Fatal("NewWriter on a failing writer: no error")
	}
	w, err := NewWriter(&failWriter{n: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The first failure is returned, and so is every later write: the file is broken.
	for i := 0; i < 2; i++ {
		if err := w.WritePacket(time.Now(), []byte{0x45}); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if !errors.Is(w.Err(), os.ErrClosed) {
		t.Fatal("Err does not report the write error")
	}
}

func BenchmarkWritePacket(b *testing.B) {
	w, _ := NewWriter(io.Discard, 0)
	p := make([]byte, 1500)
	ts := time.Now()
	b.ReportAllocs()
	b.SetBytes(1500)
	for b.Loop() {
		w.WritePacket(ts, p)
	}
}

type fakeGSO struct{ got []int }

func (f *fakeGSO) MTU() int                             { return 1500 }
func (f *fakeGSO) Attach(link.Dispatcher)               {}
func (f *fakeGSO) Close() error                         { return nil }
func (f *fakeGSO) WritePackets(p [][]byte) (int, error) { return len(p), nil }
func (f *fakeGSO) GSOMaxSize() int                      { return 65535 }
func (f *fakeGSO) WriteGSO(pkt []byte, mss int) error {
	f.got = append(f.got, len(pkt), mss)
	return nil
}

func TestTapKeepsGSO(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, 0)
	inner := &fakeGSO{}
	g, ok := Tap(inner, w).(link.GSOEndpoint)
	if !ok {
		t.Fatal("tap over a GSOEndpoint is not one")
	}
	p := buildPacket(v4a, v4b, wire.ProtoTCP, 1, 2, make([]byte, 5000))
	if err := g.WriteGSO(p, 1000); err != nil || len(inner.got) != 2 || inner.got[0] != len(p) || inner.got[1] != 1000 {
		t.Fatalf("WriteGSO: %v, inner got %v", err, inner.got)
	}
	if n := binary.LittleEndian.Uint32(buf.Bytes()[24+12:]); n != uint32(len(p)) {
		t.Fatalf("recorded %d bytes, want the %d-byte super-segment", n, len(p))
	}
	if _, ok := Tap(&pipeOnly{}, w).(link.GSOEndpoint); ok {
		t.Fatal("tap over a plain endpoint claims GSO")
	}
}

type pipeOnly struct{}

func (pipeOnly) MTU() int                             { return 1500 }
func (pipeOnly) Attach(link.Dispatcher)               {}
func (pipeOnly) Close() error                         { return nil }
func (pipeOnly) WritePackets(p [][]byte) (int, error) { return len(p), nil }

// TestWriterEthernet: with WithLinkType(LinkTypeEthernet) the file says
// LINKTYPE_ETHERNET and tshark decodes the frames' MAC addresses, an ARP request and an
// IPv4 UDP datagram inside a frame.
func TestWriterEthernet(t *testing.T) {
	file := filepath.Join(t.TempDir(), "eth.pcap")
	var buf bytes.Buffer
	w, err := NewWriter(&buf, 0, WithLinkType(LinkTypeEthernet))
	if err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint32(buf.Bytes()[20:]) != LinkTypeEthernet {
		t.Fatalf("link type %d", binary.LittleEndian.Uint32(buf.Bytes()[20:]))
	}
	eth := func(dst, src string, typ uint16, payload []byte) []byte {
		f := make([]byte, 14, 14+len(payload))
		for i, m := range []string{dst, src} {
			var b [6]byte
			for j := range b {
				var x byte
				for _, c := range m[j*3 : j*3+2] {
					x = x<<4 | byte(strings.IndexRune("0123456789abcdef", c))
				}
				b[j] = x
			}
			copy(f[i*6:], b[:])
		}
		binary.BigEndian.PutUint16(f[12:], typ)
		return append(f, payload...)
	}
	// An ARP request (RFC 826): who has 192.0.2.1, tell 198.51.100.7.
	arp := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 198, 51, 100, 7, 0, 0, 0, 0, 0, 0, 192, 0, 2, 1}
	now := time.Unix(1, 0)
	w.WritePacket(now, eth("ff:ff:ff:ff:ff:ff", "02:00:00:00:00:02", 0x0806, arp))
	w.WritePacket(now, eth("02:00:00:00:00:02", "02:00:00:00:00:01", 0x0800, buildPacket(v4a, v4b, wire.ProtoUDP, 53, 40001, []byte("answer"))))
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	got := tshark(t, file, "eth.dst", "eth.src", "arp.dst.proto_ipv4", "ip.src", "udp.checksum.status")
	want := []string{
		"ff:ff:ff:ff:ff:ff|02:00:00:00:00:02|192.0.2.1||",
		"02:00:00:00:00:02|02:00:00:00:00:01||192.0.2.1|1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tshark decoded\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
