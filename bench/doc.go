// Package bench compares berth with gVisor's netstack on the same workloads. The
// benchmarks are in bench_test.go; cmd/compare runs them several times and prints the
// Markdown table kept in docs/benchmarks.md.
package bench
