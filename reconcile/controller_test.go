package reconcile

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/schema"
)

// fakeClock is moved by the test only.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) advance(d time.Duration) { c.now = c.now.Add(d) }

// fakeTarget records what the controller asks for; failStart makes the
// starts of a task fail while set.
type fakeTarget struct {
	calls     []string
	failStart map[string]error
	// failReconfigure makes every Reconfigure fail while set.
	failReconfigure error
}

func (f *fakeTarget) Start(specs []schema.TaskSpec) []error {
	errs := make([]error, len(specs))
	for i, s := range specs {
		f.calls = append(f.calls, fmt.Sprintf("start %s %s", s.Name, where(s.External)))
		errs[i] = f.failStart[s.Name]
	}
	return errs
}

func (f *fakeTarget) Reconfigure(s schema.TaskSpec) error {
	f.calls = append(f.calls, "reconfigure "+s.Name)
	return f.failReconfigure
}

func (f *fakeTarget) Stop(o Observed, failsafe bool) {
	call := "stop " + o.Name
	if failsafe {
		call += " failsafe"
	}
	f.calls = append(f.calls, call)
}

// take returns the calls made since the last take.
func (f *fakeTarget) take() []string {
	c := f.calls
	f.calls = nil
	return c
}

type memHolds struct{ m map[string]Hold }

func (h *memHolds) Load() (map[string]Hold, error) { return h.m, nil }
func (h *memHolds) Save(m map[string]Hold) error   { h.m = m; return nil }

type harness struct {
	t      *testing.T
	c      *Controller
	clock  *fakeClock
	target *fakeTarget
	holds  HoldStore
	alerts *bytes.Buffer
}

func newHarness(t *testing.T, holds HoldStore) *harness {
	t.Helper()
	if holds == nil {
		holds = &memHolds{}
	}
	h := &harness{t: t, clock: &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		target: &fakeTarget{failStart: map[string]error{}}, holds: holds, alerts: &bytes.Buffer{}}
	discard := slog.New(slog.DiscardHandler)
	h.c = NewController(h.target, h.clock, Loggers{Log: discard, Error: discard, Alert: slog.New(slog.NewTextHandler(h.alerts, nil))},
		holds, Timing{})
	return h
}

// config builds a config whose source hash is its contents.
func config(specs ...schema.TaskSpec) *schema.Config {
	cfg := &schema.Config{Tasks: map[string]schema.TaskSpec{}}
	var src []string
	for _, s := range specs {
		cfg.Tasks[s.Name] = s
		src = append(src, s.Name+s.Hash+where(s.External)+fmt.Sprint(s.Disabled))
	}
	cfg.SourceHash = strings.Join(src, ",")
	return cfg
}

func withRestart(initial, max float64, holdAfter int) func(*schema.TaskSpec) {
	return func(s *schema.TaskSpec) { s.Restart = schema.Restart{Initial: initial, Max: max, HoldAfter: holdAfter} }
}

func (h *harness) wantCalls(want ...string) {
	h.t.Helper()
	if got := h.target.take(); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
		h.t.Fatalf("target calls %q, want %q", got, want)
	}
}

func (h *harness) state(name string) TaskState {
	h.t.Helper()
	h.checkEach()
	for _, ts := range h.c.Tasks() {
		if ts.Name == name {
			return ts
		}
	}
	h.t.Fatalf("no task %s", name)
	return TaskState{}
}

// checkEach checks that Each tells of every task what Tasks and
// Conditions do.
func (h *harness) checkEach() {
	h.t.Helper()
	got := map[string]Monitored{}
	h.c.Each(func(m Monitored) { got[m.Name] = m })
	tasks := h.c.Tasks()
	if len(got) != len(tasks) {
		h.t.Fatalf("Each has %d tasks, Tasks %d", len(got), len(tasks))
	}
	for _, ts := range tasks {
		want := Monitored{Name: ts.Name, Running: ts.Running != nil, Stopping: ts.Stopping, Restarts: ts.Restarts,
			Wanted: ts.Wanted, Ready: ts.Conditions(ts.Running != nil && !ts.Stopping)[0].Status}
		if ts.Running != nil {
			want.External = ts.Running.External
		}
		if ts.Hold != nil {
			want.Held = ts.Hold.Why
		}
		if got[ts.Name] != want {
			h.t.Fatalf("Each: %+v, want %+v", got[ts.Name], want)
		}
	}
}

// tick advances the clock to the controller's next wake and ticks.
func (h *harness) tickToWake() (confirm bool) {
	h.t.Helper()
	next := h.c.NextWake()
	if next.IsZero() {
		h.t.Fatal("nothing to wake for")
	}
	if next.After(h.clock.now) {
		h.clock.now = next
	}
	confirm, _ = h.c.Tick()
	return confirm
}

func TestBackoffGrowsToItsCapThenHolds(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.target.failStart["A"] = errors.New("boom")
	h.c.Load(config(spec("A", "A", "h1", withRestart(1, 4, 6))), Watched)
	h.wantCalls("start A internal")
	start := h.clock.now
	var delays []time.Duration
	for i := 0; i < 5; i++ {
		last := h.clock.now
		h.tickToWake()
		h.wantCalls("start A internal")
		delays = append(delays, h.clock.now.Sub(last))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}
	if !reflect.DeepEqual(delays, want) {
		t.Fatalf("retry delays %v, want %v", delays, want)
	}
	st := h.state("A")
	if st.Hold == nil || st.Hold.Why != HoldRetries || !strings.Contains(st.Hold.Message, "boom") {
		t.Fatalf("after 6 failures: hold %+v", st.Hold)
	}
	if !h.c.NextWake().IsZero() {
		t.Fatalf("a held task is not retried, but the controller wakes at %v", h.c.NextWake())
	}
	h.clock.advance(time.Hour)
	h.c.Tick()
	h.wantCalls()
	if !strings.Contains(h.alerts.String(), "task held") {
		t.Fatalf("no hold alert: %s", h.alerts.String())
	}
	if got := h.c.Plan(); len(got) != 1 || got[0].String() != "! held A (retries exhausted: + start A (internal): boom)" {
		t.Fatalf("plan %v", got)
	}
	_ = start
}

func TestStartFailureThenSuccessfulRetry(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.target.failStart["A"] = errors.New("queue trouble")
	h.c.Load(config(spec("A", "A", "h1")), Watched)
	h.wantCalls("start A internal")
	if st := h.state("A"); st.Running != nil || st.Failures != 1 || !strings.Contains(st.LastError, "queue trouble") {
		t.Fatalf("after a failed start: %+v", st)
	}
	if c := h.state("A").Conditions(false); !c[1].Status || c[1].Reason != "Retrying" {
		t.Fatalf("conditions %+v", c)
	}
	// Not before the backoff runs out.
	h.clock.advance(500 * time.Millisecond)
	h.c.Tick()
	h.wantCalls()
	delete(h.target.failStart, "A")
	h.tickToWake()
	h.wantCalls("start A internal")
	st := h.state("A")
	if st.Running == nil || st.Failures != 0 || st.LastError != "" || st.ObservedGeneration != st.Generation {
		t.Fatalf("after the retry: %+v", st)
	}
	if c := st.Conditions(true); !c[0].Status || c[0].Reason != "Applied" {
		t.Fatalf("conditions %+v", c)
	}
	if plan := h.c.Plan(); len(plan) != 0 {
		t.Fatalf("plan after success: %v", plan)
	}
}

func TestHoldReleasedByClearAndByAConfigChange(t *testing.T) {
	t.Parallel()
	for _, release := range []string{"clear", "config change"} {
		t.Run(release, func(t *testing.T) {
			h := newHarness(t, nil)
			h.target.failStart["A"] = errors.New("boom")
			h.c.Load(config(spec("A", "A", "h1", withRestart(1, 1, 2))), Watched)
			h.tickToWake()
			h.wantCalls("start A internal", "start A internal")
			if h.state("A").Hold == nil {
				t.Fatal("not held after hold_after failures")
			}
			delete(h.target.failStart, "A")
			switch release {
			case "clear":
				if _, err := h.c.Clear("A"); err != nil {
					t.Fatal(err)
				}
				h.wantCalls("start A internal")
			default:
				h.c.Load(config(spec("A", "A", "h2", withRestart(1, 1, 2))), Watched)
				h.wantCalls("start A internal")
			}
			if st := h.state("A"); st.Hold != nil || st.Running == nil || st.Failures != 0 {
				t.Fatalf("after release: %+v", st)
			}
			if _, err := h.c.Clear("A"); !errors.Is(err, ErrNotHeld) {
				t.Fatalf("clear of a task not held: %v", err)
			}
			if _, err := h.c.Clear("Nope"); !errors.Is(err, ErrNoTask) {
				t.Fatalf("clear of no task: %v", err)
			}
		})
	}
}

func TestRemovalWaitsForAConfirmingLoad(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.c.Load(config(spec("A", "A", "h"), spec("B", "B", "h")), Watched)
	h.wantCalls("start A internal", "start B internal")

	gone := config(spec("A", "A", "h"))
	h.c.Load(gone, Watched)
	h.wantCalls() // B's file may be on its way back
	if plan := h.c.Plan(); len(plan) != 1 || plan[0].String() != "- stop B (removed from the config)" {
		t.Fatalf("plan with a pending removal: %v", plan)
	}
	if confirm, _ := h.c.Tick(); confirm {
		t.Fatal("confirmation asked for before the delay")
	}
	if !h.tickToWake() {
		t.Fatal("no confirmation asked for after the delay")
	}
	h.c.Load(config(spec("A", "A", "h")), Confirming)
	h.wantCalls("stop B")
	h.c.Stopped("B", nil)
	h.wantCalls()
	if plan := h.c.Plan(); len(plan) != 0 {
		t.Fatalf("plan after the removal: %v", plan)
	}
	for _, ts := range h.c.Tasks() {
		if ts.Name == "B" {
			t.Fatalf("a removed task is still listed: %+v", ts)
		}
	}

	// A removal that a later load undoes never happens.
	h.c.Load(config(spec("A", "A", "h"), spec("C", "C", "h")), Watched)
	h.wantCalls("start C internal")
	h.c.Load(config(spec("A", "A", "h")), Watched)
	h.wantCalls()
	h.c.Load(config(spec("A", "A", "h"), spec("C", "C", "h")), Watched)
	h.wantCalls()
	if next := h.c.NextWake(); !next.IsZero() {
		t.Fatalf("nothing to confirm, but the controller wakes at %v", next)
	}

	// An operator's apply removes at once.
	h.c.Load(config(spec("A", "A", "h")), Forced)
	h.wantCalls("stop C")
}

func TestFailsafeHoldsUntilClearedAndSurvivesARestart(t *testing.T) {
	t.Parallel()
	holds := HoldFile(filepath.Join(t.TempDir(), "held.json"))
	h := newHarness(t, holds)
	cfg := config(spec("X", "X", "h", external))
	h.c.Load(cfg, Watched)
	h.wantCalls("start X external")
	h.c.Failsafe("X", "failsafe: memory 320.0MiB reached 200.0MiB")
	h.wantCalls("stop X failsafe")
	h.c.Failsafe("X", "again") // one failsafe is enough
	h.wantCalls()
	h.c.Stopped("X", nil)
	h.wantCalls() // held: not started again
	st := h.state("X")
	if st.Hold == nil || st.Hold.Why != HoldFailsafe || st.Running != nil {
		t.Fatalf("after the failsafe: %+v", st)
	}
	if c := st.Conditions(false); !c[2].Status || c[2].Reason != HoldFailsafe || !strings.Contains(c[2].Message, "memory") {
		t.Fatalf("conditions %+v", c)
	}
	if got := h.c.Plan()[0].String(); got != "! held X (failsafe: memory 320.0MiB reached 200.0MiB)" {
		t.Fatalf("plan shows %q", got)
	}

	// A new daemon (a new controller on the same hold file) keeps it held,
	// and stops it if it was left running.
	h2 := newHarness(t, holds)
	h2.c.Adopt(Observed{Name: "X", Kind: "X", Hash: "h", External: true})
	h2.c.Load(cfg, Watched)
	h2.wantCalls("stop X failsafe")
	h2.c.Stopped("X", nil)
	h2.wantCalls()
	if _, err := h2.c.Clear("X"); err != nil {
		t.Fatal(err)
	}
	h2.wantCalls("start X external")

	// Cleared: a third daemon holds nothing.
	h3 := newHarness(t, holds)
	h3.c.Load(cfg, Watched)
	h3.wantCalls("start X external")

	// A hold taken under another spec does not survive a config change
	// made while the daemon was down.
	h3.c.Failsafe("X", "failsafe: fds 300 reached 200")
	h3.c.Stopped("X", nil)
	h3.wantCalls("stop X failsafe")
	h4 := newHarness(t, holds)
	h4.c.Load(config(spec("X", "X", "h2", external)), Watched)
	h4.wantCalls("start X external")
}

func TestClearDuringAFailsafeStopStartsItOnceStopped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.c.Load(config(spec("X", "X", "h", external)), Watched)
	h.wantCalls("start X external")
	h.c.Failsafe("X", "failsafe: cpu 2 reached 1.9")
	h.wantCalls("stop X failsafe")
	if _, err := h.c.Clear("X"); err != nil {
		t.Fatal(err)
	}
	h.wantCalls() // still stopping
	h.c.Stopped("X", nil)
	h.wantCalls("start X external")
}

func TestCrashesRestartAtOnceThenBackOffAndAreForgivenWhenStable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.c.Load(config(spec("X", "X", "h", external, withRestart(1, 8, 4))), Watched)
	h.wantCalls("start X external")
	h.c.Exited("X", errors.New("signal: killed"))
	h.wantCalls("start X external") // the first crash: at once
	h.c.Exited("X", errors.New("signal: killed"))
	h.wantCalls()
	h.tickToWake()
	h.wantCalls("start X external")
	if st := h.state("X"); st.Failures != 2 || st.Restarts != 2 {
		t.Fatalf("after two crashes: %+v", st)
	}
	// Running for StableAfter forgives the failures.
	h.clock.advance(10 * time.Second)
	h.c.Tick()
	if st := h.state("X"); st.Failures != 0 || st.Restarts != 2 {
		t.Fatalf("after running stably: %+v", st)
	}
	h.c.Exited("X", errors.New("exit status 1"))
	h.wantCalls("start X external") // at once again
	// A crash loop ends held.
	for i := 0; i < 3; i++ {
		h.c.Exited("X", errors.New("exit status 1"))
		if h.state("X").Hold == nil {
			h.tickToWake()
		}
	}
	if st := h.state("X"); st.Hold == nil || st.Hold.Why != HoldRetries {
		t.Fatalf("after a crash loop: %+v", st)
	}
}

func TestMigrationStopsFirstAndNothingElseWhileStopping(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.c.Load(config(spec("A", "A", "h1")), Watched)
	h.wantCalls("start A internal")
	h.c.Load(config(spec("A", "A", "h2", external)), Watched)
	h.wantCalls("stop A")
	if plan := h.c.Plan(); len(plan) != 1 || plan[0].String() != "> migrate A internal->external" {
		t.Fatalf("plan while migrating: %v", plan)
	}
	// A change while it stops waits for the stop.
	h.c.Load(config(spec("A", "A", "h3", external)), Watched)
	h.wantCalls()
	h.c.Stopped("A", nil)
	h.wantCalls("start A external")
	if st := h.state("A"); st.Running == nil || st.Running.Hash != "h3" || !st.Running.External {
		t.Fatalf("after the move: %+v", st)
	}
	// A stop that had to kill counts as a failure, so a task that never
	// stops ends held instead of being moved forever.
	h.c.Load(config(spec("A", "A", "h4", withRestart(1, 1, 2))), Watched)
	h.wantCalls("stop A")
	h.c.Stopped("A", errors.New("did not exit within 5s of SIGTERM: killed"))
	h.wantCalls()
	if st := h.state("A"); st.Failures != 1 || !strings.Contains(st.LastError, "killed") {
		t.Fatalf("after a killed stop: %+v", st)
	}
	h.tickToWake()
	h.wantCalls("start A internal")
}

func TestReconfigureAndUnchangedLoads(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.c.Load(config(spec("A", "A", "h1"), spec("R", "R", "h1")), Watched)
	h.wantCalls("start A internal", "start R internal")
	h.c.Load(config(spec("A", "A", "h1"), spec("R", "R", "h1")), Watched)
	h.wantCalls()
	h.c.Load(config(spec("A", "A", "h1"), spec("R", "R", "h2")), Watched)
	h.wantCalls("reconfigure R")
	if st := h.state("R"); st.Generation != 2 || st.ObservedGeneration != 2 {
		t.Fatalf("generations %+v", st)
	}
	h.c.Load(config(spec("A", "A", "h1"), spec("R", "R", "h2", disabled)), Watched)
	h.wantCalls("stop R")
	h.c.Stopped("R", nil)
	if c := h.state("R").Conditions(false); !c[0].Status || c[0].Reason != "Disabled" {
		t.Fatalf("disabled conditions %+v", c)
	}
}

// mmctl apply (a Forced load) tries a change waiting out its backoff at
// once and reports that attempt, instead of "no changes".
func TestForcedLoadRetriesAChangeInBackoffAtOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.target.failStart["A"] = errors.New("boom")
	cfg := config(spec("A", "A", "h1", withRestart(60, 60, 5)))
	h.c.Load(cfg, Watched)
	h.wantCalls("start A internal")
	h.c.Load(cfg, Watched) // the same dir seen again: nothing, it waits
	h.wantCalls()
	results := h.c.Load(cfg, Forced)
	h.wantCalls("start A internal")
	if len(results) != 1 || results[0].Err == nil || !strings.Contains(results[0].Err.Error(), "boom") {
		t.Fatalf("forced load results %v", results)
	}
	if st := h.state("A"); st.Failures != 2 {
		t.Fatalf("failures %d after a forced retry, want 2", st.Failures)
	}
}

// A spec edited and then edited back to what runs needs nothing: the task
// is up to date at the new generation.
func TestEditedBackToWhatRunsIsTheObservedGeneration(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.c.Load(config(spec("A", "A", "h1")), Watched)
	h.wantCalls("start A internal")
	h.target.failStart["A"] = errors.New("boom")
	h.c.Load(config(spec("A", "A2", "h2")), Watched) // a kind change: stop, then a failing start
	h.wantCalls("stop A")
	h.c.Load(config(spec("A", "A", "h1")), Watched)
	h.c.Stopped("A", nil)
	h.wantCalls("start A internal")
	delete(h.target.failStart, "A")
	h.tickToWake()
	h.wantCalls("start A internal")
	if st := h.state("A"); st.Generation != 3 || st.ObservedGeneration != 3 {
		t.Fatalf("generations %d/%d, want 3/3", st.ObservedGeneration, st.Generation)
	}
	h2 := newHarness(t, nil)
	h2.c.Load(config(spec("B", "B", "h1")), Watched)
	h2.target.failReconfigure = errors.New("refused")
	h2.c.Load(config(spec("B", "B", "h2")), Watched) // a failing edit
	h2.c.Load(config(spec("B", "B", "h1")), Watched) // edited back
	if st := h2.state("B"); st.Generation != 3 || st.ObservedGeneration != 3 {
		t.Fatalf("generations %d/%d, want 3/3", st.ObservedGeneration, st.Generation)
	}
}

// One-off actions: restart stops and starts again without counting a
// failure; stop holds the task stopped (across a daemon restart too)
// until start; what does not apply is refused.
func TestOneOffRestartStopStart(t *testing.T) {
	t.Parallel()
	holds := &memHolds{}
	h := newHarness(t, holds)
	cfg := config(spec("A", "A", "h1"))
	h.c.Load(cfg, Watched)
	h.wantCalls("start A internal")
	if _, err := h.c.Do("A", OneOffStart); !errors.Is(err, ErrOneOff) {
		t.Fatalf("start of a running task: %v", err)
	}
	if _, err := h.c.Do("Nope", OneOffRestart); !errors.Is(err, ErrNoTask) {
		t.Fatalf("restart of no task: %v", err)
	}
	if _, err := h.c.Do("A", OneOffRestart); err != nil {
		t.Fatal(err)
	}
	h.wantCalls("stop A")
	if st := h.state("A"); st.OneOff == nil || st.OneOff.Action != OneOffRestart || st.OneOff.Done {
		t.Fatalf("restart under way: %+v", st.OneOff)
	}
	if _, err := h.c.Do("A", OneOffRestart); !errors.Is(err, ErrOneOff) {
		t.Fatalf("restart while stopping: %v", err)
	}
	h.c.Stopped("A", nil)
	h.wantCalls("start A internal")
	if st := h.state("A"); st.Failures != 0 || st.Running == nil || !st.OneOff.Done {
		t.Fatalf("after the restart: %+v", st)
	}

	if _, err := h.c.Do("A", OneOffStop); err != nil {
		t.Fatal(err)
	}
	h.wantCalls("stop A")
	h.c.Stopped("A", nil)
	h.wantCalls()
	h.clock.advance(time.Hour)
	h.c.Tick()
	h.c.Load(cfg, Forced) // apply does not start it either
	h.wantCalls()
	st := h.state("A")
	if st.Hold == nil || st.Hold.Why != HoldStopped || !st.OneOff.Done {
		t.Fatalf("stopped: %+v", st)
	}
	if c := st.Conditions(false); c[0].Reason != HoldStopped || c[2].Status {
		t.Fatalf("conditions of a stopped task %+v", c)
	}
	if p := h.c.Plan(); len(p) != 1 || p[0].String() != "! held A (stopped by mmctl stop)" {
		t.Fatalf("plan %v", p)
	}
	if strings.Contains(h.alerts.String(), "held") {
		t.Fatalf("an operator's stop alerted: %s", h.alerts.String())
	}
	// A new daemon keeps it stopped.
	h2 := newHarness(t, holds)
	h2.c.Load(cfg, Watched)
	h2.wantCalls()
	if _, err := h2.c.Do("A", OneOffStart); err != nil {
		t.Fatal(err)
	}
	h2.wantCalls("start A internal")
	if _, err := h2.c.Do("A", OneOffStart); !errors.Is(err, ErrOneOff) {
		t.Fatalf("start of a started task: %v", err)
	}
}
