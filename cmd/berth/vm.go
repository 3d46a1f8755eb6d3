package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/link/vmsock"
)

// vmUsage is the synopsis of berth vm (after "berth "); main.go's table lists the command.
const vmUsage = "vm --socket PATH [--dgram [--peer PATH]] [-p MAPPING]... [--mtu N] [--no-ipv6] [--no-host-loopback] [--dns-upstream ADDR[:PORT]] [--control PATH|none] [--threads N]"

// vmDoc is the text of berth help vm.
const vmDoc = `Serves a virtual machine's network over a UNIX socket, as passt does for QEMU: the VM's
NIC is on berth's Ethernet link, and berth forwards its flows exactly as berth run
does for a namespace (the same gateways, DNS, port forwards and control socket).

The VM configures itself: berth's DHCP server leases it 10.0.2.100/24 with the
gateway 10.0.2.2 as router, 10.0.2.3 as name server and the MTU, and berth's router
advertisements give it an address in fd00::/64 (SLAAC), a default route, the MTU and
fd00::3 as name server (RDNSS).

  --socket PATH   the socket berth listens on (a stale socket file is replaced):
                  a stream socket by default, for QEMU 7.2's
                    -netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH
                    -device virtio-net-pci,netdev=n0
                  (each frame behind a 4-byte length; one VM at a time, the next
                  connection is served when the current one ends)
  --dgram         a datagram socket instead, one frame per datagram, for
                    -netdev dgram,id=n0,local.type=unix,local.path=VMPATH,
                            remote.type=unix,remote.path=PATH
  --peer VMPATH   with --dgram: where frames go (default: the address the VM's
                  datagrams come from)
  --mtu N         the link's MTU, offered to the VM by DHCP and router
                  advertisements (default 65520, as passt)

The other options are berth run's (berth run --help). berth vm runs until SIGINT or
SIGTERM.`

func runVM(c *command, args []string) int {
	var ff fwdFlags
	fs := flag.NewFlagSet("vm", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ff.register(fs)
	sock := fs.String("socket", "", "the UNIX socket to serve the VM on")
	dgram := fs.Bool("dgram", false, "a datagram socket (QEMU -netdev dgram)")
	peer := fs.String("peer", "", "with --dgram: the VM's socket")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: berth %s\n\n%s\n", c.usage, c.help)
			return exitOK
		}
		return usageError(c, "%v", err)
	}
	if err := ff.applyThreads(fs); err != nil {
		return usageError(c, "%v", err)
	}
	switch {
	case fs.NArg() > 0:
		return usageError(c, "unexpected argument %q", fs.Arg(0))
	case *sock == "":
		return usageError(c, "--socket is required")
	case *peer != "" && !*dgram:
		return usageError(c, "--peer needs --dgram")
	case ff.tap || ff.dhcp:
		return usageError(c, "--tap and --dhcp are berth run's: a VM is always on Ethernet, configured by DHCP")
	}
	cfg, err := ff.config("")
	if err != nil {
		return usageError(c, "%v", err)
	}
	if cfg.MTU <= 0 {
		cfg.MTU = forward.DefaultMTU
	}
	if err := removeStaleSocket(*sock); err != nil {
		return fail("vm", "%v", err)
	}
	opts := vmsock.Options{MTU: cfg.MTU}
	var dev *vmsock.Endpoint
	if *dgram {
		uc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: *sock, Net: "unixgram"})
		if err != nil {
			return fail("vm", "%v", err)
		}
		defer os.Remove(*sock) // a datagram socket's file is not removed on close
		var to *net.UnixAddr
		if *peer != "" {
			to = &net.UnixAddr{Name: *peer, Net: "unixgram"}
		}
		if dev, err = vmsock.NewDgram(uc, to, opts); err != nil {
			uc.Close()
			return fail("vm", "%v", err)
		}
	} else {
		ln, err := net.Listen("unix", *sock)
		if err != nil {
			return fail("vm", "%v", err)
		}
		if dev, err = vmsock.ListenStream(ln, opts); err != nil {
			ln.Close()
			return fail("vm", "%v", err)
		}
	}
	cfg.Frames = dev
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	tap := sessionTap(&cfg, ff.control)
	if tap != nil {
		tap.Ethernet = true
	}
	sess, err := forward.Start(cfg)
	if err != nil {
		dev.Close()
		return fail("vm", "%v", err)
	}
	defer sess.Close()
	if ff.control != "none" {
		stop, err := serveSessionControl(ff.control, sess, tap)
		if err != nil {
			return fail("vm", "control socket: %v", err)
		}
		defer stop()
	}
	fmt.Fprintf(stderr, "berth vm: serving %s (MAC %s)\n", *sock, net.HardwareAddr(forward.SessionMAC[:]))
	<-sigs
	return exitOK
}

// removeStaleSocket removes path if it is a socket nobody listens on (left by a berth
// that was killed), so that listening on it again works; anything else there is left,
// and listening fails with EADDRINUSE.
func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 {
		return nil
	}
	for _, network := range []string{"unix", "unixgram"} {
		if c, err := net.Dial(network, path); err == nil {
			c.Close()
			return fmt.Errorf("%s: a program is listening on it", path)
		}
	}
	return os.Remove(path)
}
