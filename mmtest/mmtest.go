// Package mmtest runs a task without a daemon, under a context that records
// everything the task does, so a task's unit test is a few lines:
//
//	h := mmtest.New(t, "Example1", &Example1{}, mmtest.Config(map[string]any{"outstr": "howdy"}))
//	h.Fire("Example1")
//	if got := h.Emitted[0]["ct"]; got != 1.0 { ... }
//
// Time is in the test's hands: timers never fire by themselves; Fire runs
// one. Emit and Send are recorded, not delivered. Handler panics are
// converted to errors as the daemon does.
package mmtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/multimodule/multimodule/runtime"
)

// Sent is one message the task sent.
type Sent struct {
	Queue string
	Msg   runtime.Message
}

// Record is one out-of-band report (Log, Debug, Alert or Error).
type Record struct {
	Msg string
	KV  map[string]any
}

// Timer is a named timer the task set with Recur.
type Timer struct {
	Every time.Duration
	Work  func(runtime.Context)
}

// Harness hosts one task instance.
type Harness struct {
	t         testing.TB
	task      runtime.Task
	ctx       *context
	intervals map[string]time.Duration

	// What the task did, in order.
	Emitted []runtime.Message
	Sent    []Sent
	Logs    []Record
	Debugs  []Record
	Alerts  []Record
	Errors  []Record
	// Timers currently set, by name (the config's intervals applied).
	Timers map[string]*Timer

	// SendErr, when set, is what Send returns (and Emit meets), as the
	// daemon does for a full queue or an unknown one; nothing is recorded.
	SendErr error

	stopped bool // Stop ran for the current task
}

// ErrPanic is wrapped by the error a panicking handler turns into.
var ErrPanic = runtime.ErrPanic

// Option configures New.
type Option func(*Harness, *options)

type options struct {
	config map[string]any
	state  map[string]any
}

// Config is passed to SetConfig when the harness starts.
func Config(c map[string]any) Option { return func(_ *Harness, o *options) { o.config = c } }

// State is the task's state at start, as if restored from disk (it goes
// through JSON, so numbers become float64 as in the daemon).
func State(s map[string]any) Option { return func(_ *Harness, o *options) { o.state = s } }

// Intervals override Recur periods by name, like the config's intervals.
func Intervals(iv map[string]time.Duration) Option {
	return func(h *Harness, _ *options) { h.intervals = iv }
}

// New starts task under name: its state is set and, if it is Configurable,
// SetConfig runs (a SetConfig error fails the test).
func New(t testing.TB, name string, task runtime.Task, opts ...Option) *Harness {
	t.Helper()
	h := &Harness{t: t, task: task, Timers: map[string]*Timer{}}
	o := &options{}
	for _, opt := range opts {
		opt(h, o)
	}
	h.ctx = &context{h: h, name: name, state: map[string]any{}}
	if o.state != nil {
		h.ctx.state = roundTrip(t, o.state)
	}
	// A task holding a process or a file releases it when the test ends,
	// as the daemon stops every task.
	t.Cleanup(h.Stop)
	if o.config != nil || isConfigurable(task) {
		if err := h.Configure(o.config); err != nil {
			t.Fatalf("mmtest: SetConfig of %s: %v", name, err)
		}
	}
	return h
}

// Stop runs the task's Stop (runtime.Stopper), once, as the daemon does
// when the task stops; Restart and the end of the test call it too.
func (h *Harness) Stop() {
	if h.stopped {
		return
	}
	h.stopped = true
	if s, ok := h.task.(runtime.Stopper); ok {
		if err := catch("Stop", func() error { s.Stop(h.ctx); return nil }); err != nil {
			h.t.Errorf("mmtest: %v", err)
		}
	}
}

func isConfigurable(t runtime.Task) bool { _, ok := t.(runtime.Configurable); return ok }

// Configure runs SetConfig with config (nil becomes {}), as a config change.
func (h *Harness) Configure(config map[string]any) error {
	c, ok := h.task.(runtime.Configurable)
	if !ok {
		return errors.New("mmtest: task is not Configurable")
	}
	if config == nil {
		config = map[string]any{}
	}
	return catch("SetConfig", func() error { return c.SetConfig(h.ctx, config) })
}

// Message delivers msg to the task and returns its error (a panic becomes
// an error wrapping runtime.ErrPanic).
func (h *Harness) Message(msg runtime.Message) error {
	return catch("Message", func() error { return h.task.Message(h.ctx, msg) })
}

// Fire runs the named timer's work once; the test fails if there is no such
// timer.
func (h *Harness) Fire(name string) {
	h.t.Helper()
	tm := h.Timers[name]
	if tm == nil {
		h.t.Fatalf("mmtest: no timer %q (have %v)", name, h.timerNames())
	}
	if err := catch("timer "+name, func() error { tm.Work(h.ctx); return nil }); err != nil {
		h.t.Fatalf("mmtest: %v", err)
	}
}

// State is the task's state as the task sees it.
func (h *Harness) State() map[string]any { return h.ctx.state }

// Restart saves the state and gives it, as the daemon would restore it, to
// a new instance of the task, which is configured again. Recorded output
// and timers are cleared.
func (h *Harness) Restart(task runtime.Task, config map[string]any) {
	h.t.Helper()
	h.Stop()
	h.ctx.state = roundTrip(h.t, h.ctx.state)
	h.task = task
	h.stopped = false
	h.Emitted, h.Sent, h.Logs, h.Debugs, h.Alerts, h.Errors = nil, nil, nil, nil, nil, nil
	h.Timers = map[string]*Timer{}
	if isConfigurable(task) {
		if err := h.Configure(config); err != nil {
			h.t.Fatalf("mmtest: SetConfig after restart: %v", err)
		}
	}
}

// Reset forgets what was recorded so far.
func (h *Harness) Reset() {
	h.Emitted, h.Sent, h.Logs, h.Debugs, h.Alerts, h.Errors = nil, nil, nil, nil, nil, nil
}

func (h *Harness) timerNames() []string {
	var names []string
	for n := range h.Timers {
		names = append(names, n)
	}
	return names
}

func roundTrip(t testing.TB, s map[string]any) map[string]any {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("mmtest: state is not JSON (the daemon could not save it): %v", err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("mmtest: %v", err)
	}
	return out
}

func catch(what string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s: %w: %v", what, ErrPanic, p)
		}
	}()
	return fn()
}

// context is the recording runtime.Context.
type context struct {
	h     *Harness
	name  string
	state map[string]any
}

func (c *context) Name() string { return c.name }

func (c *context) Emit(msg runtime.Message) {
	if c.h.SendErr != nil {
		return
	}
	c.h.Emitted = append(c.h.Emitted, runtime.StampSource(msg, c.name))
}

func (c *context) Send(qname string, msg runtime.Message) error {
	if c.h.SendErr != nil {
		return c.h.SendErr
	}
	c.h.Sent = append(c.h.Sent, Sent{qname, msg})
	return nil
}

func (c *context) Recur(name string, every time.Duration, work func(runtime.Context)) {
	if d, ok := c.h.intervals[name]; ok {
		every = d
	}
	if every <= 0 || work == nil {
		c.h.t.Errorf("mmtest: Recur(%q, %v): the daemon ignores a timer without a positive interval and work", name, every)
		return
	}
	c.h.Timers[name] = &Timer{Every: every, Work: work}
}

func (c *context) StopRecur(name string) { delete(c.h.Timers, name) }

func (c *context) State() map[string]any { return c.state }

func (c *context) Log(msg string, kv ...any)   { c.h.Logs = append(c.h.Logs, record(msg, kv)) }
func (c *context) Debug(msg string, kv ...any) { c.h.Debugs = append(c.h.Debugs, record(msg, kv)) }
func (c *context) Alert(msg string, kv ...any) { c.h.Alerts = append(c.h.Alerts, record(msg, kv)) }
func (c *context) Error(msg string, kv ...any) { c.h.Errors = append(c.h.Errors, record(msg, kv)) }

func record(msg string, kv []any) Record {
	r := Record{Msg: msg, KV: map[string]any{}}
	for i := 0; i < len(kv); i += 2 {
		key := fmt.Sprint(kv[i])
		if i+1 < len(kv) {
			r.KV[key] = kv[i+1]
		} else {
			r.KV["!BADKEY"] = kv[i]
		}
	}
	return r
}
