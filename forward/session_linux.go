//go:build linux

package forward

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/internal/nsthread"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/ether"
	"github.com/berthnet/berth/link/tun"
	"github.com/berthnet/berth/tcp"
)

// DeviceName is the TUN device the namespace gets.
const DeviceName = "berth0"

// SessionConfig configures a Session.
type SessionConfig struct {
	// NSPath names the network namespace to serve: /run/netns/NAME, /proc/PID/ns/net.
	NSPath string
	// MTU of the namespace's device; 0 means DefaultMTU.
	MTU int
	// Forwarder settings (NoIPv6, NoHostLoopback, DNSUpstream, limits).
	Forward Config
	// Ports are forwarded from the start.
	Ports []PortMapping
	// TCP settings of the berth stack; zero buffers become 1 MiB.
	TCP tcp.Config
	// Link, when set, wraps the namespace's device before the stack gets it: cmd/berth
	// puts a control.Tap there so that berth capture records the session's packets.
	Link func(link.Endpoint) link.Endpoint
	// Rootless hook (cmd/berth rootless mode): Device, when set, is the namespace's
	// device, already open and configured (addresses, routes, MTU); Start neither
	// creates nor configures one, and NSPath is unused. The Session takes it over; if
	// Start fails the caller closes it.
	Device *tun.Endpoint
	// TAP, Frames and DHCP: the Ethernet modes (session_tap_linux.go).
	TAP    bool
	Frames link.Endpoint
	DHCP   bool
}

// Session serves one network namespace: a TUN device berth0 inside it, configured with
// the namespace's addresses and default routes, whose far side is a berth stack with a
// Forwarder.
type Session struct {
	// Stack is the berth stack on the device (berth.New): its sockets, counters and
	// protocols, for the control socket.
	Stack     *berth.Stack
	Forwarder *Forwarder
	// Ether is the Ethernet layer on a TAP or frame device (SessionConfig.TAP, Frames),
	// nil on a TUN device.
	Ether *ether.Endpoint
	dev   *tun.Endpoint
}

// ipCmd runs ip(8) with args; errors carry its stderr.
func ipCmd(args ...string) error {
	cmd := exec.Command("ip", args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return nil
}

// waitLocalRoute waits (at most a second) for the namespace's local route to its IPv6
// address a: the kernel inserts it from a work queue after "ip addr add" has returned
// (the address's DAD work, even for nodad), and until then packets to a are taken for
// packets to forward and dropped (Ip6InAddrErrors) although a is already usable as a
// source. On a loaded machine the first answers of a session were lost that way.
func waitLocalRoute(a netip.Addr) {
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		out, err := exec.Command("ip", "-6", "route", "show", "table", "local", a.String()).Output()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			return
		}
	}
}

// Start creates the TUN device in the namespace, configures it, and starts forwarding.
func Start(cfg SessionConfig) (*Session, error) {
	if cfg.MTU <= 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 1280 && !cfg.Forward.NoIPv6 {
		return nil, fmt.Errorf("forward: MTU %d is below IPv6's minimum 1280 (use --no-ipv6)", cfg.MTU)
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("forward: MTU %d out of range 576-65535", cfg.MTU)
	}
	fc := cfg.Forward
	fc.setDefaults()
	var dev *tun.Endpoint
	setup := nsthread.Run
	if cfg.Device != nil || cfg.Frames != nil { // the device is ready (SessionConfig.Device, Frames)
		dev, setup = cfg.Device, func(string, func() error) error { return nil }
	}
	err := setup(cfg.NSPath, func() error {
		var err error
		if dev, err = openDevice(cfg); err != nil {
			return err
		}
		if !fc.NoIPv6 {
			// No duplicate address detection on a link with no one else on it: nothing
			// to detect, and the kernel would restart it once it found the link ready.
			for _, k := range []string{"accept_dad", "dad_transmits"} {
				os.WriteFile("/proc/sys/net/ipv6/conf/"+DeviceName+"/"+k, []byte("0"), 0)
			}
		}
		// Run from this thread, ip(8) works in the namespace.
		cmds := [][]string{
			{"link", "set", "lo", "up"},
			{"addr", "add", netip.PrefixFrom(fc.NSAddr4, DefaultNSAddr4.Bits()).String(), "dev", DeviceName},
			{"link", "set", DeviceName, "up"},
			{"route", "add", "default", "via", fc.Gateway4.String(), "dev", DeviceName},
		}
		if !fc.NoIPv6 {
			cmds = append(cmds,
				[]string{"-6", "addr", "add", netip.PrefixFrom(fc.NSAddr6, DefaultNSAddr6.Bits()).String(), "dev", DeviceName, "nodad"},
				[]string{"-6", "route", "add", "default", "via", fc.Gateway6.String(), "dev", DeviceName})
		}
		for _, c := range tapCommands(cfg, cmds) {
			if err := ipCmd(c...); err != nil {
				return err
			}
		}
		if !fc.NoIPv6 {
			waitLocalRoute(fc.NSAddr6)
		}
		return nil
	})
	if err != nil {
		if dev != nil {
			dev.Close()
		}
		return nil, err
	}
	if cfg.TCP.SendBuffer == 0 {
		cfg.TCP.SendBuffer = 1 << 20
	}
	if cfg.TCP.ReceiveBuffer == 0 {
		cfg.TCP.ReceiveBuffer = 1 << 20
	}
	if cfg.TCP.RMem == [3]int{} {
		// The namespace's connections offer their whole receive buffer from the start
		// instead of auto-tuning up to it: the copy to the host drains the buffer in
		// bursts (one 512 KiB write at a time), which auto-tuning reads as a reader that
		// leaves half the buffer unread, so it stayed at 256 KiB and the namespace's
		// sender was window-limited a third of the time (iperf3 namespace → host at MTU
		// 65520: median 9,440 against 8,671 Mbit/s over five A/B pairs). Ring memory is
		// still only taken as data arrives.
		cfg.TCP.RMem = [3]int{4096, cfg.TCP.ReceiveBuffer, cfg.TCP.ReceiveBuffer}
	}
	s := berth.New(berth.WithTCPConfig(cfg.TCP))
	sess := &Session{Stack: s, dev: dev}
	sess.Forwarder = New(s, cfg.Forward)
	fail := func(err error) (*Session, error) {
		sess.Close()
		return nil, err
	}
	var ep link.Endpoint = dev
	if cfg.Frames != nil {
		ep = cfg.Frames
	}
	if cfg.Link != nil {
		ep = cfg.Link(ep)
	}
	if cfg.TAP || cfg.Frames != nil {
		if sess.Ether, err = newEther(ep, cfg, fc, s); err != nil {
			return fail(err)
		}
		ep = sess.Ether
	}
	if err := s.AddInterface(DeviceName, ep); err != nil {
		return fail(err)
	}
	if err := s.AddAddress(DeviceName, DefaultStackAddr4); err != nil {
		return fail(err)
	}
	if !fc.NoIPv6 {
		if err := s.AddAddress(DeviceName, DefaultStackAddr6); err != nil {
			return fail(err)
		}
	}
	for _, m := range cfg.Ports {
		if err := sess.Forwarder.AddPort(m); err != nil {
			return fail(err)
		}
	}
	return sess, nil
}

// Close stops forwarding and removes the device (closing it deletes it).
func (s *Session) Close() error {
	s.Forwarder.Close()
	return s.Stack.Close() // its TCP and UDP, and the device
}

// Namespace is a named network namespace berth made (ip netns add) for `berth run`.
type Namespace struct {
	Name string // the namespace's name
}

// Path is the namespace's file.
func (n *Namespace) Path() string { return "/run/netns/" + n.Name }

// NewNamespace creates the network namespace name, with /etc/netns/NAME/resolv.conf
// naming dns (ip netns exec bind-mounts it over /etc/resolv.conf).
func NewNamespace(name string, dns []netip.Addr) (*Namespace, error) {
	if err := ipCmd("netns", "add", name); err != nil {
		return nil, err
	}
	n := &Namespace{Name: name}
	if len(dns) > 0 {
		dir := "/etc/netns/" + name
		if err := os.MkdirAll(dir, 0o755); err == nil {
			var b strings.Builder
			for _, a := range dns {
				b.WriteString("nameserver " + a.String() + "\n")
			}
			os.WriteFile(dir+"/resolv.conf", []byte(b.String()), 0o644)
		}
	}
	return n, nil
}

// Command returns cmd run inside the namespace (through ip netns exec).
func (n *Namespace) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Delete removes the namespace and its resolv.conf.
func (n *Namespace) Delete() error {
	os.RemoveAll("/etc/netns/" + n.Name)
	return ipCmd("netns", "delete", n.Name)
}

// NSPath turns attach's --netns argument (a path, or a PID) into a namespace file.
func NSPath(arg string) string {
	if _, err := strconv.Atoi(arg); err == nil {
		return "/proc/" + arg + "/ns/net"
	}
	if !strings.Contains(arg, "/") {
		return "/run/netns/" + arg
	}
	return arg
}
