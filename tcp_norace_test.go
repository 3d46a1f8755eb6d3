//go:build !race

package berth_test

const tcpRace = false
