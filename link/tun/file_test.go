//go:build linux

package tun

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/link"
)

// rawTUN opens /dev/net/tun and attaches it to device name with flags, as a process that
// hands the descriptor on would.
func rawTUN(t *testing.T, name string, flags uint16) *os.File {
	t.Helper()
	fd, err := unix.Open(devPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifr, _ := unix.NewIfreq(name)
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), devPath)
	t.Cleanup(func() { f.Close() })
	return f
}

// TestFromFile: an endpoint made from a descriptor opened elsewhere carries traffic with
// the vnet header and offloads, keeps working after the original file is closed, and the
// device goes away when the endpoint closes.
func TestFromFile(t *testing.T) {
	testenv.NeedRoot(t)
	_, err := exec.LookPath("ip")
	testenv.NeedCommand(t, "ip", err)
	n := seq.Add(1)
	ns := fmt.Sprintf("berth-tunf-%d-%d", os.Getpid(), n)
	dev := fmt.Sprintf("btf%d_%d", os.Getpid()%100000, n)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	f := rawTUN(t, dev, unix.IFF_TUN|unix.IFF_NO_PI|unix.IFF_VNET_HDR)
	// The device moves to another namespace before FromFile, as in rootless berth run
	// (there it is created in the other namespace): FromFile must not need to reach it
	// by name.
	run(t, "ip", "link", "set", dev, "netns", ns)
	run(t, "ip", "-n", ns, "link", "set", dev, "mtu", "1400")
	e, err := FromFile(f, Options{MTU: 1400, VnetHdr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	f.Close() // the endpoint holds its own descriptor
	if e.Name() != dev || e.MTU() != 1400 {
		t.Errorf("Name %q MTU %d, want %q 1400", e.Name(), e.MTU(), dev)
	}
	if o := e.Offloads(); !o.Csum || !o.TSO4 {
		t.Errorf("Offloads %+v: TUNSETOFFLOAD was not applied", o)
	}
	run(t, "ip", "-n", ns, "addr", "add", kernelAddr.String()+"/24", "dev", dev)
	run(t, "ip", "-n", ns, "link", "set", dev, "up")
	var replies atomic.Int32
	e.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		for _, p := range pkts {
			if r := echoReply(p); r != nil {
				if _, err := e.WritePackets([][]byte{r}); err != nil {
					t.Errorf("WritePackets: %v", err)
				}
				replies.Add(1)
			}
		}
	}))
	out, err := exec.Command("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", "-s", "1000", berthAddr.String()).CombinedOutput()
	if err != nil || replies.Load() == 0 {
		t.Fatalf("ping through the adopted device: %v, %d replies\n%s", err, replies.Load(), out)
	}
	e.Close()
	if out, err := exec.Command("ip", "-n", ns, "link", "show", dev).CombinedOutput(); err == nil {
		t.Errorf("device %s still exists after Close:\n%s", dev, out)
	}
}

func TestFromFileErrors(t *testing.T) {
	testenv.NeedRoot(t)
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if _, err := FromFile(null, Options{MTU: 1500}); err == nil || !strings.Contains(err.Error(), "TUNGETIFF") {
		t.Errorf("FromFile(/dev/null): %v, want a TUNGETIFF error", err)
	}
	n := seq.Add(1)
	dev := fmt.Sprintf("btf%d_%d", os.Getpid()%100000, n)
	f := rawTUN(t, dev, unix.IFF_TUN|unix.IFF_NO_PI)
	if _, err := FromFile(f, Options{MTU: 1500, VnetHdr: true}); err == nil || !strings.Contains(err.Error(), "flags") {
		t.Errorf("FromFile without IFF_VNET_HDR, VnetHdr wanted: %v, want a flags error", err)
	}
	if _, err := FromFile(f, Options{}); err == nil || !strings.Contains(err.Error(), "MTU") {
		t.Errorf("FromFile without MTU: %v", err)
	}
	e, err := FromFile(f, Options{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	if e.Offloads() != (Offloads{}) {
		t.Errorf("Offloads %+v without the vnet header", e.Offloads())
	}
	e.Close()
}
