package reconcile_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cuelang.org/go/cue/cuecontext"

	mm "github.com/multimodule/multimodule"
	"github.com/multimodule/multimodule/reconcile"
)

// writeTasks writes 1,000 tasks into 100 files, ten a file, half of them
// Routers with a route each.
func writeTasks(b *testing.B) (string, []string) {
	dir := b.TempDir()
	var sources []string
	for f := range 100 {
		var sb strings.Builder
		for t := range 10 {
			n := f*10 + t
			if n%2 == 0 {
				fmt.Fprintf(&sb, "tasks: T%04d: {kind: \"Router\", config: routes: [{match: {source: \"T%04d\", ct: {$gt: %d}}, forwards: [{qname: \"T%04d\"}]}]}\n", n, n+1, n, n+1)
			} else {
				fmt.Fprintf(&sb, "tasks: T%04d: {config: {outstr: \"task %d\", n: %d}, intervals: tick: 0.5}\n", n, n, n)
			}
		}
		sources = append(sources, sb.String())
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.cue", f)), []byte(sb.String()), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return dir, sources
}

// BenchmarkLoadAndPlan1000 loads 1,000 tasks from 100 files with the
// schema, decodes them and plans them from nothing; the baseline is a bare
// CUE evaluation of the same sources without schema, in the same run.
func BenchmarkLoadAndPlan1000(b *testing.B) {
	dir, sources := writeTasks(b)
	s, err := mm.NewSchema()
	if err != nil {
		b.Fatal(err)
	}
	var bare, ours time.Duration
	for range b.N {
		t0 := time.Now()
		v := cuecontext.New().CompileString(strings.Join(sources, "\n"))
		if err := v.Validate(); err != nil {
			b.Fatal(err)
		}
		bare += time.Since(t0)

		t0 = time.Now()
		cfg, err := s.Load(dir)
		if err != nil {
			b.Fatal(err)
		}
		plan := reconcile.Plan(cfg.Tasks, nil)
		ours += time.Since(t0)
		if len(plan) != 1000 {
			b.Fatalf("plan has %d actions", len(plan))
		}
	}
	b.ReportMetric(float64(ours.Milliseconds())/float64(b.N), "load-plan-ms")
	b.ReportMetric(float64(bare.Milliseconds())/float64(b.N), "bare-cue-ms")
	b.ReportMetric(0, "ns/op")
}
