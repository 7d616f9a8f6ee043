package hollywood

import (
	"testing"

	"github.com/multimodule/multimodule/bench/peers/workload"
)

var hollywood = workload.Framework{Name: "hollywood", New: func() workload.Runner { return New() }}

func BenchmarkOneToOne(b *testing.B)   { workload.BenchOneToOne(b, hollywood) }
func BenchmarkPingPong(b *testing.B)   { workload.BenchPingPong(b, hollywood) }
func BenchmarkFanOut1000(b *testing.B) { workload.BenchFanOut1000(b, hollywood) }

func TestEveryWorkloadCompletes(t *testing.T) { workload.CheckWorkloads(hollywood) }
