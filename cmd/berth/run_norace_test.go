//go:build linux && !race

package main

const runDownload = 256 << 20
