//go:build !race

package interop

const (
	raceEnabled  = false
	bulkSize     = 256 << 20
	impairedSize = 256 << 20
	sampleSize   = 64 << 20
)
