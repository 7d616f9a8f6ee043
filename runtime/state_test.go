package runtime

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/statestore"
)

// nested is n objects deep: {"a": {"a": ... leaf}}.
func nested(n int, leaf any) any {
	v := leaf
	for range n {
		v = map[string]any{"a": v}
	}
	return v
}

// depth is how deeply v nests objects.
func depth(v any) int {
	m, ok := v.(map[string]any)
	if !ok {
		return 0
	}
	d := 0
	for _, e := range m {
		d = max(d, depth(e))
	}
	return d + 1
}

func transformMsg(tr map[string]any) Message {
	return Message{ControlKey: map[string]any{"transform": tr}}
}

// Two transforms, each a valid message well within the nesting limit,
// would build a state deeper than the loader reads: the second is refused
// with an alert, and the state (in memory and across a restart) is the
// one before it.
func TestDeepStateTransformsAreRefusedAndStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	th := newTestHost(t, dir)
	seen := &recorder{}
	th.start(t, "C", counter{seen}, nil, nil)
	th.Send("C", Message{})
	// The first sets a value 5,000 deep; the second copies it under a
	// path 5,010 deep: past encoding/json's 10,000 levels. (Compiling and
	// applying a transform costs the square of its depth: more would be
	// slow under the race detector.)
	th.Send("C", transformMsg(map[string]any{"deep": nested(5000, "leaf")}))
	th.Send("C", transformMsg(map[string]any{"x": nested(5010, map[string]any{"$copy": "deep"})}))
	th.Send("C", Message{})
	testenv.WaitFor(t, 20*time.Second, "two messages", func() bool { return seen.count() == 2 })
	if got := seen.snapshot()[1]["ct"]; got != 2.0 {
		t.Fatalf("ct = %v, want 2", got)
	}
	if f := th.Status()[0].Failures; f != 1 {
		t.Fatalf("failures %d, want 1 (the refused transform)", f)
	}
	if errs := th.err.String(); !strings.Contains(errs, "state transform refused") {
		t.Fatalf("no alert for the refused transform:\n%s", errs)
	}
	th.shutdown(t)
	if strings.Contains(th.err.String(), "saving state failed") {
		t.Fatalf("a save failed:\n%s", th.err.String())
	}

	st, err := statestore.Open(filepath.Join(dir, "tasks", "C.db"), statestore.Options{Check: checkState})
	if err != nil {
		t.Fatal(err)
	}
	snap, bad, err := st.Load()
	st.Close()
	if err != nil || len(bad) != 0 {
		t.Fatalf("Load: %v %v", bad, err)
	}
	var state map[string]any
	if err := json.Unmarshal(snap.Payload, &state); err != nil {
		t.Fatal(err)
	}
	if _, ok := state["x"]; ok || depth(state["deep"]) != 5000 || state["ct"] != 2.0 {
		t.Fatalf("saved state: ct %v, deep %d levels, x present %v; want the state before the refused transform",
			state["ct"], depth(state["deep"]), ok)
	}

	th2 := newTestHost(t, dir)
	seen2 := &recorder{}
	th2.start(t, "C", counter{seen2}, nil, nil)
	th2.Send("C", Message{})
	testenv.WaitFor(t, 20*time.Second, "a message after the restart", func() bool { return seen2.count() == 1 })
	if got := seen2.snapshot()[0]["ct"]; got != 3.0 {
		t.Fatalf("after the restart ct = %v, want 3", got)
	}
}

// digger keeps a count; {"deep": N} also keeps a value N levels deep in
// its state, {"flat": true} drops it.
type digger struct{}

func (digger) Stateful() {}
func (digger) Message(ctx Context, m Message) error {
	if n, ok := m["deep"].(float64); ok {
		ctx.State()["deep"] = nested(int(n), 1.0)
	}
	if m["flat"] == true {
		delete(ctx.State(), "deep")
	}
	ct, _ := ctx.State()["ct"].(float64)
	ctx.State()["ct"] = ct + 1
	return nil
}

// While a task's state cannot be saved (here: its handler made it too
// deep to load), its handled messages stay in the kernel queue and a
// severe alert stands; once a save succeeds they leave and an ok alert
// follows.
func TestUnsaveableStateKeepsHandledMessagesQueued(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t) // its Inbound is never started: the Receiver alone serves the queue
	env.start(t, "D", digger{}, nil, map[string]time.Duration{SaveStateTimer: 20 * time.Millisecond})
	q, err := env.tr.Queue("D")
	if err != nil {
		t.Fatal(err)
	}
	rx := NewReceiver(env.Host, q, "D", ReceiverOptions{OnError: env.errs.add})
	out, _ := env.outside.Queue("D")
	// deliver sends m and hands it to the task, waiting until handled.
	var handled uint64
	deliver := func(m Message) {
		t.Helper()
		if err := out.Send(m); err != nil {
			t.Fatal(err)
		}
		if _, err := rx.Next(); err != nil {
			t.Fatal(err)
		}
		handled++
		testenv.WaitFor(t, 20*time.Second, "the message handled", func() bool {
			return env.Status()[0].MessagesIn == handled
		})
	}
	queued := func() uint64 {
		st, err := q.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.Messages
	}

	deliver(Message{"i": 1.0})
	testenv.WaitFor(t, 20*time.Second, "a saved message settled", func() bool { rx.Settle(); return queued() == 0 })

	deliver(Message{"deep": 10001.0})
	testenv.WaitFor(t, 20*time.Second, "the severe alert", func() bool {
		return strings.Contains(env.err.String(), "state cannot be saved")
	})
	// Settled or not, the deep one may have left ahead of the failed save
	// (at most one save interval); from now on nothing handled leaves.
	rx.Settle()
	base := queued()
	for i := range 3 {
		deliver(Message{"i": float64(10 + i)})
	}
	rx.Settle()
	if got := queued(); got != base+3 {
		t.Fatalf("%d messages queued, want %d: handled messages left the queue while saves fail", got, base+3)
	}
	errs := env.err.String()
	// (The stderr target shows an alert's level attribute as a second
	// "severity"; the queue target keeps it as "level".)
	if !strings.Contains(errs, "metric=state_save") || strings.Contains(errs, "state saved again") ||
		!strings.Contains(errs, statestore.ErrUnloadable.Error()) {
		t.Fatalf("want one standing severe alert naming the unloadable state:\n%s", errs)
	}

	deliver(Message{"flat": true})
	testenv.WaitFor(t, 20*time.Second, "the queue settled after a good save", func() bool { rx.Settle(); return queued() == 0 })
	if errs := env.err.String(); !strings.Contains(errs, "state saved again") {
		t.Fatalf("no ok alert after the save succeeded:\n%s", errs)
	}
	if n := strings.Count(env.err.String(), "state cannot be saved"); n != 1 {
		t.Fatalf("the severe alert was raised %d times, want once", n)
	}
}
