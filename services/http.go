package services

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxBytes is the largest N that GET /bytes/N serves: 16 GiB.
const MaxBytes int64 = 16 << 30

// HTTPHandler is the http service:
//
//	GET /         a short text/plain page listing the open sockets, one line each, as
//	              returned by sockets (nil: the page says the list is not available)
//	GET /bytes/N  N bytes (0 <= N <= MaxBytes) of the pattern that FillPattern defines, as
//	              application/octet-stream with Content-Length; Range requests work
//
// HEAD works as for GET; other methods get 405, other paths 404, a bad N 400.
func HTTPHandler(sockets func() []string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		b.WriteString("berth\n\nopen sockets:\n")
		if sockets == nil {
			b.WriteString("  (not available)\n")
		} else {
			list := sockets()
			for _, s := range list {
				b.WriteString("  ")
				b.WriteString(s)
				b.WriteByte('\n')
			}
			if len(list) == 0 {
				b.WriteString("  (none)\n")
			}
		}
		b.WriteString("\nGET /bytes/N streams N pattern bytes.\n")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
		io.WriteString(w, b.String())
	})
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := parseSize(r.PathValue("n"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		// ServeContent sets Content-Length and answers HEAD and Range requests.
		http.ServeContent(w, r, "", time.Time{}, NewPatternReader(n))
	})
	return mux
}

func parseSize(s string) (int64, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("bytes: %q is not a decimal byte count", s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > MaxBytes {
		return 0, fmt.Errorf("bytes: %s exceeds the limit of %d", s, MaxBytes)
	}
	return n, nil
}

// SplitMix64 constants (Steele, Lea, Flood: "Fast splittable pseudorandom number
// generators", OOPSLA 2014), as in java.util.SplittableRandom.
const (
	splitmixGamma = 0x9e3779b97f4a7c15
	splitmixMul1  = 0xbf58476d1ce4e5b9
	splitmixMul2  = 0x94d049bb133111eb
)

// patternWord returns the k-th 64-bit word of the pattern: the k-th output (from 0) of
// SplitMix64 seeded with 0.
func patternWord(k uint64) uint64 {
	z := (k + 1) * splitmixGamma
	z = (z ^ z>>30) * splitmixMul1
	z = (z ^ z>>27) * splitmixMul2
	return z ^ z>>31
}

// FillPattern fills p with the pattern bytes at offsets off, off+1, ... (off >= 0).
//
// The pattern is the output of SplitMix64 seeded with 0, each 64-bit output written
// little-endian: byte i is byte i%8 (least significant first) of output i/8, where
// output k = mix(0x9e3779b97f4a7c15 * (k+1)) and
// mix(z) = z ^ z>>31 after z = (z ^ z>>30) * 0xbf58476d1ce4e5b9,
// z = (z ^ z>>27) * 0x94d049bb133111eb, all mod 2^64. The first bytes are
// af cd 1d 7b 39 a8 20 e2 (output 0 is 0xe220a8397b1dcdaf). The pattern does not repeat
// within MaxBytes, so a reordered or duplicated chunk changes its SHA-256.
func FillPattern(p []byte, off int64) {
	if off < 0 {
		panic("services: negative pattern offset")
	}
	k := uint64(off) / 8
	var w [8]byte
	if r := int(uint64(off) % 8); r != 0 {
		binary.LittleEndian.PutUint64(w[:], patternWord(k))
		n := copy(p, w[r:])
		p = p[n:]
		k++
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, patternWord(k))
		p = p[8:]
		k++
	}
	if len(p) > 0 {
		binary.LittleEndian.PutUint64(w[:], patternWord(k))
		copy(p, w[:])
	}
}

// PatternReader reads the first n bytes of the FillPattern pattern (n given to
// NewPatternReader); it also seeks, so that http.ServeContent can answer Range requests.
type PatternReader struct {
	size, off int64
}

// NewPatternReader returns a reader of the first n bytes of the pattern.
func NewPatternReader(n int64) *PatternReader { return &PatternReader{size: n} }

// Read reads the next bytes of the pattern; io.EOF after n bytes.
func (r *PatternReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if rem := r.size - r.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	FillPattern(p, r.off)
	r.off += int64(len(p))
	return len(p), nil
}

var errSeek = errors.New("services: seek to a negative offset")

// Seek sets the offset for the next Read, as io.Seeker says.
func (r *PatternReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	default:
		return r.off, errors.New("services: bad whence")
	}
	if offset < 0 {
		return r.off, errSeek
	}
	r.off = offset
	return offset, nil
}
