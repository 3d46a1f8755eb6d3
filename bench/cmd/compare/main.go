// Command compare runs the bench module's workloads on berth and on gVisor several times,
// takes the median of each figure and prints one Markdown table: the figure for each stack,
// the ratio berth/gVisor, and the target for that ratio.
//
// Run it from the bench module:
//
//	cd bench && go run ./cmd/compare            # 5 rounds, about 5 minutes on 2 cores
//	cd bench && go run ./cmd/compare -count 1 -short
//	cd bench && go run ./cmd/compare -run UDP -raw /tmp/udp.txt   # one workload, raw runs too
//
// Rounds interleave the stacks: each round runs every workload once on each stack, so a
// slow phase of a noisy machine hits both.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// workload is one benchmark function and how long each run of it lasts.
type workload struct {
	bench     string // Benchmark function name
	benchtime string
}

var workloads = []workload{
	{"BenchmarkBulk", "256x"},      // 256 MiB per stream
	{"BenchmarkConnRate", "3000x"}, // TIME-WAIT holds a 4-tuple per connection: keep N fixed
	{"BenchmarkIdleConns", "1x"},   // 10,000 connections per op
	{"BenchmarkUDP", "0.5s"},
	{"BenchmarkEphemeral", "0.5s"},
	{"BenchmarkTUN", "128x"},         // needs root: a TUN device in a namespace of its own
	{"BenchmarkTUNPlain", "64x"},     // needs root: berth without offloads
	{"BenchmarkVethCeiling", "512x"}, // needs root
}

func main() {
	count := flag.Int("count", 5, "rounds: each workload runs this many times on each stack; the table shows medians")
	short := flag.Bool("short", false, "smoke run: tiny sizes (passes -test.short, -benchtime 1x)")
	filter := flag.String("run", "", "only workloads whose benchmark name contains this")
	out := flag.String("o", "", "also write the Markdown to this file")
	raw := flag.String("raw", "", "also write every run's `go test -bench` output to this file (benchstat reads it)")
	flag.Parse()

	dir, err := os.MkdirTemp("", "berth-compare")
	check(err)
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "bench.test")
	fmt.Fprintln(os.Stderr, "building the benchmark binary ...")
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	check(build.Run())

	res := results{}
	var all bytes.Buffer
	start := time.Now()
	for round := 1; round <= *count; round++ {
		for _, w := range workloads {
			if *filter != "" && !strings.Contains(w.bench, *filter) {
				continue
			}
			args := []string{"-test.run", "^$", "-test.bench", "^" + w.bench + "$", "-test.count", "1",
				"-test.benchtime", w.benchtime, "-test.timeout", "10m"}
			if *short {
				args = append(args, "-test.short", "-test.benchtime", "1x")
			}
			fmt.Fprintf(os.Stderr, "round %d/%d %s (%s elapsed)\n", round, *count, w.bench, time.Since(start).Round(time.Second))
			cmd := exec.Command(bin, args...)
			var buf bytes.Buffer
			cmd.Stdout = io.MultiWriter(&buf, os.Stderr)
			cmd.Stderr = os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "%s failed: %v\n", w.bench, err)
				os.Exit(1)
			}
			all.Write(buf.Bytes())
			res.parse(&buf)
		}
	}

	var md strings.Builder
	writeHeader(&md, *count, *short)
	writeTable(&md, res)
	fmt.Print(md.String())
	if *out != "" {
		check(os.WriteFile(*out, []byte(md.String()), 0o644))
	}
	if *raw != "" {
		check(os.WriteFile(*raw, all.Bytes(), 0o644))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// results maps benchmark name (without the stack) -> stack -> unit -> values of each run.
type results map[string]map[string]map[string][]float64

// parse reads `go test -bench` output lines such as
// "BenchmarkBulk/mtu=1500/stack=gvisor-2  200  3362978 ns/op  2.494 Gbit/s ...".
func (r results) parse(rd io.Reader) {
	sc := bufio.NewScanner(rd)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // GOMAXPROCS suffix
			}
		}
		i := strings.Index(name, "/stack=")
		if i < 0 {
			continue
		}
		bench, stack := name[:i], name[i+len("/stack="):]
		if r[bench] == nil {
			r[bench] = map[string]map[string][]float64{}
		}
		if r[bench][stack] == nil {
			r[bench][stack] = map[string][]float64{}
		}
		for j := 2; j+1 < len(f); j += 2 {
			v, err := strconv.ParseFloat(f[j], 64)
			if err != nil {
				continue
			}
			r[bench][stack][f[j+1]] = append(r[bench][stack][f[j+1]], v)
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r results) get(bench, stack, unit string) (float64, int) {
	v := r[bench][stack][unit]
	return median(v), len(v)
}

// row is one line of the table: a figure of one benchmark, and the target for the
// ratio berth/gVisor (or for berth's figure alone).
type row struct {
	workload, bench, unit, label string
	target                       string
	met                          func(berth, gvisor, ratio float64) bool
	// derived figures (not a measured unit) compute their value from the results.
	derive func(r results, stack string) float64
	// noRatio: the two columns are not one figure for two stacks (no berth/gVisor ratio).
	noRatio bool
}

func atLeast(x float64) func(_, _, ratio float64) bool {
	return func(_, _, ratio float64) bool { return ratio >= x }
}

func atMost(x float64) func(_, _, ratio float64) bool {
	return func(_, _, ratio float64) bool { return ratio <= x }
}

// segmentsPerMB is how many full-size TCP segments carry 1 MB at a given MTU (IPv4, no
// options beyond the 12 bytes of timestamps both stacks send).
func segmentsPerMB(mtu int) float64 { return 1e6 / float64(mtu-20-20-12) }

func rows() []row {
	var rs []row
	for _, mtu := range []int{1500, 65535} {
		b := fmt.Sprintf("BenchmarkBulk/mtu=%d", mtu)
		w := fmt.Sprintf("1. bulk TCP, MTU %d", mtu)
		target := 3.0
		if mtu == 65535 {
			target = 1.5
		}
		spm := segmentsPerMB(mtu)
		rs = append(rs,
			row{workload: w, bench: b, unit: "Gbit/s", label: "throughput (Gbit/s)",
				target: fmt.Sprintf("≥ %gx", target), met: atLeast(target)},
			row{workload: w, bench: b, unit: "cpu-s/GB", label: "CPU s per GB (lower is better)"},
			row{workload: w, bench: b, unit: "allocs/MB", label: "allocations per MB (lower is better)"},
			row{workload: w, bench: b, unit: "allocs/segment", label: "allocations per segment",
				target: "berth ≤ 0.01 (none per segment)",
				met:    func(berth, _, _ float64) bool { return berth <= 0.01 },
				derive: func(r results, stack string) float64 {
					v, _ := r.get(b, stack, "allocs/MB")
					return v / spm
				}},
		)
	}
	for _, c := range []int{1, 64} {
		rs = append(rs, row{workload: fmt.Sprintf("2. connection rate, %d client(s)", c),
			bench: fmt.Sprintf("BenchmarkConnRate/clients=%d", c), unit: "conns/s",
			label: "connect + 1-byte echo + close per s", target: "≥ 2x", met: atLeast(2)})
	}
	rs = append(rs,
		row{workload: "3. 10,000 idle connections", bench: "BenchmarkIdleConns", unit: "heap-B/conn",
			label: "heap bytes per connection, both ends (lower is better)", target: "≤ 0.5x", met: atMost(0.5)},
		row{workload: "3. 10,000 idle connections", bench: "BenchmarkIdleConns", unit: "goroutines/conn",
			label: "goroutines per connection", target: "berth 0",
			met: func(berth, _, _ float64) bool { return berth < 0.001 }},
	)
	for _, size := range []int{64, 1400} {
		for _, socks := range []int{1, 10000} {
			rs = append(rs, row{workload: fmt.Sprintf("4. UDP %d B, %d bound socket(s)", size, socks),
				bench: fmt.Sprintf("BenchmarkUDP/size=%d/sockets=%d", size, socks), unit: "dgrams/s",
				label: "datagrams per s", target: "≥ 2x", met: atLeast(2)})
		}
		one := fmt.Sprintf("BenchmarkUDP/size=%d/sockets=1", size)
		many := fmt.Sprintf("BenchmarkUDP/size=%d/sockets=10000", size)
		rs = append(rs, row{workload: fmt.Sprintf("4. UDP %d B, flatness", size), bench: many,
			unit: "flat", label: "datagrams/s at 10,000 sockets ÷ at 1",
			target: "berth ≥ 0.9 (flat)", met: func(berth, _, _ float64) bool { return berth >= 0.9 },
			derive: func(r results, stack string) float64 {
				a, _ := r.get(many, stack, "dgrams/s")
				b, _ := r.get(one, stack, "dgrams/s")
				return a / b
			}},
			row{workload: fmt.Sprintf("4. UDP %d B, flatness", size), bench: many,
				unit: "flatcpu", label: "CPU per datagram at 1 socket ÷ at 10,000", noRatio: true,
				derive: func(r results, stack string) float64 {
					a, _ := r.get(one, stack, "cpu-ns/dgram")
					b, _ := r.get(many, stack, "cpu-ns/dgram")
					return a / b
				}})
	}
	for _, pct := range []int{0, 90, 99} {
		for _, by := range []string{"bind", "connect"} {
			if pct == 0 && by == "connect" {
				continue
			}
			what := "bound"
			if by == "connect" {
				what = "held by connections to the same remote"
			}
			rs = append(rs, row{workload: fmt.Sprintf("5. ephemeral port, %d%% of range %s", pct, what),
				bench: fmt.Sprintf("BenchmarkEphemeral/occupancy=%d%%/by=%s", pct, by), unit: "ns/op",
				label: "ns per connect: pick + register + release (lower is better)"})
		}
	}
	const veth = "BenchmarkVethCeiling"
	for _, dir := range []string{"kernel-to-stack", "stack-to-kernel"} {
		b := "BenchmarkTUN/dir=" + dir
		w := "6. TUN, " + strings.Replace(dir, "-to-", " → ", 1)
		rs = append(rs,
			row{workload: w, bench: b, unit: "Gbit/s", label: "throughput (Gbit/s)", target: "≥ 1x", met: atLeast(1)},
			row{workload: w, bench: b, unit: "cpu-s/GB", label: "CPU s per GB (lower is better)"},
			row{workload: w, bench: b, unit: "ceiling", label: "÷ kernel→kernel veth ceiling",
				target: "berth ≥ 0.5", met: func(berth, _, _ float64) bool { return berth >= 0.5 }, noRatio: true,
				derive: func(r results, stack string) float64 {
					v, _ := r.get(b, stack, "Gbit/s")
					c, _ := r.get(veth, "kernel", "Gbit/s")
					return v / c
				}},
		)
	}
	for _, dir := range []string{"kernel-to-stack", "stack-to-kernel"} {
		rs = append(rs, row{workload: "6. TUN without offloads, " + strings.Replace(dir, "-to-", " → ", 1),
			bench: "BenchmarkTUNPlain/dir=" + dir, unit: "Gbit/s", label: "throughput (Gbit/s), berth only", noRatio: true})
	}
	rs = append(rs, row{workload: "6. kernel → kernel over veth (ceiling)", bench: veth, unit: "Gbit/s",
		label: "throughput (Gbit/s), kernel in both columns", noRatio: true,
		derive: func(r results, _ string) float64 {
			v, _ := r.get(veth, "kernel", "Gbit/s")
			return v
		}})
	return rs
}

func format(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "—"
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case math.Abs(v) >= 0.01:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'g', 2, 64)
}

func writeTable(w io.Writer, r results) {
	fmt.Fprintln(w, "| workload | figure | berth | gVisor | berth/gVisor | target | met |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | --- | --- |")
	for _, row := range rows() {
		var bv, gv float64
		if row.derive != nil {
			bv, gv = row.derive(r, "berth"), row.derive(r, "gvisor")
		} else {
			bv, _ = r.get(row.bench, "berth", row.unit)
			gv, _ = r.get(row.bench, "gvisor", row.unit)
		}
		if math.IsNaN(bv) && math.IsNaN(gv) {
			continue // workload not run (filtered)
		}
		ratio := bv / gv
		ratioStr := format(ratio)
		if ratioStr != "—" {
			ratioStr += "x"
		}
		if row.noRatio {
			ratioStr = ""
		}
		met := ""
		if row.met != nil {
			switch {
			case math.IsNaN(bv):
				met = "not measured"
			case row.met(bv, gv, ratio):
				met = "yes"
			default:
				met = "**no**"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n",
			row.workload, row.label, format(bv), format(gv), ratioStr, row.target, met)
	}
}

func writeHeader(w io.Writer, count int, short bool) {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	gvisor := "unknown"
	if b, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "gvisor.dev/gvisor").Output(); err == nil {
		gvisor = strings.TrimSpace(string(b))
	}
	rev := "unknown"
	if b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		rev = strings.TrimSpace(string(b))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			rev += " (with uncommitted changes)"
		}
	}
	mode := ""
	if short {
		mode = " -short (smoke sizes: not comparable figures)"
	}
	fmt.Fprintf(w, "Date: %s  \n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "Machine: %d CPUs (%s), %s/%s, %s  \n", runtime.NumCPU(), cpu, runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintf(w, "berth %s; gVisor %s  \n", rev, gvisor)
	runs := "runs"
	if count == 1 {
		runs = "run"
	}
	fmt.Fprintf(w, "Medians of %d %s per stack%s.\n\n", count, runs, mode)
}
