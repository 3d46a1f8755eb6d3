//go:build race

package berth_test

// tcpRace is true under the race detector, which makes bulk tests ~10x slower: they
// scale down so that `go test -race` stays within minutes on two cores.
const tcpRace = true
