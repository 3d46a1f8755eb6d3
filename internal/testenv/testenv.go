// Package testenv holds helpers that decide whether a test can run here.
//
// Tests that need root or network namespaces may skip on a developer's machine, but in CI
// (CI=true, running as root) a missing capability is a failure, never a silent skip.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// NeedRoot skips the test when not running as root, or fails it under CI.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InCI() {
		t.Fatal("test needs root, and CI=true: CI must run as root")
	}
	t.Skip("test needs root (runs in CI)")
}

// NeedCommand skips the test when the program is missing, or fails it under CI.
func NeedCommand(t testing.TB, path string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if InCI() {
		t.Fatalf("test needs %s (%v), and CI=true: .ci/run must install it", path, err)
	}
	t.Skipf("test needs %s: %v", path, err)
}
