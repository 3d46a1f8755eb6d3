//go:build !race

package forward

const bigDownload = 256 << 20
