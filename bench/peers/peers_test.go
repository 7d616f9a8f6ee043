package peers

import (
	"testing"
	"time"
)

// The peers, each behind the same Runner.
var frameworks = []struct {
	name string
	new  func() Runner
}{
	{"multimodule", func() Runner { return NewMultiModule() }},
	{"protoactor", func() Runner { return NewProtoActor() }},
}

func each(b *testing.B, run func(b *testing.B, r Runner)) {
	for _, f := range frameworks {
		b.Run(f.name, func(b *testing.B) {
			r := f.new()
			defer r.Close()
			run(b, r)
		})
	}
}

func BenchmarkOneToOne(b *testing.B) {
	each(b, func(b *testing.B, r Runner) {
		r.OneToOne(1000) // warm up
		b.ResetTimer()
		t0 := time.Now()
		r.OneToOne(b.N)
		b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "msgs/s")
	})
}

func BenchmarkPingPong(b *testing.B) {
	each(b, func(b *testing.B, r Runner) {
		r.PingPong(1000)
		b.ResetTimer()
		t0 := time.Now()
		r.PingPong(b.N)
		b.ReportMetric(float64(time.Since(t0).Nanoseconds())/float64(b.N), "ns/roundtrip")
	})
}

func BenchmarkFanOut1000(b *testing.B) {
	each(b, func(b *testing.B, r Runner) {
		r.FanOut(10000, 1000) // starts the 1,000 actors
		b.ResetTimer()
		t0 := time.Now()
		r.FanOut(b.N, 1000)
		b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "msgs/s")
	})
}

// TestEveryWorkloadCompletes runs each workload briefly on every
// framework: a workload that loses a message would hang here.
func TestEveryWorkloadCompletes(t *testing.T) {
	for _, f := range frameworks {
		r := f.new()
		r.OneToOne(5000)
		r.PingPong(500)
		r.FanOut(5000, 1000)
		r.Close()
	}
}
