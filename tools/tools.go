//go:build tools

// Package tools pins test-only dependencies so `go mod tidy` keeps them.
package tools

import (
	_ "github.com/gopacket/gopacket/layers"
	_ "golang.org/x/net/nettest"
	_ "golang.org/x/sys/unix"
)
