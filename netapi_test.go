package berth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth"
)

// The interfaces libraries type-assert on *net.TCPConn and *net.UDPConn.
var (
	_ interface {
		io.ReaderFrom
		io.WriterTo
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
		SetKeepAliveConfig(net.KeepAliveConfig) error
		CloseWrite() error
	} = (*berth.TCPConn)(nil)
	_ interface {
		ReadMsgUDPAddrPort(b, oob []byte) (n, oobn, flags int, addr netip.AddrPort, err error)
		WriteMsgUDPAddrPort(b, oob []byte, addr netip.AddrPort) (n, oobn int, err error)
		ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error)
		WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error)
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	} = (*berth.UDPConn)(nil)
)

// io.Copy through a relay takes the ReadFrom/WriteTo paths and delivers byte-exact.
func TestTCPCopyFastPaths(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	l, err := a.ListenTCP(ctx, "tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	data := make([]byte, 3<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	want := sha256.Sum256(data)
	// The sink hashes what arrives, through WriteTo into a hash.
	sum := make(chan [32]byte, 1)
	go func() {
		c, err := l.AcceptTCP()
		if err != nil {
			sum <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := c.WriteTo(h)
		if err != nil || n != int64(len(data)) {
			t.Errorf("WriteTo = %d, %v; want %d, nil", n, err, len(data))
		}
		var s [32]byte
		copy(s[:], h.Sum(nil))
		sum <- s
	}()
	c, err := b.DialContext(ctx, "tcp", "10.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	// io.Copy calls (*TCPConn).ReadFrom.
	n, err := io.Copy(c, bytes.NewReader(data))
	if err != nil || n != int64(len(data)) {
		t.Fatalf("io.Copy = %d, %v", n, err)
	}
	c.(*berth.TCPConn).CloseWrite()
	if got := <-sum; got != want {
		t.Fatal("data differs after ReadFrom/WriteTo")
	}
	c.Close()
}

// A reader's error ends ReadFrom as a *net.OpError "readfrom", as on *net.TCPConn.
func TestTCPReadFromErrorShape(t *testing.T) {
	errBoom := errors.New("boom")
	check := func(name string, c interface {
		ReadFrom(io.Reader) (int64, error)
	}) string {
		_, err := c.ReadFrom(io.MultiReader(strings.NewReader("x"), iotestErr{errBoom}))
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "readfrom" || !errors.Is(err, errBoom) {
			t.Errorf("%s: ReadFrom error = %v, want *net.OpError readfrom wrapping the reader's", name, err)
		}
		return oe.Op
	}
	kc, ks := kernelTCPPair(t)
	defer kc.Close()
	defer ks.Close()
	check("kernel", kc.(*net.TCPConn))
	a, b := pair(t)
	l, _ := a.Listen(context.Background(), "tcp", ":9001")
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	c, err := b.DialContext(context.Background(), "tcp", "10.0.0.1:9001")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check("berth", c.(*berth.TCPConn))
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// kernelTCPPair is a connected pair of the kernel's TCP sockets over loopback.
func kernelTCPPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

// ReadMsgUDP reports a cut datagram with MSG_TRUNC, and the write forms refuse what the
// kernel's refuse, with the same texts.
func TestUDPMsgLikeKernel(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	type udpConn interface {
		net.PacketConn
		ReadMsgUDPAddrPort(b, oob []byte) (n, oobn, flags int, addr netip.AddrPort, err error)
		WriteMsgUDPAddrPort(b, oob []byte, addr netip.AddrPort) (n, oobn int, err error)
		WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error)
	}
	run := func(srv, cli udpConn, dst netip.AddrPort) (flags []int, errs []string) {
		for _, size := range []int{5, 100} {
			if _, _, err := cli.WriteMsgUDPAddrPort(make([]byte, size), nil, dst); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 10)
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, oobn, fl, from, err := srv.ReadMsgUDPAddrPort(buf, make([]byte, 64))
			if err != nil {
				t.Fatal(err)
			}
			if n != min(size, 10) || oobn != 0 || !from.IsValid() {
				t.Errorf("ReadMsgUDPAddrPort of %d bytes = n %d oobn %d from %v", size, n, oobn, from)
			}
			flags = append(flags, fl)
		}
		_, _, err := cli.WriteMsgUDP([]byte("x"), nil, nil)
		errs = append(errs, strings.ReplaceAll(err.Error(), cli.LocalAddr().String(), "LOCAL"))
		return flags, errs
	}
	ks, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer ks.Close()
	kc, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer kc.Close()
	kflags, kerrs := run(ks, kc, ks.LocalAddr().(*net.UDPAddr).AddrPort())

	bs, err := a.ListenUDP(ctx, "udp4", "10.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	bc, err := b.ListenUDP(ctx, "udp4", "10.0.0.2:5001")
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	bflags, berrs := run(bs, bc, netip.MustParseAddrPort("10.0.0.1:5000"))
	if kflags[0] != 0 || kflags[1]&syscall.MSG_TRUNC == 0 {
		t.Errorf("kernel flags = %#x, expected MSG_TRUNC on the second only", kflags)
	}
	for i := range kflags {
		if kflags[i] != bflags[i] {
			t.Errorf("flags[%d]: kernel %#x, berth %#x", i, kflags[i], bflags[i])
		}
	}
	for i := range kerrs {
		if kerrs[i] != berrs[i] {
			t.Errorf("error %d: kernel %q, berth %q", i, kerrs[i], berrs[i])
		}
	}
	// Ancillary data berth cannot honour is refused, never ignored.
	if _, _, err := bc.WriteMsgUDPAddrPort([]byte("x"), []byte{1}, netip.MustParseAddrPort("10.0.0.1:5000")); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("WriteMsgUDPAddrPort with oob: %v, want EOPNOTSUPP", err)
	}
}

// SetReadBuffer bounds a UDP socket's queue: beyond it datagrams drop, as the kernel's do.
func TestUDPSetReadBuffer(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	srv, err := a.ListenUDP(ctx, "udp4", "10.0.0.1:5002")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	cli, err := b.DialContext(ctx, "udp4", "10.0.0.1:5002")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for range 20 {
		cli.Write(make([]byte, 1000))
	}
	got := 0
	buf := make([]byte, 2000)
	for {
		srv.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := srv.Read(buf); err != nil {
			break
		}
		got++
	}
	if got == 0 || got >= 20 || srv.Drops() == 0 {
		t.Errorf("with a 4 KiB buffer: %d of 20 datagrams read, %d dropped; want some of each", got, srv.Drops())
	}
}

// Control hooks see the same network and address as package net's on the kernel.
func TestControlArguments(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	var kernel, ours []string
	kl, err := (&net.ListenConfig{Control: func(network, address string, _ syscall.RawConn) error {
		kernel = append(kernel, network+" "+address)
		return nil
	}}).Listen(ctx, "tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	kport := kl.Addr().(*net.TCPAddr).Port
	kc, err := (&net.Dialer{Control: func(network, address string, _ syscall.RawConn) error {
		kernel = append(kernel, network+" "+strings.Replace(address, itoa(kport), "PORT", 1))
		return nil
	}}).DialContext(ctx, "tcp", "127.0.0.1:"+itoa(kport))
	if err != nil {
		t.Fatal(err)
	}
	kc.Close()

	var sawNoDelay bool
	bl, err := (&berth.ListenConfig{Stack: a, Control: func(network, address string, o *berth.SocketOptions) error {
		ours = append(ours, network+" "+address)
		sawNoDelay = o.NoDelay && o.ReuseAddr
		o.CongestionControl = "reno"
		return nil
	}}).Listen(ctx, "tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	bport := bl.Addr().(*net.TCPAddr).Port
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := bl.Accept()
		accepted <- c
	}()
	bc, err := (&berth.Dialer{Stack: b, Control: func(network, address string, o *berth.SocketOptions) error {
		ours = append(ours, network+" "+strings.Replace(address, itoa(bport), "PORT", 1))
		o.ReceiveBuffer = 8192
		return nil
	}}).DialContext(ctx, "tcp", "10.0.0.1:"+itoa(bport))
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	if len(kernel) != 2 || len(ours) != 2 {
		t.Fatalf("kernel %q, berth %q", kernel, ours)
	}
	if ours[0] != kernel[0] {
		t.Errorf("listen Control: kernel %q, berth %q", kernel[0], ours[0])
	}
	if k, o := strings.Replace(kernel[1], "127.0.0.1", "IP", 1), strings.Replace(ours[1], "10.0.0.1", "IP", 1); k != o {
		t.Errorf("dial Control: kernel %q, berth %q", kernel[1], ours[1])
	}
	if !sawNoDelay {
		t.Error("Control did not see the defaults (NoDelay, ReuseAddr on a TCP listener)")
	}
	sc := <-accepted
	if sc == nil {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	if got := sc.(*berth.TCPConn).CongestionControl(); got != "reno" {
		t.Errorf("accepted connection's congestion control = %q, want the listener's reno", got)
	}
	if w := bc.(*berth.TCPConn).Info().RcvWnd; w == 0 || w > 8192 {
		t.Errorf("receive window with an 8 KiB SO_RCVBUF set before the SYN = %d", w)
	}
	// An error from Control ends the dial with it.
	errNo := errors.New("no")
	_, err = (&berth.Dialer{Stack: b, Control: func(string, string, *berth.SocketOptions) error { return errNo }}).DialContext(ctx, "tcp", "10.0.0.1:"+itoa(bport))
	if !errors.Is(err, errNo) {
		t.Errorf("dial with failing Control: %v", err)
	}
}

func itoa(n int) string {
	return strings.TrimPrefix(netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(n)).String(), "0.0.0.0:")
}

// Keep-alive follows net.Dialer's and net.ListenConfig's rules.
func TestKeepAliveConfig(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	l, err := (&berth.ListenConfig{Stack: a, KeepAlive: -1}).Listen(ctx, "tcp", ":9002")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); acc <- c }()
	d := berth.Dialer{Stack: b, KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 3 * time.Second, Interval: 2 * time.Second, Count: 4}}
	c, err := d.DialContext(ctx, "tcp", "10.0.0.1:9002")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-acc
	defer sc.Close()
	if k := c.(*berth.TCPConn).KeepAliveConfig(); !k.Enable || k.Idle != 3*time.Second || k.Interval != 2*time.Second || k.Count != 4 {
		t.Errorf("dialed keep-alive = %+v", k)
	}
	if k := sc.(*berth.TCPConn).KeepAliveConfig(); k.Enable {
		t.Errorf("accepted keep-alive with KeepAlive -1 = %+v, want off", k)
	}
}

// BenchmarkUDPMsgZoned sends a datagram with WriteMsgUDPAddrPort to a zoned link-local
// address and reads it with ReadMsgUDPAddrPort, one at a time over a pipe: the message
// forms and the zone handling must not allocate.
func BenchmarkUDPMsgZoned(b *testing.B) {
	sa, sb := pair(b)
	sa.AddAddress("eth0", netip.MustParsePrefix("fe80::1/64"))
	sb.AddAddress("eth0", netip.MustParsePrefix("fe80::2/64"))
	ctx := context.Background()
	rx, err := sb.ListenUDP(ctx, "udp6", "[fe80::2%eth0]:9")
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	tx, err := sa.ListenUDP(ctx, "udp6", "[fe80::1%eth0]:0")
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	to := netip.MustParseAddrPort("[fe80::2%eth0]:9")
	msg, buf := make([]byte, 512), make([]byte, 2048)
	round := func() {
		if _, _, err := tx.WriteMsgUDPAddrPort(msg, nil, to); err != nil {
			b.Fatal(err)
		}
		_, _, _, from, err := rx.ReadMsgUDPAddrPort(buf, nil)
		if err != nil || from.Addr().Zone() != "eth0" {
			b.Fatalf("read: %v from %v", err, from)
		}
	}
	for range 64 {
		round() // warm the pools
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		round()
	}
}

// A relay copying between two berth connections with io.Copy takes WriteTo's path from
// one receive buffer into the other's send buffer, byte-exact.
func TestTCPRelayCopy(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	origin, err := a.Listen(ctx, "tcp", ":9200") // the origin server, on a
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
	relay, err := b.Listen(ctx, "tcp", ":9201") // the relay, on b, forwarding to the origin
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	data := make([]byte, 2<<20)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	go func() {
		c, err := origin.Accept()
		if err != nil {
			return
		}
		c.Write(data)
		c.Close()
	}()
	go func() {
		in, err := relay.Accept()
		if err != nil {
			return
		}
		defer in.Close()
		out, err := b.DialContext(ctx, "tcp", "10.0.0.1:9200")
		if err != nil {
			return
		}
		defer out.Close()
		io.Copy(in, out) // out.(*TCPConn).WriteTo(in)
		in.(*berth.TCPConn).CloseWrite()
	}()
	c, err := a.DialContext(ctx, "tcp", "10.0.0.2:9201")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("through the relay: %d bytes, %v; want the %d sent", len(got), err, len(data))
	}
}

// Keep-alive settings from net.Dialer's fields end up as the kernel sets them from the
// same fields (zero durations and counts standing for Go's 15 s, 15 s, 9).
func TestDialerKeepAliveLikeKernel(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	bl, err := a.Listen(ctx, "tcp4", ":9300")
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	kl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	for _, l := range []net.Listener{bl, kl} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
	}
	or := func(d, def time.Duration) time.Duration {
		if d == 0 {
			return def
		}
		return d
	}
	for _, tc := range []struct {
		name string
		ka   time.Duration
		cfg  net.KeepAliveConfig
	}{
		{"default", 0, net.KeepAliveConfig{}},
		{"KeepAlive 7s", 7 * time.Second, net.KeepAliveConfig{}},
		{"KeepAlive -1", -1, net.KeepAliveConfig{}},
		{"config", 0, net.KeepAliveConfig{Enable: true, Idle: 4 * time.Second, Interval: 3 * time.Second, Count: 2}},
	} {
		kc, err := (&net.Dialer{KeepAlive: tc.ka, KeepAliveConfig: tc.cfg}).DialContext(ctx, "tcp4", kl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		var on, idle, intvl, cnt int
		raw, _ := kc.(*net.TCPConn).SyscallConn()
		raw.Control(func(fd uintptr) {
			on, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			idle, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
			intvl, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL)
			cnt, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)
		})
		kc.Close()
		bc, err := (&berth.Dialer{Stack: b, KeepAlive: tc.ka, KeepAliveConfig: tc.cfg}).DialContext(ctx, "tcp4", "10.0.0.1:9300")
		if err != nil {
			t.Fatal(err)
		}
		k := bc.(*berth.TCPConn).KeepAliveConfig()
		bc.Close()
		if k.Enable != (on != 0) {
			t.Errorf("%s: keep-alive on: kernel %v, berth %v", tc.name, on != 0, k.Enable)
		}
		if on == 0 {
			continue
		}
		count := k.Count
		if count == 0 {
			count = 9
		}
		if g, w := or(k.Idle, 15*time.Second), time.Duration(idle)*time.Second; g != w {
			t.Errorf("%s: idle: kernel %v, berth %v", tc.name, w, g)
		}
		if g, w := or(k.Interval, 15*time.Second), time.Duration(intvl)*time.Second; g != w {
			t.Errorf("%s: interval: kernel %v, berth %v", tc.name, w, g)
		}
		if count != cnt {
			t.Errorf("%s: count: kernel %d, berth %d", tc.name, cnt, count)
		}
	}
}

// The netip.AddrPort forms (the names wireguard-go's netstack.Net uses).
func TestAddrPortForms(t *testing.T) {
	a, b := pair(t)
	l, err := a.ListenTCPAddrPort(netip.AddrPortFrom(netip.Addr{}, 9400)) // both families
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Addr().String(); got != "[::]:9400" {
		t.Errorf("ListenTCPAddrPort(:9400).Addr() = %s", got)
	}
	go closeEach(l)
	for _, to := range []string{"10.0.0.1:9400", "[fd00::1]:9400"} {
		c, err := b.DialTCPAddrPort(netip.MustParseAddrPort(to))
		if err != nil {
			t.Fatalf("DialTCPAddrPort(%s): %v", to, err)
		}
		if c.RemoteAddr().String() != to {
			t.Errorf("RemoteAddr %s, want %s", c.RemoteAddr(), to)
		}
		c.Close()
	}
	srv, err := a.ListenUDPAddrPort(netip.MustParseAddrPort("10.0.0.1:9401"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := b.DialUDPAddrPort(netip.MustParseAddrPort("10.0.0.2:9402"), netip.MustParseAddrPort("10.0.0.1:9401"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	buf := make([]byte, 10)
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, from, err := srv.ReadFromUDPAddrPort(buf)
	if err != nil || from != netip.MustParseAddrPort("10.0.0.2:9402") {
		t.Errorf("datagram from %v, %v; want the bound 10.0.0.2:9402", from, err)
	}
}
