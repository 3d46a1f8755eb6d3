//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/testenv"
)

// TestMain lets the test binary be the namespace helper that nsForwarder runs (as
// berth's main does), so that the forwarder can be tested in process.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == nsListenArg {
		os.Exit(nsListenChild(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestNSForwarder runs the -T/-U forwarder in process (so that -race sees it): a
// client in a namespace of the test's reaches the test's loopback servers through
// the namespace's 127.0.0.1 and ::1, TCP with a half-close carrying data after it and
// UDP both ways; a port the namespace already uses is refused, Remove frees the port,
// and Close ends every goroutine.
func TestNSForwarder(t *testing.T) {
	testenv.NeedRoot(t)
	needCommands(t, "ip", "nsenter")
	ns := fmt.Sprintf("drop-nsf-%d", os.Getpid())
	addNetns(t, ns)
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip: %v: %s", err, out)
	}
	path := "/run/netns/" + ns
	before := runtime.NumGoroutine()

	// The host's servers: TCP echoes what it reads after the client's FIN, with the
	// client's address first; UDP answers each datagram with the client's address.
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpLn.Close()
	go func() {
		for {
			c, err := tcpLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "%s %s", c.RemoteAddr().(*net.TCPAddr).IP, b)
			}()
		}
	}()
	udp, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			udp.WriteTo([]byte(fmt.Sprintf("%s %s", from.(*net.UDPAddr).IP, buf[:n])), from)
		}
	}()
	tcpPort := uint16(tcpLn.Addr().(*net.TCPAddr).Port)
	udpPort := uint16(udp.LocalAddr().(*net.UDPAddr).Port)

	f := newNSForwarder(path, "", false)
	errs := f.Add([]nsMapping{{"tcp", 18800, tcpPort}, {"udp", 18801, udpPort}, {"tcp", 18800, 1}})
	if errs[0] != nil || errs[1] != nil || errs[2] == nil {
		t.Fatalf("Add: %v", errs)
	}
	if errs := f.Add([]nsMapping{{"udp", 18801, 2}}); errs[0] == nil {
		t.Errorf("a port forwarded twice: no error")
	}

	inNetNS(t, path, func() {
		c, err := net.Dial("tcp", "127.0.0.1:18800")
		if err != nil {
			t.Errorf("dial in the namespace: %v", err)
			return
		}
		defer c.Close()
		payload := bytes.Repeat([]byte("x"), 1<<20)
		go func() { c.Write(payload); c.(*net.TCPConn).CloseWrite() }()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, append([]byte("127.0.0.1 "), payload...)) {
			t.Errorf("TCP through -T: %d bytes %.20q, %v", len(got), got, err)
		}
		// Nothing listens on ::1:18800 on the host: the namespace's side is refused.
		c6, err := net.Dial("tcp", "[::1]:18800")
		if err == nil {
			c6.SetDeadline(time.Now().Add(5 * time.Second))
			if n, err := c6.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Errorf("a refused host port: read %d, %v", n, err)
			}
			c6.Close()
		}

		u, err := net.Dial("udp", "[::1]:18801")
		if err != nil {
			t.Errorf("dial in the namespace: %v", err)
			return
		}
		defer u.Close()
		for i := range 3 {
			msg := fmt.Sprint("ping", i)
			u.Write([]byte(msg))
			u.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 100)
			n, err := u.Read(buf)
			if want := "::1 " + msg; err != nil || string(buf[:n]) != want {
				t.Errorf("UDP through -U: %q, %v; want %q", buf[:n], err, want)
			}
		}
	})

	if err := f.Remove(nsMapping{"tcp", 18800, tcpPort}); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if err := f.Remove(nsMapping{"tcp", 18800, tcpPort}); err == nil {
		t.Errorf("Remove twice: no error")
	}
	if got := f.Ports(); len(got) != 1 || got[0] != (nsMapping{"udp", 18801, udpPort}) {
		t.Errorf("Ports: %v", got)
	}
	inNetNS(t, path, func() {
		if c, err := net.Dial("tcp", "127.0.0.1:18800"); err == nil {
			c.Close()
			t.Errorf("a removed forward still listens")
		}
	})
	f.Close()
	if errs := f.Add([]nsMapping{{"tcp", 18802, tcpPort}}); errs[0] == nil {
		t.Errorf("Add after Close: no error")
	}
	tcpLn.Close()
	udp.Close()
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d, were %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
	}
}
