//go:build race

package forward

// bigDownload is the byte-exact transfer's size: smaller under the race detector, which
// makes bulk transfers ~10x slower.
const bigDownload = 16 << 20
