package control

import (
	"os"
	"sync"
	"testing"

	"github.com/berthnet/berth"
)

func processFigure(t *testing.T, name string) uint64 {
	t.Helper()
	for _, c := range ProcessCounters() {
		if c.Name == name {
			return c.Value
		}
	}
	t.Fatalf("ProcessCounters has no %s", name)
	return 0
}

// The process figures follow what the process does: goroutines started and ended, files
// opened and closed.
func TestProcessCounters(t *testing.T) {
	g0, fd0 := processFigure(t, GoGoroutines), processFigure(t, ProcessOpenFDs)
	stop := make(chan struct{})
	var started, ended sync.WaitGroup
	for range 100 {
		started.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			started.Done()
			<-stop
		}()
	}
	started.Wait()
	defer ended.Wait()
	var files []*os.File
	for range 10 {
		f, err := os.Open("/dev/null")
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	// The runtime's and the test framework's own goroutines may come and go meanwhile: the
	// figure must follow the count, which holds at least the 100 parked ones.
	if g := processFigure(t, GoGoroutines); g < 100 || g < g0+90 {
		t.Errorf("%s %d with 100 more goroutines, was %d", GoGoroutines, g, g0)
	}
	if fd := processFigure(t, ProcessOpenFDs); fd != fd0+10 {
		t.Errorf("%s %d with 10 more files open, was %d", ProcessOpenFDs, fd, fd0)
	}
	close(stop)
	for _, f := range files {
		f.Close()
	}
	if fd := processFigure(t, ProcessOpenFDs); fd != fd0 {
		t.Errorf("%s %d after closing them, want %d", ProcessOpenFDs, fd, fd0)
	}
	if processFigure(t, GoHeapObjectBytes) == 0 || processFigure(t, GoMemoryBytes) == 0 {
		t.Error("heap figures are zero")
	}
}

// A stack's Source serves the process figures after the stack's counters, so `berth
// stats` and --metrics show them.
func TestStackSourceHasProcessCounters(t *testing.T) {
	s := berth.New()
	defer s.Close()
	have := map[string]bool{}
	for _, c := range FromStack(s, nil).Counters() {
		have[c.Name] = true
	}
	for _, name := range []string{"IpInReceives", GoGoroutines, GoHeapObjectBytes, GoMemoryBytes, GoGCCycles, ProcessOpenFDs} {
		if !have[name] {
			t.Errorf("the stack's Source has no %s", name)
		}
	}
}
