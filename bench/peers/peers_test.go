package peers

import (
	"testing"

	"github.com/multimodule/multimodule/bench/peers/workload"
)

// The peers that can share a binary, each behind the same Runner
// (hollywood has its own: see package hollywood).
var frameworks = []workload.Framework{
	{Name: "multimodule", New: func() Runner { return NewMultiModule() }},
	{Name: "protoactor", New: func() Runner { return NewProtoActor() }},
	{Name: "ergo", New: func() Runner { return NewErgo() }},
}

func BenchmarkOneToOne(b *testing.B)   { workload.BenchOneToOne(b, frameworks...) }
func BenchmarkPingPong(b *testing.B)   { workload.BenchPingPong(b, frameworks...) }
func BenchmarkFanOut1000(b *testing.B) { workload.BenchFanOut1000(b, frameworks...) }

func TestEveryWorkloadCompletes(t *testing.T) { workload.CheckWorkloads(frameworks...) }
