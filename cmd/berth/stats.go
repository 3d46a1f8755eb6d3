package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthnet/berth/control"
)

// statsUsage is the synopsis of berth stats (after "berth "); main.go's table lists the
// command.
const statsUsage = "stats [-a] [-z] [-s] [-r] [-n] [--json] [--control PATH | --tun NAME] [PATTERN...]"

// statsDoc is the text of berth help stats.
var statsDoc = `Prints the counters of a running "berth up", "berth run" or "berth attach", read
through its control socket, as nstat does: by default how much each counter grew
since the last "berth stats" of that berth (the first call shows the totals);
-a shows the totals. Between calls the values are kept in a history file, one
per control socket, in $TMPDIR (or the file $BERTH_STATS_HISTORY names). A berth
that restarted (a counter smaller than in the history) shows its totals again.
Gauges (TcpCurrEstab, names with "Curr") always show their current value.
They are named like the kernel's (nstat, netstat -s): IpInReceives,
TcpActiveOpens, TcpRetransSegs, UdpNoPorts, IcmpOutDestUnreachs, ...

  PATTERN          show only counters matching these shell patterns (Tcp*, Udp*)
  -a, --ignore     absolute values (totals), not the growth since the last call
  -z, --zeros      also show counters that are zero (hidden by default, as nstat;
                   a PATTERN without wildcards always shows its counter)
  -s, --noupdate   do not update the history file
  -r, --reset      forget the history first (so show totals, and start over)
  -n, --nooutput   print nothing, only update the history
  --json           as nstat --json: {"berth": {"Name": value, ...}}, the counters in
                   the same order
  --control PATH   the control socket (default: the only one in ` + control.Dir() + `)
  --tun NAME       the control socket of "berth up --tun NAME"

Exit status 1 when no berth is running there or no counter matches a pattern.

Examples:
  berth stats
  berth stats -a 'Tcp*' UdpNoPorts
  berth stats -z --json --tun berth0`

func runStats(c *command, args []string) int {
	var zeros, asJSON, absolute, noUpdate, reset, noOutput bool
	var target controlTarget
	specs := append([]flagSpec{
		{short: 'z', long: "zeros", bool: &zeros},
		{short: 'a', long: "ignore", bool: &absolute},
		{short: 's', long: "noupdate", bool: &noUpdate},
		{short: 'r', long: "reset", bool: &reset},
		{short: 'n', long: "nooutput", bool: &noOutput},
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
	histFile := statsHistoryPath(where)
	var hist map[string]uint64
	if !reset {
		hist = readStatsHistory(histFile)
	}
	if !noUpdate {
		if err := writeStatsHistory(histFile, where, counters); err != nil {
			return fail(c.name, "history: %v", err)
		}
	}
	if noOutput {
		return exitOK
	}
	if !absolute {
		counters = counterDeltas(counters, hist)
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

// isGauge reports whether a counter is a level rather than a count of events (RFC 1213's
// tcpCurrEstab): its delta would mean nothing, so it is shown as it is.
func isGauge(name string) bool { return strings.Contains(name, "Curr") }

// counterDeltas returns how much each counter grew since hist. A counter missing from
// hist, or smaller than there (the berth restarted and counts from zero again), shows
// its value, as nstat does.
func counterDeltas(cs []control.Counter, hist map[string]uint64) []control.Counter {
	out := make([]control.Counter, len(cs))
	for i, c := range cs {
		out[i] = c
		if old, ok := hist[c.Name]; ok && !isGauge(c.Name) && c.Value >= old {
			out[i].Value = c.Value - old
		}
	}
	return out
}

// statsHistoryPath is the history file for the berth at socket: $BERTH_STATS_HISTORY,
// or one per user and socket in the temporary directory (as nstat's /tmp/.nstat.uUID).
func statsHistoryPath(socket string) string {
	if p := os.Getenv("BERTH_STATS_HISTORY"); p != "" {
		return p
	}
	h := fnv.New32a()
	h.Write([]byte(socket))
	return filepath.Join(os.TempDir(), fmt.Sprintf(".berth-stats.u%d.%s.%08x", os.Getuid(), filepath.Base(socket), h.Sum32()))
}

// readStatsHistory reads a history file; a missing or unreadable one is an empty
// history (the next call shows totals), never an error.
func readStatsHistory(file string) map[string]uint64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	hist := map[string]uint64{}
	for _, l := range strings.Split(string(b), "\n") {
		name, val, ok := strings.Cut(l, " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64); err == nil {
			hist[name] = v
		}
	}
	return hist
}

// writeStatsHistory replaces the history file with cs, atomically (a rename), so that
// two calls at once leave one whole file.
func writeStatsHistory(file, socket string, cs []control.Counter) error {
	var b strings.Builder
	fmt.Fprintf(&b, "#berth %s\n", socket)
	for _, c := range cs {
		fmt.Fprintf(&b, "%s %d\n", c.Name, c.Value)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), file)
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

// writeCountersJSON writes the counters as nstat --json does, one object named for
// their source ({"kernel": {...}} there, {"berth": {...}} here), keeping their order.
func writeCountersJSON(w io.Writer, cs []control.Counter) error {
	var b strings.Builder
	b.WriteString("{\"berth\": {")
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
	b.WriteString("}}\n")
	_, err := io.WriteString(w, b.String())
	return err
}
