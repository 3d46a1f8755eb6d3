//go:build linux

package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/tun"
	"github.com/berthnet/berth/wire"
)

func TestNewDelete(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		ns := New(t)
		name = ns.Name
		if !Exists(name) {
			t.Fatalf("%s does not exist after New", name)
		}
		if out := ns.Run(t, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") {
			t.Errorf("lo is not up in the new namespace: %s", out)
		}
		// A fresh namespace has only lo.
		if out := ns.Run(t, "ip", "-o", "link"); strings.Count(out, "\n") != 1 {
			t.Errorf("new namespace has more than lo:\n%s", out)
		}
	})
	if name == "" {
		t.Fatal("inner test made no namespace")
	}
	if Exists(name) {
		t.Errorf("%s still exists after its test ended", name)
	}
}

// TestHelperProcess is not a test: TestCleanupOnFailure runs it in a child process, where
// it creates a namespace, prints its name, and fails or panics.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("BERTH_NETNS_HELPER")
	if mode == "" {
		return // not in a child: nothing to do
	}
	ns := New(t)
	fmt.Printf("NS=%s\n", ns.Name)
	switch mode {
	case "fail":
		t.Fatal("failing on purpose")
	case "panic":
		panic("panicking on purpose")
	}
}

func TestCleanupOnFailure(t *testing.T) {
	testenv.NeedRoot(t)
	for _, mode := range []string{"fail", "panic"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), "BERTH_NETNS_HELPER="+mode)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("helper should fail, got err %v:\n%s", err, out)
			}
			m := regexp.MustCompile(`NS=(\S+)`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("helper printed no namespace:\n%s", out)
			}
			name := string(m[1])
			if Exists(name) {
				exec.Command("ip", "netns", "del", name).Run()
				t.Fatalf("namespace %s left behind after the test %sed:\n%s", name, mode, out)
			}
		})
	}
}

func TestRemoveStale(t *testing.T) {
	testenv.NeedRoot(t)
	// A PID that ran and ended: a test binary that was killed.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	pid := c.Process.Pid
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("pid %d still in use (%v)", pid, err)
	}
	stale := fmt.Sprintf("%s%d-1-stale", namePrefix, pid)
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", stale).Run() })
	New(t)
	if Exists(stale) {
		t.Errorf("stale namespace %s survived New", stale)
	}
}

// pair makes two namespaces joined by a veth pair: 10.99.0.1/24, fd99::1/64 in a and
// .2/::2 in b.
func pair(t *testing.T) (a, b *NS) {
	a, b = New(t), New(t)
	Veth(t, a, []string{"10.99.0.1/24", "fd99::1/64"}, b, []string{"10.99.0.2/24", "fd99::2/64"})
	return a, b
}

// pingStats runs ping in ns and returns packets sent and received.
func pingStats(t *testing.T, ns *NS, args ...string) (sent, received int) {
	t.Helper()
	_, err := exec.LookPath("ping")
	testenv.NeedCommand(t, "ping", err)
	out, _ := ns.Output(append([]string{"ping", "-n"}, args...)...) // exit 1 when some are lost
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no ping statistics in:\n%s", out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received
}

func TestVethPing(t *testing.T) {
	a, b := pair(t)
	if sent, got := pingStats(t, a, "-c", "3", "-i", "0.05", "-W", "2", "10.99.0.2"); got != sent || sent != 3 {
		t.Errorf("IPv4 ping over veth: %d/%d received", got, sent)
	}
	if sent, got := pingStats(t, b, "-c", "3", "-i", "0.05", "-W", "2", "fd99::1"); got != sent || sent != 3 {
		t.Errorf("IPv6 ping over veth: %d/%d received", got, sent)
	}
	// The addresses exist only inside the namespaces.
	if out, err := exec.Command("ip", "-o", "addr", "show").CombinedOutput(); err != nil || strings.Contains(string(out), "10.99.0.") {
		t.Errorf("veth address visible in the caller's namespace (err %v):\n%s", err, out)
	}
}

func netnsInode(t *testing.T) string {
	t.Helper()
	l, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestDoGoCode(t *testing.T) {
	a, b := pair(t)
	outside := netnsInode(t)
	var inside string
	if err := a.Do(func() error { inside = netnsInode(t); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside == outside {
		t.Fatalf("Do ran in the caller's namespace (%s)", inside)
	}
	// f's error and panic come back.
	boom := errors.New("boom")
	if err := a.Do(func() error { return boom }); err != boom {
		t.Errorf("Do returned %v, want f's error", err)
	}
	func() {
		defer func() {
			if p := recover(); p != "inner panic" {
				t.Errorf("recovered %v, want f's panic", p)
			}
		}()
		a.Do(func() error { panic("inner panic") })
	}()

	// A TCP listener in a, dialed from b over the veth; the sockets stay in their
	// namespaces after Do returns.
	ln, err := a.Listen("tcp", "10.99.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := b.Dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("over the veth\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "over the veth\n" {
		t.Fatalf("echo over veth: %q, %v", line, err)
	}
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "10.99.0.2" {
		t.Errorf("dialing socket's address %s, want b's 10.99.0.2", got)
	}
	c.Close()
	wg.Wait()

	// The caller's namespace does not have a's address: Do switched back.
	if l2, err := net.Listen("tcp", "10.99.0.1:0"); err == nil {
		l2.Close()
		t.Error("10.99.0.1 is bindable outside the namespace")
	} else if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("listen outside: %v, want EADDRNOTAVAIL", err)
	}
	// UDP inside too.
	pc, err := b.ListenPacket("udp", "[fd99::2]:0")
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
}

func TestDropRandom(t *testing.T) {
	a, b := pair(t)
	b.DropRandom(t, "input", 50)
	// P(no loss) = P(all lost) = 2^-40.
	sent, got := pingStats(t, a, "-c", "40", "-i", "0.01", "-W", "1", "10.99.0.2")
	if sent != 40 || got == 0 || got == sent {
		t.Errorf("with 50%% drop: %d of %d received; want some lost and some through", got, sent)
	}
	t.Logf("50%% drop on input: %d of %d pings answered", got, sent)
	b.ClearDrops(t)
	if sent, got := pingStats(t, a, "-c", "5", "-i", "0.01", "-W", "2", "10.99.0.2"); got != sent {
		t.Errorf("after ClearDrops: %d of %d received", got, sent)
	}
	b.ClearDrops(t) // no table: still fine
}

func TestAddTUN(t *testing.T) {
	ns := New(t)
	ep := ns.AddTUN(t, "btun%d", tun.Options{MTU: 1400}, "10.7.0.1/24", "fd07::1/64")
	name := ep.Name()
	out := ns.Run(t, "ip", "-o", "addr", "show", "dev", name)
	for _, want := range []string{"10.7.0.1/24", "fd07::1/64"} {
		if !strings.Contains(out, want) {
			t.Errorf("%s lacks %s:\n%s", name, want, out)
		}
	}
	if out := ns.Run(t, "ip", "-o", "link", "show", "dev", name); !strings.Contains(out, "mtu 1400") || !strings.Contains(out, ",UP") {
		t.Errorf("%s not up with mtu 1400: %s", name, out)
	}
	if err := exec.Command("ip", "link", "show", "dev", name).Run(); err == nil {
		// The name may exist outside only if something else made it; ours is inside.
		t.Logf("note: a device %s exists in the caller's namespace too", name)
	}

	// The kernel routes 10.7.0.0/24 into the TUN: a ping to 10.7.0.2 reaches the
	// descriptor, read by the endpoint's goroutine outside the namespace.
	got := make(chan []byte, 16)
	ep.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		for _, p := range pkts {
			select {
			case got <- append([]byte(nil), p...):
			default:
			}
		}
	}))
	ns.Output("ping", "-n", "-c", "1", "-W", "1", "10.7.0.2") // no one answers: fails
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-got:
			// IPv4, ICMP, to 10.7.0.2, echo request.
			if len(p) >= 28 && p[0]>>4 == 4 && p[9] == wire.ProtoICMPv4 && net.IP(p[16:20]).String() == "10.7.0.2" && p[20] == 8 {
				return
			}
		case <-deadline:
			t.Fatal("no ICMP echo request to 10.7.0.2 came out of the TUN device")
		}
	}
}
