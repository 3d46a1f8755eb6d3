package main

import (
	"flag"
	"io"
	"runtime"
	"strings"
	"testing"
)

// TestApplyThreads: --threads sets GOMAXPROCS for run and attach; without it berth takes
// one thread unless the GOMAXPROCS environment variable chose; negative is a usage error.
func TestApplyThreads(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	parse := func(args ...string) (*fwdFlags, *flag.FlagSet) {
		var ff fwdFlags
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		ff.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &ff, fs
	}
	for _, tc := range []struct {
		args []string
		env  string
		want int
	}{
		{nil, "", 1},
		{[]string{"--threads", "3"}, "", 3},
		{[]string{"--threads", "0"}, "", runtime.NumCPU()},
		{nil, "5", 7}, // GOMAXPROCS from the environment: left as it is (7, set below)
		{[]string{"--threads", "2"}, "5", 2},
	} {
		t.Setenv("GOMAXPROCS", tc.env)
		runtime.GOMAXPROCS(7)
		ff, fs := parse(tc.args...)
		if err := ff.applyThreads(fs); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		// --threads 0 is the runtime's default: every CPU here, less under a cgroup CPU
		// limit.
		if got := runtime.GOMAXPROCS(0); got != tc.want && !(tc.want == runtime.NumCPU() && got < tc.want && got > 0) {
			t.Errorf("args %v, GOMAXPROCS=%q: GOMAXPROCS %d, want %d", tc.args, tc.env, got, tc.want)
		}
	}
	ff, fs := parse("--threads", "-1")
	if err := ff.applyThreads(fs); err == nil || !strings.Contains(err.Error(), "--threads -1") {
		t.Fatalf("--threads -1: %v", err)
	}
}
