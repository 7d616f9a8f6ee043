package mmtest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/runtime"
)

type task struct{ cfg map[string]any }

func (t *task) Stateful() {}

func (t *task) SetConfig(ctx runtime.Context, cfg map[string]any) error {
	t.cfg = cfg
	ctx.Recur("a", time.Minute, func(ctx runtime.Context) { ctx.Emit(runtime.Message{"timer": "a"}) })
	ctx.Recur("b", time.Minute, func(ctx runtime.Context) { ctx.StopRecur("a") })
	return nil
}

func (t *task) Message(ctx runtime.Context, m runtime.Message) error {
	switch m["do"] {
	case "panic":
		panic("boom")
	case "send":
		return ctx.Send("Other", m)
	case "report":
		ctx.Log("log", "k", 1)
		ctx.Debug("debug")
		ctx.Alert("alert", "metric", "cpu")
		ctx.Error("error", "odd")
	case "state":
		ctx.State()["n"] = 3
	}
	return nil
}

func TestHarnessRecordsWhatTheTaskDoes(t *testing.T) {
	t.Parallel()
	h := mmtest.New(t, "T", &task{}, mmtest.Intervals(map[string]time.Duration{"b": time.Second}))
	if h.Timers["a"].Every != time.Minute || h.Timers["b"].Every != time.Second {
		t.Fatalf("timers %+v: want a every minute, b overridden to a second", h.Timers)
	}
	h.Fire("a")
	if len(h.Emitted) != 1 || h.Emitted[0]["source"] != "T" {
		t.Fatalf("emitted %v", h.Emitted)
	}
	h.Fire("b")
	if _, ok := h.Timers["a"]; ok {
		t.Fatal("StopRecur did not remove the timer")
	}
	h.Message(runtime.Message{"do": "send"})
	if len(h.Sent) != 1 || h.Sent[0].Queue != "Other" {
		t.Fatalf("sent %v", h.Sent)
	}
	h.Message(runtime.Message{"do": "report"})
	if len(h.Logs) != 1 || h.Logs[0].KV["k"] != 1 || len(h.Debugs) != 1 ||
		h.Alerts[0].KV["metric"] != "cpu" || h.Errors[0].KV["!BADKEY"] != "odd" {
		t.Fatalf("records: %+v %+v %+v %+v", h.Logs, h.Debugs, h.Alerts, h.Errors)
	}
	if err := h.Message(runtime.Message{"do": "panic"}); !errors.Is(err, runtime.ErrPanic) {
		t.Fatalf("panic became %v, want ErrPanic", err)
	}
}

func TestHarnessRestartRoundTripsState(t *testing.T) {
	t.Parallel()
	h := mmtest.New(t, "T", &task{}, mmtest.Config(map[string]any{"x": "y"}))
	h.Message(runtime.Message{"do": "state"})
	if h.State()["n"] != 3 {
		t.Fatalf("state before restart %v", h.State())
	}
	next := &task{}
	h.Restart(next, map[string]any{"x": "z"})
	if h.State()["n"] != 3.0 || next.cfg["x"] != "z" || len(h.Emitted) != 0 {
		t.Fatalf("after restart: state %v (want float64 3), config %v", h.State(), next.cfg)
	}
}
