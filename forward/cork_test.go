//go:build linux

package forward

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/services"
)

// TestHostToNamespaceFullSegments: the host's bytes reach the namespace in full segments,
// not one full segment and a small tail per read of the host socket (loopback's segments,
// 65,483 bytes, are no multiple of the namespace's MSS). The host writes everything
// before the namespace reads, so that the copy always has more to read until the end,
// and the namespace's kernel counts the segments it took in: their average is close to
// the MSS. (Corked copies hold the tail; without the cork a read's tail went on its own
// and the average was 80 % of the MSS.)
func TestHostToNamespaceFullSegments(t *testing.T) {
	ns, _ := session(t, SessionConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const total = 3 << 20
	written := make(chan struct{})
	go func() {
		defer close(written)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := services.NewPatternReader(total)
		buf := make([]byte, 1000003) // as iperf3's big writes; loopback cuts them at its own MSS
		io.CopyBuffer(c, r, buf)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", fmt.Sprintf("10.0.2.2:%d", ln.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	select {
	case <-written: // all of it in the host's socket buffers, berth's and ours
	case <-time.After(5 * time.Second):
		t.Log("the host's write has not finished: reading anyway")
	}
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != total {
		t.Fatalf("read %d bytes, %v; want %d", n, err, total)
	}
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ti *unix.TCPInfo
	var ierr error
	rc.Control(func(fd uintptr) { ti, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if ierr != nil {
		t.Fatal(ierr)
	}
	// The MSS berth sends with: what the namespace advertised (timestamps already off).
	mss := uint64(ti.Advmss)
	if ti.Data_segs_in == 0 || ti.Advmss == 0 {
		t.Fatalf("TCP_INFO: %d data segments in, advertised MSS %d", ti.Data_segs_in, ti.Advmss)
	}
	avg := ti.Bytes_received / uint64(ti.Data_segs_in)
	t.Logf("%d bytes in %d data segments: %d bytes on average, MSS %d", ti.Bytes_received, ti.Data_segs_in, avg, mss)
	if avg < mss*9/10 {
		t.Errorf("segments of %d bytes on average, want at least 90%% of the MSS %d", avg, mss)
	}
}
