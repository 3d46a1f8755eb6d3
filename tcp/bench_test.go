package tcp

import (
	"io"
	"runtime"
	"testing"
)

// BenchmarkPairTransfer measures bulk throughput between two Protocols joined by the
// in-memory test network (MTU 1500), and TCP's allocations per segment.
func BenchmarkPairTransfer(b *testing.B) {
	p := newPair(b, 1500, nil, Config{}, nil)
	a, c := p.connect(b)
	defer a.Close()
	defer c.Close()
	const chunk = 1 << 20
	done := make(chan int64)
	go func() {
		n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 64<<10))
		done <- n
	}()
	buf := make([]byte, chunk)
	// Warm up: buffers grow to their steady size.
	for i := 0; i < 8; i++ {
		a.Write(buf)
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	segs0 := p.pa.Stats.OutSegs.Load() + p.pb.Stats.OutSegs.Load()
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	a.CloseWrite()
	<-done
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	segs := p.pa.Stats.OutSegs.Load() + p.pb.Stats.OutSegs.Load() - segs0
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(segs), "allocs/seg")
	b.ReportMetric(float64(segs)/float64(b.N), "segs/op")
}
