//go:build race

package interop

// The race detector makes berth about ten times slower (the kernel not at all): bulk
// transfers shrink so that `go test -race ./...` keeps this package within ~3 minutes
// on two cores.
const (
	raceEnabled = true
	// bulkSize is the size of each HTTP transfer on a clean path.
	bulkSize = 32 << 20
	// impairedSize is the size of each HTTP transfer on an impaired path.
	impairedSize = 8 << 20
	// sampleSize is the size of one throughput sample.
	sampleSize = 16 << 20
)
