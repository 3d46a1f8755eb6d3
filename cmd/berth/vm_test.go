//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/link/vmsock"
	"github.com/berthnet/berth/services"
)

// guest is a berth stack standing in for a VM's kernel on berth vm's socket, configured
// as berth's DHCP server and router advertisements would configure it.
type guest struct {
	s *berth.Stack
	e *ether.Endpoint
}

func newGuest(t *testing.T, dev link.Endpoint) *guest {
	t.Helper()
	g := &guest{s: berth.New()}
	t.Cleanup(func() { g.s.Close() })
	addrs := []netip.Prefix{forward.DefaultNSAddr4, forward.DefaultNSAddr6}
	var err error
	g.e, err = ether.New(dev, ether.Config{Addrs: addrs, NoDAD: true,
		Gateway4: forward.DefaultGateway4, Gateway6: forward.DefaultGateway6, Counter: g.s.Net().Counters().Counter})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.s.AddInterface("eth0", g.e); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if err := g.s.AddAddress("eth0", a); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []struct{ dst, gw string }{{"0.0.0.0/0", "10.0.2.2"}, {"::/0", "fd00::2"}} {
		if err := g.s.AddRoute(netip.MustParsePrefix(r.dst), netip.MustParseAddr(r.gw), "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// startVM runs berth vm with args and waits for its socket.
func startVM(t *testing.T, bin, sock string, args ...string) *bytes.Buffer {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"vm", "--socket", sock, "--control", "none"}, args...)...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("berth vm: %v\n%s", err, errb.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("berth vm did not end on SIGTERM")
		}
	})
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(errb.String(), "serving"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("berth vm did not start: %s", errb.String())
		}
	}
	return &errb
}

// TestVM: berth vm serves a "VM" (a berth stack on link/ether, connected to the stream
// socket as QEMU's -netdev stream is) as berth run serves a namespace: the guest resolves
// the gateways to berth's MAC, pings them, and moves 64 MiB each way to the host's
// loopback over IPv4 and IPv6, byte-exact. Over the datagram socket, the guest pings.
func TestVM(t *testing.T) {
	testenv.NeedRoot(t) // the forwarder pings the host's loopback with ICMP sockets
	bin := buildBerth(t)
	dir, err := os.MkdirTemp("", "bvm") // short: UNIX socket paths end at 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p4, p6 := sumServer(t, "127.0.0.1:0"), sumServer(t, "[::1]:0")

	t.Run("stream", func(t *testing.T) {
		sock := filepath.Join(dir, "vm.sock")
		errb := startVM(t, bin, sock)
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		dev, err := vmsock.NewStream(c, vmsock.Options{MTU: forward.DefaultMTU})
		if err != nil {
			t.Fatal(err)
		}
		g := newGuest(t, dev)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, a := range []netip.Addr{forward.DefaultGateway4, forward.DefaultGateway6} {
			if _, err := g.s.Ping(ctx, a, 1, []byte("vm")); err != nil {
				t.Fatalf("guest ping %v: %v; berth vm: %s", a, err, errb.String())
			}
		}
		for _, n := range g.e.Neighbors() {
			if (n.Addr == forward.DefaultGateway4 || n.Addr == forward.DefaultGateway6) && n.MAC != forward.SessionMAC {
				t.Errorf("guest's neighbour %v is %v, want berth's %v", n.Addr, n.MAC, net.HardwareAddr(forward.SessionMAC[:]))
			}
		}
		hc := &http.Client{Transport: &http.Transport{DialContext: g.s.DialContext}}
		h := sha256.New()
		io.Copy(h, services.NewPatternReader(tapBulk))
		want := hex.EncodeToString(h.Sum(nil))
		for _, u := range []string{fmt.Sprintf("http://10.0.2.2:%d", p4), fmt.Sprintf("http://[fd00::2]:%d", p6)} {
			resp, err := hc.Get(fmt.Sprintf("%s/%d", u, tapBulk))
			if err != nil {
				t.Fatalf("guest GET %s: %v", u, err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			resp.Body.Close()
			if err != nil || n != tapBulk || hex.EncodeToString(h.Sum(nil)) != want {
				t.Fatalf("guest GET %s: %d bytes, %v, sum mismatch", u, n, err)
			}
			resp, err = hc.Post(u+"/sum", "application/octet-stream", services.NewPatternReader(tapBulk))
			if err != nil {
				t.Fatalf("guest POST %s: %v", u, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.HasPrefix(string(got), want+" ") {
				t.Fatalf("guest POST %s: host summed %q, want %s", u, got, want)
			}
		}
		if st := dev.Stats(); st.TxDropped != 0 || st.RxDropped != 0 {
			t.Logf("guest socket stats %+v", st)
		}
	})

	t.Run("dgram", func(t *testing.T) {
		sock, gsock := filepath.Join(dir, "vmd.sock"), filepath.Join(dir, "guest.sock")
		startVM(t, bin, sock, "--dgram", "--peer", gsock)
		uc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: gsock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(gsock)
		dev, err := vmsock.NewDgram(uc, &net.UnixAddr{Name: sock, Net: "unixgram"}, vmsock.Options{MTU: forward.DefaultMTU})
		if err != nil {
			t.Fatal(err)
		}
		g := newGuest(t, dev)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, a := range []netip.Addr{forward.DefaultGateway4, forward.DefaultGateway6} {
			if _, err := g.s.Ping(ctx, a, 1, []byte("vm")); err != nil {
				t.Fatalf("guest ping %v over the datagram socket: %v", a, err)
			}
		}
	})
}
