//go:build !race

package vmsock_test

// pairBytes is what TestVMPair moves each way.
const pairBytes = 64 << 20
