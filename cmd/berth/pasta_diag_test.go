//go:build linux

package main

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/forward/portspec"
	"github.com/berthnet/berth/internal/testenv"
)

// diagReplyTCP4 is a real reply (Linux 6.18) to the dump of AF_INET's TCP listeners,
// sequence number 1, its datagrams one after the other: 127.0.0.1:80 and 0.0.0.0:8080,
// each with the kernel's attributes (INET_DIAG_SHUTDOWN, ...), then NLMSG_DONE; from
// a little-endian machine (netlink's headers are in host order).
const diagReplyTCP4 = "7c00000014000200010000003c7d0000020a0000005000007f0000010000000000000000000000000000000000000000000000000000000000000000841000000000000000000000000000000010000000000000c09d1500050008000000000008000f00000000000c00150001000000000000000600160052000000" +
	"7c00000014000200010000003c7d0000020a00001f900000000000000000000000000000000000000000000000000000000000000000000000000000851000000000000000000000000000000010000000000000c49d1500050008000000000008000f00000000000c00150001000000000000000600160052000000" +
	"1400000003000200010000003c7d000000000000"

// diagMsg builds one SOCK_DIAG_BY_FAMILY message: family, state, the local address
// (4 or 16 bytes) and port.
func diagMsg(seq uint32, family, state uint8, addr []byte, port uint16) []byte {
	m := make([]byte, unix.NLMSG_HDRLEN+sizeofInetDiagMsg)
	ne := binary.NativeEndian
	ne.PutUint32(m, uint32(len(m)))
	ne.PutUint16(m[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(m[6:], unix.NLM_F_MULTI)
	ne.PutUint32(m[8:], seq)
	p := m[unix.NLMSG_HDRLEN:]
	p[0], p[1] = family, state
	binary.BigEndian.PutUint16(p[4:], port)
	copy(p[8:], addr)
	return m
}

// nlMsg builds a message of type typ with payload p.
func nlMsg(seq uint32, typ uint16, p []byte) []byte {
	m := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(p))
	ne := binary.NativeEndian
	ne.PutUint32(m, uint32(unix.NLMSG_HDRLEN+len(p)))
	ne.PutUint16(m[4:], typ)
	ne.PutUint32(m[8:], seq)
	return append(m, p...)
}

func TestParseDiagReply(t *testing.T) {
	real, err := hex.DecodeString(diagReplyTCP4)
	if err != nil {
		t.Fatal(err)
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		ports, done, err := parseDiagReply(real, 1, tcpStateListen, false, nil)
		if err != nil || !done || !slices.Equal(ports, []uint16{8080}) {
			t.Errorf("the real reply without loopback: %v, done %v, %v; want [8080]", ports, done, err)
		}
		ports, _, _ = parseDiagReply(real, 1, tcpStateListen, true, nil)
		if !slices.Equal(ports, []uint16{80, 8080}) {
			t.Errorf("the real reply with loopback: %v, want [80 8080]", ports)
		}
		if ports, done, err := parseDiagReply(real, 2, tcpStateListen, true, nil); len(ports) != 0 || done || err != nil {
			t.Errorf("another request's reply: %v, done %v, %v; want nothing", ports, done, err)
		}
	}

	lo6, mapped := net.IPv6loopback, net.ParseIP("::ffff:127.0.0.1")
	b := slices.Concat(
		diagMsg(7, unix.AF_INET6, tcpStateListen, net.IPv6zero, 22),
		diagMsg(7, unix.AF_INET6, tcpStateListen, lo6, 23),
		diagMsg(7, unix.AF_INET6, tcpStateListen, mapped, 24),
		diagMsg(7, unix.AF_INET, tcpStateListen, []byte{10, 0, 2, 100}, 8081),
		diagMsg(7, unix.AF_INET, 1, []byte{10, 0, 2, 100}, 8082), // ESTABLISHED
		diagMsg(7, unix.AF_INET, tcpStateListen, []byte{0, 0, 0, 0}, 0),
		diagMsg(7, 99, tcpStateListen, []byte{0, 0, 0, 0}, 8083),           // no such family
		diagMsg(6, unix.AF_INET, tcpStateListen, []byte{0, 0, 0, 0}, 8084), // a stale reply
	)
	ports, done, err := parseDiagReply(b, 7, tcpStateListen, false, nil)
	if err != nil || done || !slices.Equal(ports, []uint16{22, 8081}) {
		t.Errorf("without loopback: %v, done %v, %v; want [22 8081], not done", ports, done, err)
	}
	ports, _, _ = parseDiagReply(b, 7, tcpStateListen, true, nil)
	if !slices.Equal(ports, []uint16{22, 23, 24, 8081}) {
		t.Errorf("with loopback: %v, want [22 23 24 8081]", ports)
	}
	errno := make([]byte, 4+unix.NLMSG_HDRLEN)
	neg := -int32(unix.ENOENT)
	binary.NativeEndian.PutUint32(errno, uint32(neg))
	if _, _, err := parseDiagReply(nlMsg(7, unix.NLMSG_ERROR, errno), 7, tcpStateListen, true, nil); err != unix.ENOENT {
		t.Errorf("NLMSG_ERROR ENOENT: %v", err)
	}
	for name, bad := range map[string][]byte{
		"cut":         b[:len(b)-10],
		"short msg":   nlMsg(7, unix.SOCK_DIAG_BY_FAMILY, make([]byte, 20)),
		"short error": nlMsg(7, unix.NLMSG_ERROR, []byte{1}),
		"len 4":       {4, 0, 0, 0, 3, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0},
	} {
		if _, _, err := parseDiagReply(bad, 7, tcpStateListen, true, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// FuzzDiagReply: any datagram is read without a panic, and what it yields is a
// nonzero port.
func FuzzDiagReply(f *testing.F) {
	real, _ := hex.DecodeString(diagReplyTCP4)
	f.Add(real, true)
	f.Add(slices.Concat(diagMsg(1, unix.AF_INET6, tcpStateListen, net.IPv6loopback, 23), nlMsg(1, unix.NLMSG_DONE, make([]byte, 4))), false)
	f.Add(nlMsg(1, unix.NLMSG_ERROR, make([]byte, 20)), false)
	f.Fuzz(func(t *testing.T, b []byte, loopback bool) {
		ports, _, _ := parseDiagReply(b, 1, tcpStateListen, loopback, nil)
		if slices.Contains(ports, 0) {
			t.Fatalf("port 0 in %v", ports)
		}
	})
}

// testSockets are one of each kind of socket the scans tell apart, in the namespace
// of the thread that opens them, on the ports given (0: any).
type testSockets struct {
	closers                          []func() error
	tcpLo4, tcpAny4, tcpLo6, tcpAny6 uint16 // listening
	tcpMapped                        uint16 // listening on ::ffff:127.0.0.1
	udpLo4, udpAny4, udpLo6, udpAny6 uint16 // bound, unconnected
	tcpClient, udpConnected          uint16 // neither
}

func openTestSockets(t testing.TB, base uint16) *testSockets {
	t.Helper()
	s := &testSockets{}
	t.Cleanup(func() {
		for _, c := range s.closers {
			c()
		}
	})
	next := func() string {
		if base == 0 {
			return "0"
		}
		base++
		return strconv.Itoa(int(base))
	}
	listen := func(network, host string) uint16 {
		l, err := net.Listen(network, net.JoinHostPort(host, next()))
		if err != nil {
			t.Fatal(err)
		}
		s.closers = append(s.closers, l.Close)
		return uint16(l.Addr().(*net.TCPAddr).Port)
	}
	bind := func(network, host string) uint16 {
		c, err := net.ListenPacket(network, net.JoinHostPort(host, next()))
		if err != nil {
			t.Fatal(err)
		}
		s.closers = append(s.closers, c.Close)
		return uint16(c.LocalAddr().(*net.UDPAddr).Port)
	}
	s.tcpLo4, s.tcpAny4 = listen("tcp4", "127.0.0.1"), listen("tcp4", "0.0.0.0")
	s.tcpLo6, s.tcpAny6 = listen("tcp6", "::1"), listen("tcp", "::") // dual-stack
	s.udpLo4, s.udpAny4 = bind("udp4", "127.0.0.1"), bind("udp4", "0.0.0.0")
	s.udpLo6, s.udpAny6 = bind("udp6", "::1"), bind("udp", "::")
	// ::ffff:127.0.0.1 takes an IPv6 socket that is not IPV6_V6ONLY, which net's
	// "tcp6" would make one.
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.closers = append(s.closers, func() error { return unix.Close(fd) })
	port, _ := strconv.Atoi(next())
	sa := &unix.SockaddrInet6{Port: port, Addr: [16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 1}}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	got, _ := unix.Getsockname(fd)
	s.tcpMapped = uint16(got.(*unix.SockaddrInet6).Port)
	// A connection (its client's port; the server's end shares tcpLo4's) and a
	// connected UDP socket.
	c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(s.tcpLo4))))
	if err != nil {
		t.Fatal(err)
	}
	s.closers = append(s.closers, c.Close)
	s.tcpClient = uint16(c.LocalAddr().(*net.TCPAddr).Port)
	u, err := net.Dial("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(s.udpLo4))))
	if err != nil {
		t.Fatal(err)
	}
	s.closers = append(s.closers, u.Close)
	s.udpConnected = uint16(u.LocalAddr().(*net.UDPAddr).Port)
	return s
}

// want is what an auto spec of proto sees of s (procListeners' and boundPorts' rules).
func (s *testSockets) want(proto string, loopback bool) map[uint16]bool {
	ports := []uint16{s.tcpAny4, s.tcpAny6}
	if loopback {
		ports = append(ports, s.tcpLo4, s.tcpLo6, s.tcpMapped)
	}
	if proto == "udp" {
		ports = append(ports, s.udpAny4, s.udpAny6)
		if loopback {
			ports = append(ports, s.udpLo4, s.udpLo6)
		}
	}
	m := map[uint16]bool{}
	for _, p := range ports {
		m[p] = true
	}
	return m
}

// mine keeps of ports those of s's sockets (the host's namespace has others).
func (s *testSockets) mine(ports map[uint16]bool) map[uint16]bool {
	all := []uint16{s.tcpLo4, s.tcpAny4, s.tcpLo6, s.tcpAny6, s.tcpMapped, s.udpLo4, s.udpAny4, s.udpLo6, s.udpAny6, s.tcpClient, s.udpConnected}
	m := map[uint16]bool{}
	for p := range ports {
		if slices.Contains(all, p) {
			m[p] = true
		}
	}
	return m
}

var scanCases = []struct {
	proto    string
	loopback bool
}{{"tcp", false}, {"tcp", true}, {"udp", false}, {"udp", true}}

// diagScan is scanPorts with d alone (no /proc to fall back on), failing the test
// where a dump fails.
func diagScan(t testing.TB, d *sockDiag, proto string, loopback bool) map[uint16]bool {
	t.Helper()
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6"} {
		if err := d.listeners(diagTables[table], loopback, map[uint16]bool{}); err != nil {
			t.Fatalf("the dump for %s: %v", table, err)
		}
	}
	got := map[uint16]bool{}
	scanPorts(d, func() string { return "" }, proto, loopback, got)
	return got
}

// TestSockDiagScan: in the test's own namespace the sock_diag dump finds of the
// test's sockets exactly what /proc/self/net shows, IPv4 and IPv6, TCP and UDP.
func TestSockDiagScan(t *testing.T) {
	s := openTestSockets(t, 0)
	d, err := openSockDiag()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, c := range scanCases {
		viaDiag := s.mine(diagScan(t, d, c.proto, c.loopback))
		viaProc := map[uint16]bool{}
		boundPorts("/proc/self/net", c.proto, c.loopback, viaProc)
		viaProc = s.mine(viaProc)
		if want := s.want(c.proto, c.loopback); !maps.Equal(viaDiag, want) || !maps.Equal(viaProc, want) {
			t.Errorf("%s loopback=%v: sock_diag %v, /proc %v, want %v", c.proto, c.loopback, viaDiag, viaProc, want)
		}
	}
}

// TestSockDiagFallback: where the dump fails (a kernel without tcp_diag, a socket
// that is no netlink socket) the /proc table is read, never "no ports".
func TestSockDiagFallback(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{"tcp": procTCP, "tcp6": procTCP6} {
		if err := os.WriteFile(dir+"/"+name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := map[uint16]bool{}
	boundPorts(dir, "tcp", false, want)
	d, err := openSockDiag()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.broken[diagTables["tcp"]], d.broken[diagTables["tcp6"]] = true, true
	got := map[uint16]bool{}
	scanPorts(d, func() string { return dir }, "tcp", false, got)
	if !maps.Equal(got, want) {
		t.Errorf("with tcp_diag missing: %v, want /proc's %v", got, want)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := newSockDiag(os.NewFile(uintptr(fd), "udp"))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	got = map[uint16]bool{}
	scanPorts(udp, func() string { return dir }, "tcp", false, got)
	if !maps.Equal(got, want) {
		t.Errorf("with a UDP socket for sock_diag's: %v, want /proc's %v", got, want)
	}
}

// TestSockDiagNetns: in a fresh namespace the namespace side's dump, through a socket
// made by setns or by the namespace helper, finds exactly what the namespace's /proc
// shows; and -t auto forwards its listeners though no process is in the namespace
// (where /proc/PID/net had none to read).
func TestSockDiagNetns(t *testing.T) {
	testenv.NeedRoot(t)
	needCommands(t, "ip", "nsenter")
	ns := fmt.Sprintf("drop-diag-%d", os.Getpid())
	addNetns(t, ns)
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip: %v: %s", err, out)
	}
	path := "/run/netns/" + ns
	var socks *testSockets
	viaProc := map[string]map[uint16]bool{}
	inNetNS(t, path, func() {
		socks = openTestSockets(t, 8000)
		for _, c := range scanCases {
			m := map[uint16]bool{}
			boundPorts("/proc/thread-self/net", c.proto, c.loopback, m)
			viaProc[fmt.Sprint(c.proto, c.loopback)] = m
		}
	})
	bySetns, err := openSockDiagIn(path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer bySetns.Close()
	files, errs, err := nsListen(path, "", []nsSock{{proto: nsDiagProto}})
	if err == nil {
		err = errs[0]
	}
	if err != nil {
		t.Fatalf("the helper's sock_diag socket: %v", err)
	}
	byHelper, err := newSockDiag(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer byHelper.Close()
	for name, d := range map[string]*sockDiag{"setns": bySetns, "helper": byHelper} {
		for _, c := range scanCases {
			got, proc, want := diagScan(t, d, c.proto, c.loopback), viaProc[fmt.Sprint(c.proto, c.loopback)], socks.want(c.proto, c.loopback)
			if !maps.Equal(got, want) || !maps.Equal(proc, want) {
				t.Errorf("%s: %s loopback=%v: sock_diag %v, /proc %v, want %v", name, c.proto, c.loopback, got, proc, want)
			}
		}
	}

	auto, _ := portspec.Parse("auto")
	ports := &fakePorts{}
	a := &autoForward{ports: ports, netns: path, specs: map[string][]portspec.Spec{"tcp": {auto}}, have: map[forward.PortMapping]bool{}}
	a.scan()
	if a.diag == nil {
		t.Fatal("-t auto opened no sock_diag socket in the namespace")
	}
	defer a.diag.Close()
	var got []uint16
	for _, m := range ports.m {
		got = append(got, m.HostPort)
	}
	slices.Sort(got)
	if want := []uint16{socks.tcpAny4, socks.tcpAny6}; !slices.Equal(got, want) {
		t.Errorf("-t auto forwards %v, want %v", got, want)
	}
}

// TestPastaAutoRootless: as an ordinary user, -t auto lists the namespace's listeners
// through a sock_diag socket that the namespace helper made there (setns would take
// root), and forwards the host's port to a server in the namespace.
func TestPastaAutoRootless(t *testing.T) {
	e := newRootlessEnv(t)
	needCommands(t, "nsenter", "setpriv", "socat")
	target, targetDone := nobodyNetns(t)
	pid := strconv.Itoa(target.Process.Pid)
	const port = "18795" // on the host: a port no other test takes
	echoPeer(t, []string{"nsenter", "-t", pid, "-n"}, "TCP4-LISTEN:"+port+",fork,reuseaddr")
	pidFile := filepath.Join(e.tmp, "pasta.pid")
	cmd := e.command(0, "pasta", "--config-net", "-t", "auto", "-u", "none", "-T", "none", "-U", "none", "--pid", pidFile, pid)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pasta as nobody: %v: %s", err, out)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	berth := strings.TrimSpace(string(b))
	if got := dialPeer(t, nil, "TCP4", "127.0.0.1:"+port, ""); !strings.HasPrefix(got, "peer=") {
		t.Errorf("the host's %s through -t auto: %q", port, got)
	}
	// The namespace's netlink sockets (/proc/PID/net/netlink: protocol, inode) hold a
	// NETLINK_SOCK_DIAG one that is berth's.
	nl, err := os.ReadFile("/proc/" + pid + "/net/netlink")
	if err != nil {
		t.Fatal(err)
	}
	fds, _ := filepath.Glob("/proc/" + berth + "/fd/*")
	found := false
	for _, line := range strings.Split(string(nl), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[1] != strconv.Itoa(unix.NETLINK_SOCK_DIAG) {
			continue
		}
		for _, fd := range fds {
			if l, _ := os.Readlink(fd); l == "socket:["+f[9]+"]" {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("berth (pid %s) has no sock_diag socket in the namespace", berth)
	}
	target.Process.Signal(syscall.SIGTERM)
	<-targetDone
	for deadline := time.Now().Add(10 * time.Second); len(berthProcs(e.bin)) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("berth processes left: %v", berthProcs(e.bin))
		}
	}
}

// openLoopbackConns opens n TCP connections over 127.0.0.1 (2n established sockets
// in the kernel's table) until the benchmark ends.
func openLoopbackConns(b *testing.B, n int) {
	b.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range n {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s := <-accepted
		b.Cleanup(func() { c.Close(); s.Close() })
	}
}

// BenchmarkAutoScan: one auto scan of berth's namespace (-T auto's; "udp" reads the
// four tables, "tcp" two) through /proc/self/net and through sock_diag, with conns
// established loopback connections open besides.
//
//	go test ./cmd/berth -run '^$' -bench AutoScan -benchtime 2000x
func BenchmarkAutoScan(b *testing.B) {
	for _, conns := range []int{0, 500} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			openLoopbackConns(b, conns)
			for _, proto := range []string{"tcp", "udp"} {
				for _, src := range []string{"proc", "diag"} {
					b.Run(proto+"/"+src, func(b *testing.B) {
						var d *sockDiag
						if src == "diag" {
							var err error
							if d, err = openSockDiag(); err != nil {
								b.Fatal(err)
							}
							defer d.Close()
							diagScan(b, d, proto, true)
						}
						dir := func() string { return "/proc/self/net" }
						b.ReportAllocs()
						for b.Loop() {
							scanPorts(d, dir, proto, true, map[uint16]bool{})
						}
					})
				}
			}
		})
	}
}
