//go:build linux

package netns

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/link/tun"
)

var devCounter atomic.Uint64

// AddAddr assigns addresses ("10.7.0.1/24", "fd07::1/64") to dev in the namespace. IPv6
// addresses skip duplicate address detection (nodad), so they are usable at once.
func (ns *NS) AddAddr(t testing.TB, dev string, prefixes ...string) {
	t.Helper()
	for _, p := range prefixes {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			t.Fatalf("netns: address %q: %v", p, err)
		}
		args := []string{"addr", "add", pfx.String(), "dev", dev}
		if pfx.Addr().Is6() {
			args = append(args, "nodad")
		}
		ns.IP(t, args...)
	}
}

// LinkUp sets dev up in the namespace.
func (ns *NS) LinkUp(t testing.TB, dev string) {
	t.Helper()
	ns.IP(t, "link", "set", dev, "up")
}

// Veth connects namespaces a and b with a veth pair, gives each end the addresses listed
// (prefix strings; none is fine), sets both up, and returns the ends' names. The pair goes
// away with either namespace.
func Veth(t testing.TB, a *NS, aAddrs []string, b *NS, bAddrs []string) (aDev, bDev string) {
	t.Helper()
	n := devCounter.Add(1)
	aDev, bDev = fmt.Sprintf("veth%da", n), fmt.Sprintf("veth%db", n)
	// Created directly in the namespaces: nothing appears in the caller's namespace.
	out, err := exec.Command("ip", "link", "add", aDev, "netns", a.Name, "type", "veth",
		"peer", "name", bDev, "netns", b.Name).CombinedOutput()
	if err != nil {
		t.Fatalf("netns: veth %s@%s - %s@%s: %v: %s", aDev, a.Name, bDev, b.Name, err, out)
	}
	a.AddAddr(t, aDev, aAddrs...)
	b.AddAddr(t, bDev, bAddrs...)
	a.LinkUp(t, aDev)
	b.LinkUp(t, bDev)
	return aDev, bDev
}

// AddTUN creates the TUN device name (empty: the kernel picks one) inside the namespace
// with tun.Open, gives the kernel's side the addresses hostAddrs, and sets it up. The
// device is created from a thread inside the namespace, so it never exists outside it;
// the descriptor works from any thread. The cleanup closes it, which deletes the device.
func (ns *NS) AddTUN(t testing.TB, name string, opts tun.Options, hostAddrs ...string) *tun.Endpoint {
	t.Helper()
	var ep *tun.Endpoint
	err := ns.Do(func() error {
		var err error
		ep, err = tun.Open(name, opts)
		return err
	})
	if err != nil {
		t.Fatalf("netns %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { ep.Close() })
	ns.AddAddr(t, ep.Name(), hostAddrs...)
	ns.LinkUp(t, ep.Name())
	return ep
}

// AddTAP is AddTUN for a TAP device (tun.OpenTAP, opened inside the namespace with
// Options.NetNS): the endpoint carries Ethernet frames.
func (ns *NS) AddTAP(t testing.TB, name string, opts tun.Options, hostAddrs ...string) *tun.Endpoint {
	t.Helper()
	opts.NetNS = netnsDir + "/" + ns.Name
	ep, err := tun.OpenTAP(name, opts)
	if err != nil {
		t.Fatalf("netns %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { ep.Close() })
	ns.AddAddr(t, ep.Name(), hostAddrs...)
	ns.LinkUp(t, ep.Name())
	return ep
}

// NFT loads an nftables script (`nft -f -`) in the namespace; the rules go with it.
func (ns *NS) NFT(t testing.TB, script string) {
	t.Helper()
	_, err := exec.LookPath("nft")
	testenv.NeedCommand(t, "nft", err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("netns %s: nft: %v: %s\nscript:\n%s", ns.Name, err, out, script)
	}
}

// DropTable is the nftables table (family inet) that DropRandom adds its rules to.
const DropTable = "berthtest"

// DropRandom adds a rule that drops percent% of the packets (IPv4 and IPv6) that pass
// hook ("input", "output", "forward", "prerouting" or "postrouting") in the namespace, at
// random: `numgen random mod 100 < percent drop`. This kernel has no netem; this is the
// kernel side's loss. Each call adds one more rule; ClearDrops removes them all.
func (ns *NS) DropRandom(t testing.TB, hook string, percent int) {
	t.Helper()
	switch hook {
	case "input", "output", "forward", "prerouting", "postrouting":
	default:
		t.Fatalf("netns: DropRandom: unknown hook %q", hook)
	}
	if percent < 0 || percent > 100 {
		t.Fatalf("netns: DropRandom: percent %d not in 0-100", percent)
	}
	ns.NFT(t, fmt.Sprintf(`table inet %s {
	chain %s {
		type filter hook %s priority 0; policy accept;
		numgen random mod 100 < %d drop
	}
}
`, DropTable, hook, hook, percent))
}

// ClearDrops removes every DropRandom rule.
func (ns *NS) ClearDrops(t testing.TB) {
	t.Helper()
	// Declaring the table first makes the delete work when there is none (nft 1.0.6,
	// Debian 12, has no "destroy").
	ns.NFT(t, fmt.Sprintf("table inet %s {}\ndelete table inet %s\n", DropTable, DropTable))
}
