package services

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPatternFirstWords(t *testing.T) {
	// SplitMix64 seeded with 0: its first outputs, as published with the algorithm's
	// reference code (and java.util.SplittableRandom(0).nextLong()).
	want := []uint64{0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f}
	b := make([]byte, 8*len(want))
	FillPattern(b, 0)
	for i, w := range want {
		if got := binary.LittleEndian.Uint64(b[8*i:]); got != w {
			t.Errorf("pattern word %d = %#x, want %#x", i, got, w)
		}
	}
	if b[0] != 0xaf || b[7] != 0xe2 {
		t.Errorf("first bytes % x: want af ... e2 (little-endian)", b[:8])
	}
}

func TestFillPatternOffsets(t *testing.T) {
	whole := make([]byte, 4096)
	FillPattern(whole, 0)
	for off := 0; off < 40; off++ {
		for _, n := range []int{0, 1, 3, 7, 8, 9, 16, 17, 100} {
			got := make([]byte, n)
			FillPattern(got, int64(off))
			if !bytes.Equal(got, whole[off:off+n]) {
				t.Fatalf("FillPattern(len %d, off %d) = % x, want % x", n, off, got, whole[off:off+n])
			}
		}
	}
	// Through the reader, in odd chunks, with a seek.
	r := NewPatternReader(int64(len(whole)))
	var got bytes.Buffer
	buf := make([]byte, 333)
	for {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), whole) {
		t.Fatal("PatternReader differs from FillPattern")
	}
	if _, err := r.Seek(1000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if !bytes.Equal(rest, whole[1000:]) {
		t.Fatal("PatternReader after Seek differs")
	}
}

// patternSHA256 is the digest a client computes for /bytes/n.
func patternSHA256(n int64) [32]byte {
	h := sha256.New()
	io.Copy(h, NewPatternReader(n))
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

func TestHTTPHandler(t *testing.T) {
	ts := httptest.NewServer(HTTPHandler(func() []string { return []string{"tcp 0.0.0.0:80 LISTEN", "udp 0.0.0.0:7"} }))
	defer ts.Close()

	get := func(path string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}

	resp, body := get("/")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "  tcp 0.0.0.0:80 LISTEN\n") || !strings.Contains(string(body), "  udp 0.0.0.0:7\n") {
		t.Errorf("GET / = %d %q: want the socket lines", resp.StatusCode, body)
	}

	for _, n := range []int64{0, 1, 7, 8, 9, 65536, 1<<20 + 3} {
		resp, body := get("/bytes/" + itoa64(n))
		if resp.StatusCode != 200 || resp.ContentLength != n || int64(len(body)) != n {
			t.Fatalf("GET /bytes/%d: status %d, Content-Length %d, %d bytes", n, resp.StatusCode, resp.ContentLength, len(body))
		}
		if sha256.Sum256(body) != patternSHA256(n) {
			t.Fatalf("GET /bytes/%d: SHA-256 differs from the pattern's", n)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("Content-Type %q", ct)
		}
	}

	resp, body = get("/bytes/1000", "Range", "bytes=100-199")
	want := make([]byte, 100)
	FillPattern(want, 100)
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want) {
		t.Errorf("Range 100-199: status %d, body ok %v", resp.StatusCode, bytes.Equal(body, want))
	}

	for _, bad := range []string{"-1", "+5", "1e3", "abc", "17179869185", "99999999999999999999"} {
		if resp, _ := get("/bytes/" + bad); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /bytes/%s = %d, want 400", bad, resp.StatusCode)
		}
	}
	if resp, _ := get("/nothing"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing = %d, want 404", resp.StatusCode)
	}
	r, err := ts.Client().Post(ts.URL+"/bytes/5", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /bytes/5 = %d, want 405", r.StatusCode)
	}
	// The limit itself is accepted: HEAD gives its length without sending 16 GiB.
	hr, err := ts.Client().Head(ts.URL + "/bytes/" + itoa64(MaxBytes))
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != 200 || hr.ContentLength != MaxBytes {
		t.Errorf("HEAD /bytes/MaxBytes = %d, length %d", hr.StatusCode, hr.ContentLength)
	}
}

func itoa64(n int64) string {
	var b [20]byte
	return string(binaryAppendInt(b[:0], n))
}

func binaryAppendInt(b []byte, n int64) []byte {
	if n >= 10 {
		b = binaryAppendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

// FuzzParseSize: the N of /bytes/N is accepted exactly when it is a run of decimal
// digits not above MaxBytes, and then parses to its value; nothing panics.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "17179869184", "17179869185", "-1", "+1", "", "0x10", "007", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		digits := s != "" && strings.Trim(s, "0123456789") == ""
		if !digits {
			if err == nil {
				t.Fatalf("parseSize(%q) = %d, want an error", s, n)
			}
			return
		}
		trimmed := strings.TrimLeft(s, "0")
		fits := len(trimmed) < 11 || len(trimmed) == 11 && trimmed <= itoa64(MaxBytes)
		if fits != (err == nil) {
			t.Fatalf("parseSize(%q) = %d, %v", s, n, err)
		}
		if err == nil && strings.TrimLeft(itoa64(n), "0") != trimmed {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
	})
}

// FuzzFillPattern: filling [off, off+a+b) at once equals filling [off, off+a) and then
// [off+a, off+a+b): the pattern depends on the offset alone.
func FuzzFillPattern(f *testing.F) {
	f.Add(int64(0), uint16(8), uint16(8))
	f.Add(int64(MaxBytes-9), uint16(3), uint16(6))
	f.Add(int64(12345), uint16(1), uint16(100))
	f.Fuzz(func(t *testing.T, off int64, a, b uint16) {
		if off < 0 || off > MaxBytes {
			return
		}
		whole := make([]byte, int(a)+int(b))
		FillPattern(whole, off)
		parts := make([]byte, len(whole))
		FillPattern(parts[:a], off)
		FillPattern(parts[a:], off+int64(a))
		if !bytes.Equal(whole, parts) {
			t.Fatalf("off %d, split %d+%d: pieces differ from the whole", off, a, b)
		}
	})
}

func BenchmarkPatternReader(b *testing.B) {
	buf := make([]byte, 32<<10)
	r := NewPatternReader(1 << 62)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		r.Read(buf)
	}
}
