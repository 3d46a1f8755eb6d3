//go:build race

package tcp

// raceEnabled scales bulk tests down under the race detector (about ten times slower).
const raceEnabled = true
