package router

import (
	"context"
	"testing"
	"time"

	"github.com/multimodule/multimodule/runtime"
)

type emitter struct{}

// Message emits n messages (through the Router) or, with direct, sends
// them straight to Sink.
func (e emitter) Message(ctx runtime.Context, m runtime.Message) error {
	n := m["n"].(int)
	for i := range n {
		msg := runtime.Message{"ct": float64(i), "outstr": "howdy"}
		if m["direct"] == true {
			msg["source"] = "Example1"
			if err := ctx.Send("Sink", msg); err != nil {
				return err
			}
			continue
		}
		ctx.Emit(msg)
	}
	return nil
}

type sink struct {
	want, got int
	done      chan struct{}
}

func (s *sink) Message(runtime.Context, runtime.Message) error {
	if s.got++; s.got == s.want {
		s.got = 0
		s.done <- struct{}{}
	}
	return nil
}

// BenchmarkRouterHop measures Example1 -> Router -> Sink in one process
// (a match on source, one forward) against Example1 sending straight to
// Sink, in the same run: the cost of the hop.
func BenchmarkRouterHop(b *testing.B) {
	h, err := runtime.NewHost(runtime.Options{StateDir: b.TempDir(), OOB: "debug:2"})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	}()
	n := max(b.N, 1)
	s := &sink{want: n, done: make(chan struct{}, 1)}
	routes := map[string]any{"routes": []any{map[string]any{
		"match": map[string]any{"source": "Example1"}, "forwards": []any{map[string]any{"qname": "Sink"}}}}}
	for _, spec := range []runtime.TaskSpec{
		{Name: "Sink", New: func() runtime.Task { return s }},
		{Name: "Router", New: New, Config: routes},
		{Name: "Example1", New: func() runtime.Task { return emitter{} }},
	} {
		if err := h.Start(spec); err != nil {
			b.Fatal(err)
		}
	}
	run := func(direct bool) time.Duration {
		t0 := time.Now()
		h.Send("Example1", runtime.Message{"n": n, "direct": direct})
		<-s.done
		return time.Since(t0)
	}
	b.ResetTimer()
	direct := run(true)
	hop := run(false)
	b.StopTimer()
	b.ReportMetric(float64(hop.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(float64(n)/direct.Seconds(), "direct-msgs/s")
	b.ReportMetric(float64(n)/hop.Seconds(), "router-msgs/s")
	b.ReportMetric(direct.Seconds()/hop.Seconds(), "router/direct")
}
