package main

// pasta's "auto" port forwarding (-t auto, -u auto: rootlesskit's implicit port driver):
// every second berth lists the namespace's listening sockets (a sock_diag dump,
// sockDiag, or else /proc/PID/net/tcp, tcp6, udp and udp6, proc(5)) and forwards the
// host's port of the same number to each one in the spec's set, removing the forward
// once the socket is gone.

import (
	"bufio"
	"cmp"
	"encoding/hex"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/forward/portspec"
)

// procListeners reads one /proc/net/{tcp,tcp6,udp,udp6} table: the ports with a socket
// in state want (0A: TCP LISTEN; 07: an unconnected UDP socket) on a wildcard or
// non-loopback address, and with loopback on a loopback address too. -t auto leaves
// the namespace's loopback out (a forward reaches the namespace's own address, and
// -T's listeners are there); -T auto counts the host's every listener, as pasta.
func procListeners(r io.Reader, want string, loopback bool, into map[uint16]bool) {
	sc := bufio.NewScanner(r)
	sc.Scan() // the header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != want {
			continue
		}
		addrHex, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil || port == 0 {
			continue
		}
		b, err := hex.DecodeString(addrHex)
		if err != nil || (len(b) != 4 && len(b) != 16) {
			continue
		}
		// The kernel prints each 32-bit word in host byte order (little-endian here).
		for i := 0; i+4 <= len(b); i += 4 {
			b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
		}
		a, _ := netip.AddrFromSlice(b)
		if !loopback && a.Unmap().IsLoopback() {
			continue
		}
		into[uint16(port)] = true
	}
}

// boundPorts adds to into the ports an auto spec of proto sees in the /proc/net
// directory dir (procListeners' loopback rule): TCP's listeners for "tcp"; for "udp" the
// bound UDP sockets and, as pasta does (passt(1), -u), the TCP listeners' port numbers
// too, for the protocols (iperf3's among them) that pair a TCP control port with a UDP
// one of the same number.
func boundPorts(dir, proto string, loopback bool, into map[uint16]bool) {
	scanPorts(nil, func() string { return dir }, proto, loopback, into)
}

// scanPorts is boundPorts with the sock_diag socket d (nil: none): each table's dump,
// or where that fails, the table in the /proc/net directory dir returns (called only
// then; "" for none).
func scanPorts(d *sockDiag, dir func() string, proto string, loopback bool, into map[uint16]bool) {
	read := func(table, state string) {
		if d != nil && d.listeners(diagTables[table], loopback, into) == nil {
			return
		}
		if dir := dir(); dir != "" {
			if f, err := os.Open(dir + "/" + table); err == nil {
				procListeners(f, state, loopback, into)
				f.Close()
			}
		}
	}
	switch proto {
	case "tcp":
		read("tcp", "0A")
		read("tcp6", "0A")
	case "udp":
		read("udp", "07")
		read("udp6", "07")
		read("tcp", "0A")
		read("tcp6", "0A")
	}
}

// netnsPID finds a process in the network namespace at path (a namespace file such as
// /run/netns/NAME), whose /proc/PID/net then shows that namespace's sockets: the one
// whose ns/net link names the file's inode (namespaces(7)). prev is tried first.
func netnsPID(path string, prev int) int {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	want := "net:[" + strconv.FormatUint(st.Ino, 10) + "]"
	if prev > 0 {
		if l, err := os.Readlink("/proc/" + strconv.Itoa(prev) + "/ns/net"); err == nil && l == want {
			return prev
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && l == want {
			return pid
		}
	}
	return 0
}

// autoForward keeps the forwards of the auto specs up to date with the namespace of
// pid (or, with pid 0, of a process found in the namespace file netns) until stop
// closes.
type autoForward struct {
	ports    portTable
	pid      int
	netns    string
	userns   string                     // netns's user namespace (nsEnterCmd's)
	found    int                        // netns's process last scan
	diag     *sockDiag                  // netns's, once opened; nil: /proc only
	diagDone bool                       // the first scan tried to open diag
	specs    map[string][]portspec.Spec // by protocol
	ipv4Only bool
	have     map[forward.PortMapping]bool
}

func (a *autoForward) scan() {
	if !a.diagDone {
		// Once: a namespace where sock_diag cannot be had keeps to /proc (the
		// helper, when setns is not allowed, is a process to run).
		a.diagDone = true
		if a.netns != "" {
			a.diag, _ = openSockDiagIn(a.netns, a.userns)
		}
	}
	// /proc/PID/net of a process in the namespace, looked for only when a dump
	// fails; with none (yet), nothing listens.
	dir, looked := "", false
	procDir := func() string {
		if !looked {
			looked = true
			pid := a.pid
			if pid == 0 {
				a.found = netnsPID(a.netns, a.found)
				pid = a.found
			}
			if pid != 0 {
				dir = "/proc/" + strconv.Itoa(pid) + "/net"
			}
		}
		return dir
	}
	want := map[forward.PortMapping]bool{}
	for proto, specs := range a.specs {
		bound := map[uint16]bool{}
		scanPorts(a.diag, procDir, proto, false, bound)
		for _, sp := range specs {
			for p := range bound {
				if !autoIncludes(sp, p) {
					continue
				}
				m := forward.PortMapping{Proto: proto, HostAddr: sp.Addr, HostPort: p, NSPort: p}
				if !m.HostAddr.IsValid() && a.ipv4Only {
					m.HostAddr = netip.IPv4Unspecified()
				}
				want[m] = true
			}
		}
	}
	for m := range a.have {
		if !want[m] {
			a.ports.RemovePort(m)
			delete(a.have, m)
		}
	}
	for m := range want {
		// A host port that is taken (by another program) is tried again next time.
		if !a.have[m] && a.ports.AddPort(m) == nil {
			a.have[m] = true
		}
	}
}

// autoIncludes reports whether the auto spec sp forwards the bound port p: with no
// ranges every port outside the ephemeral range, else the ranges' (those that keep
// the port number), less the exclusions.
func autoIncludes(sp portspec.Spec, p uint16) bool {
	in := sp.All && !portspec.Ephemeral.Contains(p)
	for _, r := range sp.Include {
		in = in || (r.Listen.Contains(p) && r.Listen == r.Target)
	}
	for _, r := range sp.Exclude {
		if r.Contains(p) {
			return false
		}
	}
	return in
}

// scanEvery calls scan at once and then every interval until stop closes (pasta's auto
// forwards, -t/-u and -T/-U alike, rescan once a second).
func scanEvery(interval time.Duration, stop <-chan struct{}, scan func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		scan()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// nsAutoForward is -T auto and -U auto: every interval it lists the host's listening
// sockets (those of berth's own namespace, the host's: diag's dump, or /proc/self/net)
// and forwards each port in
// the specs' set from the namespace's loopback to the host's, removing the forward
// once the host's socket is gone. The host ports berth's own -t and -u forwards listen
// on are left out, as pasta does (fwd.c), or a connection would loop back into the
// namespace.
type nsAutoForward struct {
	fwd       nsPortTable
	specs     map[string][]portspec.Spec // by protocol
	hostPorts func() []forward.PortMapping
	diag      *sockDiag // berth's namespace's; nil: procNet only
	procNet   string    // "/proc/self/net"; tests point it elsewhere
	have      map[nsMapping]bool
	// retry holds the forwards that could not start (a program in the namespace has
	// the port), not tried again before the time: each try runs a helper process.
	retry map[nsMapping]time.Time
	now   func() time.Time // time.Now; tests set it
}

// nsAutoRetry is how long a -T/-U auto forward that failed waits for its next try.
const nsAutoRetry = 10 * time.Second

// nsPortTable is what nsAutoForward changes: nsForwarder.
type nsPortTable interface {
	Add([]nsMapping) []error
	Remove(nsMapping) error
}

func (a *nsAutoForward) scan() {
	own := map[string]map[uint16]bool{"tcp": {}, "udp": {}}
	if a.hostPorts != nil {
		for _, m := range a.hostPorts() {
			if own[m.Proto] != nil {
				own[m.Proto][m.HostPort] = true
			}
		}
	}
	want := map[nsMapping]bool{}
	for proto, specs := range a.specs {
		bound := map[uint16]bool{}
		scanPorts(a.diag, func() string { return a.procNet }, proto, true, bound)
		for _, sp := range specs {
			for p := range bound {
				if !own[proto][p] && autoIncludes(sp, p) {
					want[nsMapping{Proto: proto, NSPort: p, HostPort: p}] = true
				}
			}
		}
	}
	for m := range a.have {
		if !want[m] {
			a.fwd.Remove(m)
			delete(a.have, m)
		}
	}
	now := time.Now
	if a.now != nil {
		now = a.now
	}
	t := now()
	for m, at := range a.retry {
		if !want[m] || !t.Before(at) {
			delete(a.retry, m)
		}
	}
	var add []nsMapping
	for m := range want {
		if _, wait := a.retry[m]; !a.have[m] && !wait {
			add = append(add, m)
		}
	}
	if len(add) == 0 {
		return
	}
	slices.SortFunc(add, func(x, y nsMapping) int {
		return cmp.Or(cmp.Compare(x.Proto, y.Proto), cmp.Compare(x.NSPort, y.NSPort))
	})
	for i, err := range a.fwd.Add(add) {
		if err == nil {
			a.have[add[i]] = true
		} else {
			if a.retry == nil {
				a.retry = map[nsMapping]time.Time{}
			}
			a.retry[add[i]] = t.Add(nsAutoRetry)
		}
	}
}
