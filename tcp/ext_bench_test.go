package tcp

import (
	"io"
	"testing"
)

// BenchmarkPairTransferOptions compares bulk throughput with and without RFC 7323
// timestamps and SACK (the scoreboard and RACK bookkeeping) on the same in-memory pair,
// with the default 256 KiB buffers and with auto-tuning up to Linux's 6 MiB/4 MiB.
func BenchmarkPairTransferOptions(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"autotuned", Config{ReceiveBuffer: 6 << 20, SendBuffer: 4 << 20}},
		{"plain", Config{NoTimestamps: true, NoSACK: true}},
		{"ts+sack", Config{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := newPair(b, 1500, nil, bc.cfg, nil)
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
			for i := 0; i < 8; i++ {
				a.Write(buf)
			}
			segs0 := p.pa.Stats.OutSegs.Load() + p.pb.Stats.OutSegs.Load()
			rx0 := p.pa.Stats.RetransSegs.Load()
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
			b.ReportMetric(float64(p.pa.Stats.OutSegs.Load()+p.pb.Stats.OutSegs.Load()-segs0)/float64(b.N), "segs/op")
			b.ReportMetric(float64(p.pa.Stats.RetransSegs.Load()-rx0)/float64(b.N), "retrans/op")
			b.ReportMetric(float64(p.pa.Stats.TLPs.Load())/float64(b.N), "tlp/op")
			b.ReportMetric(float64(p.pa.Stats.RACKLost.Load())/float64(b.N), "racklost/op")
			b.ReportMetric(float64(p.pa.Stats.Timeouts.Load())/float64(b.N), "rto/op")
		})
	}
}

// BenchmarkPairLossyData measures bulk throughput with 2% random loss of data segments
// only (ACKs pass), as the kernel-interop throughput test imposes, with and without SACK.
func BenchmarkPairLossyData(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"sack-cubic", Config{}},
		{"sack-reno", Config{CongestionControl: CCReno}},
		{"nosack-cubic", Config{NoSACK: true}},
		{"nosack-reno", Config{NoSACK: true, CongestionControl: CCReno}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := newPair(b, 1500, nil, bc.cfg, nil)
			a, c := p.connect(b)
			defer a.Close()
			defer c.Close()
			p.a.setImpairment(impairment{loss: 0.02, seed: 7})
			done := make(chan int64)
			go func() {
				n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 64<<10))
				done <- n
			}()
			const chunk = 1 << 20
			buf := make([]byte, chunk)
			st := &p.pa.Stats
			r0, t0 := st.RetransSegs.Load(), st.Timeouts.Load()
			b.SetBytes(chunk)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := a.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			a.CloseWrite()
			<-done
			b.StopTimer()
			b.ReportMetric(float64(st.RetransSegs.Load()-r0)/float64(b.N), "retrans/op")
			b.ReportMetric(float64(st.Timeouts.Load()-t0)/float64(b.N), "rto/op")
			si := a.Info()
			b.ReportMetric(float64(si.CWnd)/1448, "cwnd-segs")
		})
	}
}
