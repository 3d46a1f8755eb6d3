//go:build race

package vmsock_test

// pairBytes is what TestVMPair moves each way: smaller under the race detector, which
// makes the stacks ten times slower.
const pairBytes = 8 << 20
