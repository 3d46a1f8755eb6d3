//go:build linux && race

package main

// runDownload is berth run's byte-exact download: smaller under the race detector.
const runDownload = 16 << 20
