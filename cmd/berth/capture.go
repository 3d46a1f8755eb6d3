package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/berthnet/berth/control"
)

// captureUsage is the synopsis of berth capture (after "berth "); main.go's table lists the
// command.
const captureUsage = "capture FILE [--count N] [--duration D] [--control PATH | --tun NAME]"

// captureDoc is the text of berth help capture.
var captureDoc = `Starts a packet capture on a running "berth up", "berth run" or "berth attach"
(the namespace's device), through its control socket, and writes it to FILE in the pcap format (LINKTYPE_RAW: IP packets), readable by
tcpdump, Wireshark and tshark. FILE "-" is standard output. The capture runs until
N packets are recorded, D has passed, or SIGINT (Ctrl-C); the file always ends
with a whole packet.

  -c, --count N     stop after N packets (default: no limit)
  --duration D      stop after D (like 10s, 2m; default: no limit)
  --control PATH    the control socket (default: the only one in ` + control.Dir() + `)
  --tun NAME        the control socket of "berth up --tun NAME"

A capture whose writer cannot keep up loses packets rather than slowing the host.

Examples:
  berth capture echo.pcap --count 20
  berth capture - --tun berth0 | tshark -r -`

func runCapture(c *command, args []string) int {
	var countS, durationS string
	var target controlTarget
	specs := append([]flagSpec{
		{short: 'c', long: "count", value: &countS, valueN: "N"},
		{long: "duration", value: &durationS, valueN: "D"},
	}, targetFlags(&target)...)
	pos, help, err := parseFlags(specs, args)
	if help {
		return runHelp([]string{c.name}) // the same text as berth help NAME
	}
	if err != nil {
		return usageError(c, "%v", err)
	}
	switch len(pos) {
	case 0:
		return usageError(c, "missing FILE (or - for standard output)")
	case 1:
	default:
		return usageError(c, "unexpected argument %q", pos[1])
	}
	file := pos[0]
	count := 0
	if countS != "" {
		n, err := strconv.Atoi(countS)
		if err != nil || n <= 0 {
			return usageError(c, "--count %q is not a positive number of packets", countS)
		}
		count = n
	}
	var duration time.Duration
	if durationS != "" {
		d, err := time.ParseDuration(durationS)
		if err != nil || d <= 0 {
			return usageError(c, "--duration %q is not a positive duration (like 10s or 2m)", durationS)
		}
		duration = d
	}
	where, err := target.resolve()
	if err != nil {
		return controlError(c, "", err)
	}
	out := os.Stdout
	if file != "-" {
		// Created before connecting, so a path that cannot be written fails first.
		out, err = os.Create(file)
		if err != nil {
			return fail(c.name, "%v", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	started := false
	n, err := (&control.Client{Path: where}).Capture(ctx, out, count, func() {
		started = true
		fmt.Fprintf(stderr, "berth capture: capturing on %s to %s", where, file)
		if count > 0 {
			fmt.Fprintf(stderr, " (%d packets)", count)
		}
		fmt.Fprintln(stderr, "; Ctrl-C stops")
	})
	if file != "-" {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if !started {
			os.Remove(file) // nothing was captured: leave no empty file behind
		}
	}
	if err != nil {
		if !started {
			return controlError(c, where, err)
		}
		return fail(c.name, "%v (%d packets written to %s)", err, n, file)
	}
	fmt.Fprintf(stderr, "berth capture: %d packets written to %s\n", n, file)
	if count > 0 && n < count && !errors.Is(ctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return fail(c.name, "the capture ended after %d of %d packets (berth stopped?)", n, count)
	}
	return exitOK
}
