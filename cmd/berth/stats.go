package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/berthnet/berth/control"
)

// statsUsage is the synopsis of berth stats (after "berth "); main.go's table lists the
// command.
const statsUsage = "stats [-z] [--json] [--control PATH | --tun NAME] [PATTERN...]"

// statsDoc is the text of berth help stats.
var statsDoc = `Prints the counters of a running "berth up", "berth run" or "berth attach", read
through its control socket.
They are named like the kernel's (nstat, netstat -s): IpInReceives,
TcpActiveOpens, TcpRetransSegs, UdpNoPorts, IcmpOutDestUnreachs, ...

  PATTERN          show only counters matching these shell patterns (Tcp*, Udp*)
  -z, --zeros      also show counters that are zero (hidden by default, as nstat;
                   a PATTERN without wildcards always shows its counter)
  --json           the counters as one JSON object, in the same order
  --control PATH   the control socket (default: the only one in ` + control.Dir() + `)
  --tun NAME       the control socket of "berth up --tun NAME"

Exit status 1 when no berth is running there or no counter matches a pattern.

Examples:
  berth stats
  berth stats 'Tcp*' UdpNoPorts
  berth stats -z --json --tun berth0`

func runStats(c *command, args []string) int {
	var zeros, asJSON bool
	var target controlTarget
	specs := append([]flagSpec{
		{short: 'z', long: "zeros", bool: &zeros},
		{long: "json", bool: &asJSON},
	}, targetFlags(&target)...)
	patterns, help, err := parseFlags(specs, args)
	if help {
		return runHelp([]string{c.name}) // the same text as berth help NAME
	}
	if err != nil {
		return usageError(c, "%v", err)
	}
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return usageError(c, "bad pattern %q: %v", p, err)
		}
	}
	where, err := target.resolve()
	if err != nil {
		return controlError(c, "", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	counters, err := (&control.Client{Path: where}).Counters(ctx)
	if err != nil {
		return controlError(c, where, err)
	}
	shown, unmatched := selectCounters(counters, patterns, zeros)
	if len(unmatched) > 0 {
		return fail(c.name, "no counter matches %s (berth stats -z lists them all)", strings.Join(unmatched, ", "))
	}
	if asJSON {
		if err := writeCountersJSON(stdout, shown); err != nil {
			return fail(c.name, "%v", err)
		}
		return exitOK
	}
	fmt.Fprintf(stdout, "#berth %s\n", where)
	writeCounters(stdout, shown, "")
	return exitOK
}

// selectCounters keeps the counters matching patterns (all when none), hiding zeros
// unless zeros is set or a pattern names the counter exactly; unmatched are the patterns
// that matched no counter at all.
func selectCounters(counters []control.Counter, patterns []string, zeros bool) (shown []control.Counter, unmatched []string) {
	hit := make([]bool, len(patterns))
	for _, c := range counters {
		keep, exact := len(patterns) == 0, false
		for i, p := range patterns {
			if ok, _ := path.Match(p, c.Name); ok {
				keep, hit[i] = true, true
				exact = exact || p == c.Name
			}
		}
		if keep && (c.Value != 0 || zeros || exact) {
			shown = append(shown, c)
		}
	}
	for i, p := range patterns {
		if !hit[i] {
			unmatched = append(unmatched, p)
		}
	}
	return shown, unmatched
}

// writeCounters prints one counter a line, as nstat: the name in 32 columns, the value.
func writeCounters(w io.Writer, cs []control.Counter, indent string) {
	for _, c := range cs {
		fmt.Fprintf(w, "%s%-31s %d\n", indent, c.Name, c.Value)
	}
}

// writeCountersJSON writes the counters as one JSON object, keeping their order.
func writeCountersJSON(w io.Writer, cs []control.Counter) error {
	var b strings.Builder
	b.WriteString("{")
	for i, c := range cs {
		if i > 0 {
			b.WriteString(",")
		}
		name, _ := json.Marshal(c.Name)
		fmt.Fprintf(&b, "\n  %s: %d", name, c.Value)
	}
	if len(cs) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}
