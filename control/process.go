package control

import (
	"os"
	"runtime"
	"runtime/metrics"
)

// Process figures of the berth process itself, served beside the stack's counters so an
// operator can watch a load drain (goroutines, heap and descriptors back to where they
// were). Every one but GoGCCycles is a level (a gauge), not a running total.
const (
	GoGoroutines      = "GoGoroutines"      // goroutines alive
	GoHeapObjectBytes = "GoHeapObjectBytes" // bytes of live and not-yet-swept heap objects
	GoMemoryBytes     = "GoMemoryBytes"     // all memory the Go runtime holds from the OS
	GoGCCycles        = "GoGCCycles"        // completed GC cycles (a counter)
	ProcessOpenFDs    = "ProcessOpenFDs"    // open file descriptors (from /proc/self/fd)
)

// ProcessGauges names the process figures that are levels.
var ProcessGauges = map[string]bool{GoGoroutines: true, GoHeapObjectBytes: true, GoMemoryBytes: true, ProcessOpenFDs: true}

// IsProcessFigure reports whether name is one of ProcessCounters' figures rather than a
// stack counter.
func IsProcessFigure(name string) bool { return ProcessGauges[name] || name == GoGCCycles }

var processSamples = []struct{ name, metric string }{
	{GoHeapObjectBytes, "/memory/classes/heap/objects:bytes"},
	{GoMemoryBytes, "/memory/classes/total:bytes"},
	{GoGCCycles, "/gc/cycles/total:gc-cycles"},
}

// ProcessCounters reads the process figures now. ProcessOpenFDs is left out where
// /proc/self/fd cannot be read.
func ProcessCounters() []Counter {
	s := make([]metrics.Sample, len(processSamples))
	for i, p := range processSamples {
		s[i].Name = p.metric
	}
	metrics.Read(s)
	out := make([]Counter, 0, len(s)+2)
	out = append(out, Counter{Name: GoGoroutines, Value: uint64(runtime.NumGoroutine())})
	for i, p := range processSamples {
		if s[i].Value.Kind() == metrics.KindUint64 {
			out = append(out, Counter{Name: p.name, Value: s[i].Value.Uint64()})
		}
	}
	if d, err := os.ReadDir("/proc/self/fd"); err == nil {
		// The listing includes the descriptor ReadDir read it through: not counted.
		out = append(out, Counter{Name: ProcessOpenFDs, Value: uint64(max(len(d)-1, 0))})
	}
	return out
}
