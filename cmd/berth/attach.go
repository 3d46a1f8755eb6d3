package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/berthnet/berth/forward"
)

// attachUsage is the synopsis of berth attach (after "berth "); main.go's table lists the
// command.
const attachUsage = "attach --netns PATH|NAME|PID [-p MAPPING]... [--tap [--dhcp]] [--mtu N] [--no-ipv6] [--no-host-loopback] [--dns-upstream ADDR[:PORT]] [--control PATH|none] [--threads N] [--max-LIMIT N]..."

// attachDoc is the text of berth help attach.
const attachDoc = `Serves a network namespace that exists (as slirp4netns and pasta do): creates berth0
in it, configured as for berth run, and forwards its flows until the namespace is
gone (its file removed, or its process ended) or berth is signalled (SIGINT, SIGTERM).
--netns takes a namespace file, a name under /run/netns, or a PID. The other options
are berth run's (berth run --help).`

func runAttach(c *command, args []string) int {
	var ff fwdFlags
	fs := flag.NewFlagSet("attach", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ff.register(fs)
	nsArg := fs.String("netns", "", "the namespace: a path, a name under /run/netns, or a PID")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return runHelp([]string{c.name}) // as every command: usage and help on stdout, exit 0
		}
		return usageError(c, "%v", err)
	}
	if err := ff.applyThreads(fs); err != nil {
		return usageError(c, "%v", err)
	}
	if fs.NArg() > 0 {
		return usageError(c, "unexpected argument %q", fs.Arg(0))
	}
	if *nsArg == "" {
		return usageError(c, "--netns is required")
	}
	path := forward.NSPath(*nsArg)
	if _, err := os.Stat(path); err != nil {
		return fail("attach", "namespace %s: %v", *nsArg, err)
	}
	cfg, err := ff.config(path)
	if err != nil {
		return usageError(c, "%v", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	tap := sessionTap(&cfg, ff.control)
	if tap != nil {
		tap.Ethernet = cfg.TAP
	}
	sess, err := forward.Start(cfg)
	if err != nil {
		return fail("attach", "%v", err)
	}
	defer sess.Close()
	if ff.control != "none" {
		stop, err := serveSessionControl(ff.control, sess, tap)
		if err != nil {
			return fail("attach", "control socket: %v", err)
		}
		defer stop()
	}
	fmt.Fprintf(stderr, "berth attach: serving %s\n", path)
	// The namespace file goes away with `ip netns delete`, /proc/PID/ns/net with the
	// process: polling is the portable way to notice either.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-sigs:
			return exitOK
		case <-tick.C:
			if _, err := os.Stat(path); err != nil {
				return exitOK
			}
		}
	}
}
