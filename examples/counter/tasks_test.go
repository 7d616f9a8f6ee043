package main

import (
	"bytes"
	"errors"
	"testing"
	"time"

	mm "github.com/multimodule/multimodule"
	"github.com/multimodule/multimodule/mmtest"
)

func TestExample1CountsFromItsState(t *testing.T) {
	t.Parallel()
	h := mmtest.New(t, "Example1", &Example1{},
		mmtest.Config(map[string]any{"outstr": "howdy"}),
		mmtest.State(map[string]any{"ct": 4}))
	if tm := h.Timers[TickTimer]; tm == nil || tm.Every != time.Second {
		t.Fatalf("timers %v, want tick every second", h.Timers)
	}
	h.Fire(TickTimer)
	h.Fire(TickTimer)
	if len(h.Emitted) != 2 {
		t.Fatalf("emitted %v", h.Emitted)
	}
	first := h.Emitted[0]
	if first["ct"] != 5.0 || first["outstr"] != "howdy" || first["source"] != "Example1" {
		t.Fatalf("first emit %v, want ct 5 (state 4 plus one), outstr howdy, source Example1", first)
	}
	if h.State()["ct"] != 6.0 {
		t.Fatalf("state %v", h.State())
	}

	// Saved and restored as the daemon does: the count goes on.
	h.Restart(&Example1{}, map[string]any{"outstr": "howdy"})
	h.Fire(TickTimer)
	if got := h.Emitted[0]["ct"]; got != 7.0 {
		t.Fatalf("after restart emitted ct %v, want 7", got)
	}
}

func TestExample1NewCt(t *testing.T) {
	t.Parallel()
	h := mmtest.New(t, "Example1", &Example1{}, mmtest.Config(map[string]any{"outstr": "x"}))
	if err := h.Message(mm.Message{"new_ct": 999.0}); err != nil {
		t.Fatal(err)
	}
	h.Fire(TickTimer)
	if got := h.Emitted[0]["ct"]; got != 999.0 {
		t.Fatalf("after new_ct 999 emitted %v", got)
	}
	if err := h.Message(mm.Message{"new_ct": "lots"}); err == nil {
		t.Fatal("a non-number new_ct must be an error")
	}
	if err := h.Configure(map[string]any{"outstr": 5.0}); err == nil {
		t.Fatal("a non-string outstr must be a config error")
	}
}

func TestExample1IntervalOverride(t *testing.T) {
	t.Parallel()
	h := mmtest.New(t, "Example1", &Example1{},
		mmtest.Intervals(map[string]time.Duration{TickTimer: 50 * time.Millisecond}))
	if got := h.Timers[TickTimer].Every; got != 50*time.Millisecond {
		t.Fatalf("tick every %v, want the override", got)
	}
}

func TestExample2Prints(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	h := mmtest.New(t, "Example2", &Example2{Out: &out})
	for _, m := range []mm.Message{
		{"ct": 1.0, "outstr": "howdy"},
		{"ct": 0.0, "outstr": "zero is false"},
		{"outstr": "no ct"},
		{"ct": 2.0, "outstr": "howdy"},
	} {
		if err := h.Message(m); err != nil {
			t.Fatal(err)
		}
	}
	want := "Example2: received a message: 1 (howdy)\nExample2: received a message: 2 (howdy)\n"
	if out.String() != want {
		t.Fatalf("printed %q, want %q", out.String(), want)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("stderr closed") }

func TestExample2ReportsWriteErrors(t *testing.T) {
	t.Parallel()
	h := mmtest.New(t, "Example2", &Example2{Out: failingWriter{}})
	if err := h.Message(mm.Message{"ct": 1.0}); err == nil {
		t.Fatal("a failed print must be a message failure")
	}
}
