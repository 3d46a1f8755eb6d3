package berth_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// closeWaitReset puts the server side of a connection in CLOSE-WAIT (the client shuts
// down its writing side), has the client reset (linger 0), and reports what the server's
// next read and two writes return, with the addresses taken out of the texts.
func closeWaitReset(t *testing.T, client, server net.Conn) (results []string, errs []error) {
	t.Helper()
	type closeWriter interface{ CloseWrite() error }
	type linger interface{ SetLinger(int) error }
	if err := client.(closeWriter).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(buf); err != io.EOF {
		t.Fatalf("read after the peer's FIN: %v, want EOF", err)
	}
	client.(linger).SetLinger(0)
	client.Close()
	time.Sleep(100 * time.Millisecond) // the RST arrives
	strip := func(err error) string {
		if err == nil {
			return "<nil>"
		}
		s := err.Error()
		s = strings.Replace(s, server.LocalAddr().String(), "LOCAL", 1)
		return strings.Replace(s, server.RemoteAddr().String(), "REMOTE", 1)
	}
	_, rerr := server.Read(buf)
	_, werr1 := server.Write([]byte("x"))
	_, werr2 := server.Write([]byte("x"))
	return []string{strip(rerr), strip(werr1), strip(werr2)}, []error{rerr, werr1, werr2}
}

// A reset in CLOSE-WAIT: reads go on seeing EOF, writes fail with EPIPE, as on Linux.
func TestResetInCloseWaitLikeKernel(t *testing.T) {
	kc, ks := kernelTCPPair(t)
	defer ks.Close()
	kernel, kerrs := closeWaitReset(t, kc, ks)

	a, b := pair(t)
	ctx := context.Background()
	l, err := a.Listen(ctx, "tcp4", "10.0.0.1:9100")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); accepted <- c }()
	bc, err := b.DialContext(ctx, "tcp4", "10.0.0.1:9100")
	if err != nil {
		t.Fatal(err)
	}
	bs := <-accepted
	if bs == nil {
		t.Fatal("accept failed")
	}
	defer bs.Close()
	ours, errs := closeWaitReset(t, bc, bs)
	if !errors.Is(kerrs[1], syscall.EPIPE) {
		t.Errorf("kernel's first write after the reset: %v (expected EPIPE)", kerrs[1])
	}
	for i, what := range []string{"read", "first write", "second write"} {
		if ours[i] != kernel[i] {
			t.Errorf("%s: kernel %q, berth %q", what, kernel[i], ours[i])
		}
		if (kerrs[i] == io.EOF) != (errs[i] == io.EOF) || errors.Is(kerrs[i], syscall.EPIPE) != errors.Is(errs[i], syscall.EPIPE) {
			t.Errorf("%s: kernel %#v, berth %#v", what, kerrs[i], errs[i])
		}
	}
}

// An error without a system call name prints without an empty "syscall: " part.
func TestNoEmptySyscallName(t *testing.T) {
	a, _ := pair(t)
	pc, err := a.ListenPacket(context.Background(), "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
	for _, err := range []error{
		pc.Close(),
		func() error { _, err := pc.WriteTo([]byte("x"), &net.IPAddr{}); return err }(),
	} {
		if err == nil || strings.Contains(err.Error(), ": :") {
			t.Errorf("error text %q", err)
		}
	}
}
