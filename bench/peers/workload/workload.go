// Package workload holds the peers' three workloads and what every
// framework's runner shares, without importing any framework: hollywood and
// protoactor-go both register a protobuf file "actor.proto" with a message
// actor.PID, and the protobuf runtime panics at init when one binary holds
// both, so hollywood is benchmarked in a test binary of its own.
package workload

import (
	"testing"
	"time"
)

// Runner is one framework under the three workloads. Each call returns
// when every message has been handled.
type Runner interface {
	// OneToOne delivers n messages from one sender to one receiver.
	OneToOne(n int)
	// PingPong bounces one message between two actors n times.
	PingPong(n int)
	// FanOut sends n messages spread evenly over actors receivers.
	FanOut(n, actors int)
	Close()
}

// Msgs are the small maps every framework carries.
func Msgs() []map[string]any {
	msgs := make([]map[string]any, 1024)
	for i := range msgs {
		msgs[i] = map[string]any{"ct": float64(i), "outstr": "howdy", "source": "Example1"}
	}
	return msgs
}

// Framework is a Runner maker under its name in the benchmarks
// ("OneToOne/NAME"). The workloads live here, not in a test file, so
// that a framework benchmarked in a test binary of its own (hollywood)
// runs exactly the same ones.
type Framework struct {
	Name string
	New  func() Runner
}

func each(b *testing.B, fs []Framework, run func(b *testing.B, r Runner)) {
	for _, f := range fs {
		b.Run(f.Name, func(b *testing.B) {
			r := f.New()
			defer r.Close()
			run(b, r)
		})
	}
}

// BenchOneToOne: one sender, one receiver, throughput.
func BenchOneToOne(b *testing.B, fs ...Framework) {
	each(b, fs, func(b *testing.B, r Runner) {
		r.OneToOne(1000) // warm up
		b.ResetTimer()
		t0 := time.Now()
		r.OneToOne(b.N)
		b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "msgs/s")
	})
}

// BenchPingPong: time per round trip of one message between two actors.
func BenchPingPong(b *testing.B, fs ...Framework) {
	each(b, fs, func(b *testing.B, r Runner) {
		r.PingPong(1000)
		b.ResetTimer()
		t0 := time.Now()
		r.PingPong(b.N)
		b.ReportMetric(float64(time.Since(t0).Nanoseconds())/float64(b.N), "ns/roundtrip")
	})
}

// BenchFanOut1000: one sender over 1,000 receivers, throughput.
func BenchFanOut1000(b *testing.B, fs ...Framework) {
	each(b, fs, func(b *testing.B, r Runner) {
		r.FanOut(10000, 1000) // starts the 1,000 actors
		b.ResetTimer()
		t0 := time.Now()
		r.FanOut(b.N, 1000)
		b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "msgs/s")
	})
}

// CheckWorkloads runs each workload briefly on every framework: a
// workload that loses a message would hang here.
func CheckWorkloads(fs ...Framework) {
	for _, f := range fs {
		r := f.New()
		r.OneToOne(5000)
		r.PingPong(500)
		r.FanOut(5000, 1000)
		r.Close()
	}
}
