package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/statestore"
)

type testHost struct {
	*Host
	out, err *testenv.Buffer
	dir      string
}

func newTestHost(t *testing.T, stateDir string) *testHost {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	th := &testHost{out: &testenv.Buffer{}, err: &testenv.Buffer{}, dir: stateDir}
	h, err := NewHost(Options{StateDir: stateDir, OOB: "debug:2", Stdout: th.out, Stderr: th.err})
	if err != nil {
		t.Fatal(err)
	}
	th.Host = h
	t.Cleanup(func() { th.shutdown(t) })
	return th
}

func (th *testHost) shutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := th.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func (th *testHost) start(t *testing.T, name string, task Task, config map[string]any, intervals map[string]time.Duration) {
	t.Helper()
	if err := th.Start(TaskSpec{Name: name, Kind: "test." + name, New: func() Task { return task },
		Config: config, Intervals: intervals}); err != nil {
		t.Fatalf("Start %s: %v", name, err)
	}
}

// recorder keeps what it receives; safe to read from the test.
type recorder struct {
	mu      sync.Mutex
	msgs    []Message
	configs []map[string]any
	fail    func(Message) error
}

func (r *recorder) Message(_ Context, m Message) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	f := r.fail
	r.mu.Unlock()
	if f != nil {
		return f(m)
	}
	return nil
}

func (r *recorder) SetConfig(_ Context, c map[string]any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.configs = append(r.configs, c)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *recorder) snapshot() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

func TestFIFOUnderConcurrentSenders(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	rec := &recorder{}
	th.start(t, "Sink", rec, nil, nil)
	const senders, each = 4, 5000
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := th.Send("Sink", Message{"s": s, "i": i}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	testenv.WaitFor(t, 10*time.Second, "all messages", func() bool { return rec.count() == senders*each })
	next := make([]int, senders)
	for _, m := range rec.snapshot() {
		s, i := m["s"].(int), m["i"].(int)
		if i != next[s] {
			t.Fatalf("sender %d: got message %d, want %d (order broken)", s, i, next[s])
		}
		next[s]++
	}
	testenv.WaitFor(t, 5*time.Second, "depth 0", func() bool { return th.Status()[0].Depth == 0 })
	if st := th.Status()[0]; st.MessagesIn != senders*each {
		t.Fatalf("MessagesIn = %d, want %d", st.MessagesIn, senders*each)
	}
}

// blocker holds its goroutine until released, to observe queue depth.
type blocker struct {
	release chan struct{}
	n       int
}

func (b *blocker) Message(Context, Message) error { <-b.release; b.n++; return nil }

func TestDepthIsCounted(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	b := &blocker{release: make(chan struct{})}
	th.start(t, "Slow", b, nil, nil)
	for i := range 10 {
		if err := th.Send("Slow", Message{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	if d := th.Status()[0].Depth; d != 10 {
		t.Fatalf("depth %d, want 10", d)
	}
	close(b.release)
	testenv.WaitFor(t, 5*time.Second, "drained", func() bool { return th.Status()[0].Depth == 0 })
}

func TestSendToUnknown(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	if err := th.Send("Nobody", Message{}); !errors.Is(err, ErrNoSuchQueue) {
		t.Fatalf("got %v, want ErrNoSuchQueue", err)
	}
}

func TestStartRejects(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	th.start(t, "A", &recorder{}, nil, nil)
	tests := []struct {
		name string
		spec TaskSpec
		want error
	}{
		{"duplicate", TaskSpec{Name: "A", New: func() Task { return &recorder{} }}, ErrTaskExists},
		{"path in name", TaskSpec{Name: "../etc", New: func() Task { return &recorder{} }}, ErrBadTaskName},
		{"dotted name", TaskSpec{Name: "a.b", New: func() Task { return &recorder{} }}, ErrBadTaskName},
		{"factory panics", TaskSpec{Name: "P", New: func() Task { panic("boom") }}, ErrPanic},
		{"SetConfig fails", TaskSpec{Name: "C", New: func() Task { return badConfig{} }}, errBadConfig},
		{"bad interval", TaskSpec{Name: "I", New: func() Task { return &recorder{} },
			Intervals: map[string]time.Duration{"x": -time.Second}}, nil},
	}
	for _, tt := range tests {
		err := th.Start(tt.spec)
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	if n := len(th.Status()); n != 1 {
		t.Fatalf("%d tasks running after rejected starts, want 1", n)
	}
}

var errBadConfig = errors.New("bad config")

type badConfig struct{}

func (badConfig) Message(Context, Message) error          { return nil }
func (badConfig) SetConfig(Context, map[string]any) error { return errBadConfig }

// flaky fails or panics on request and counts what it handled.
type flaky struct{ ok *recorder }

func (f flaky) Message(ctx Context, m Message) error {
	switch m["do"] {
	case "panic":
		panic("deliberate panic in a handler")
	case "fail":
		return errors.New("told to fail")
	}
	return f.ok.Message(ctx, m)
}

func TestHandlerErrorsAndPanicsAreIsolated(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	rec := &recorder{}
	th.start(t, "Flaky", flaky{rec}, nil, nil)
	for _, do := range []string{"ok", "panic", "fail", "ok", "panic", "ok"} {
		th.Send("Flaky", Message{"do": do})
	}
	testenv.WaitFor(t, 5*time.Second, "three good messages", func() bool { return rec.count() == 3 })
	testenv.WaitFor(t, 5*time.Second, "failures counted", func() bool { return th.Status()[0].Failures == 3 })
	errs := th.err.String()
	if !strings.Contains(errs, "deliberate panic in a handler") || !strings.Contains(errs, "told to fail") {
		t.Fatalf("error channel lacks the failures:\n%s", errs)
	}
}

// configured records SetConfig calls and runs a timer whose period comes
// from its config.
type configured struct {
	mu      sync.Mutex
	configs []string
	ticks   map[string]int
}

func (c *configured) Message(Context, Message) error { return nil }
func (c *configured) Stateful()                      {}
func (c *configured) SetConfig(ctx Context, cfg map[string]any) error {
	c.mu.Lock()
	c.configs = append(c.configs, fmt.Sprint(cfg["v"]))
	c.mu.Unlock()
	ctx.State()["v"] = cfg["v"]
	ctx.Recur("tick", time.Hour, func(Context) { // the config's intervals override
		c.mu.Lock()
		c.ticks[fmt.Sprint(cfg["v"])]++
		c.mu.Unlock()
	})
	return nil
}

func (c *configured) get() ([]string, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int{}
	for k, v := range c.ticks {
		m[k] = v
	}
	return append([]string(nil), c.configs...), m
}

func TestSetConfigOnStartAndChangeWithTimerOverride(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	c := &configured{ticks: map[string]int{}}
	fast := map[string]time.Duration{"tick": 5 * time.Millisecond}
	th.start(t, "Conf", c, map[string]any{"v": "one"}, fast)
	testenv.WaitFor(t, 5*time.Second, "ticks under config one", func() bool { _, ticks := c.get(); return ticks["one"] >= 3 })
	if err := th.Reconfigure(context.Background(), "Conf", map[string]any{"v": "two"}, fast); err != nil {
		t.Fatal(err)
	}
	// Recur with the same name replaced the timer: only "two" keeps ticking.
	_, before := c.get()
	testenv.WaitFor(t, 5*time.Second, "ticks under config two", func() bool { _, ticks := c.get(); return ticks["two"] >= 3 })
	_, after := c.get()
	if after["one"] > before["one"]+1 { // one firing may have been queued at the switch
		t.Fatalf("replaced timer kept firing: %d -> %d", before["one"], after["one"])
	}
	configs, _ := c.get()
	if strings.Join(configs, ",") != "one,two" {
		t.Fatalf("SetConfig calls %v, want [one two]", configs)
	}
	if p := th.Status()[0].Timers["tick"]; p != 5*time.Millisecond {
		t.Fatalf("timer period %v, want the config's 5ms override", p)
	}
}

// stopper stops its own timer after three ticks.
type stopper struct {
	mu sync.Mutex
	n  int
}

func (s *stopper) Message(Context, Message) error { return nil }
func (s *stopper) SetConfig(ctx Context, _ map[string]any) error {
	ctx.Recur("t", time.Millisecond, func(ctx Context) {
		s.mu.Lock()
		s.n++
		if s.n == 3 {
			ctx.StopRecur("t")
		}
		s.mu.Unlock()
	})
	return nil
}

func TestStopRecur(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	s := &stopper{}
	th.start(t, "S", s, nil, nil)
	testenv.WaitFor(t, 5*time.Second, "three ticks then stopped", func() bool {
		return len(th.Status()[0].Timers) == 0
	})
	// StopRecur ran inside the third tick, on the task's goroutine, so a
	// firing already queued behind it is skipped: the count stays 3.
	s.mu.Lock()
	n := s.n
	s.mu.Unlock()
	if n != 3 {
		t.Fatalf("timer ran %d times, want exactly 3", n)
	}
}

// counter is a stateful task: each message bumps ct.
type counter struct{ seen *recorder }

func (counter) Stateful() {}
func (c counter) Message(ctx Context, m Message) error {
	ct, _ := ctx.State()["ct"].(float64)
	ctx.State()["ct"] = ct + 1
	if c.seen != nil {
		c.seen.Message(ctx, Message{"ct": ct + 1})
	}
	return nil
}

func TestStateSurvivesRestartAndSavesPeriodically(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	th := newTestHost(t, dir)
	th.start(t, "C", counter{}, nil, map[string]time.Duration{SaveStateTimer: 10 * time.Millisecond})
	for range 5 {
		th.Send("C", Message{})
	}
	testenv.WaitFor(t, 5*time.Second, "a periodic save", func() bool { return th.Status()[0].StateGeneration >= 1 })
	for range 2 {
		th.Send("C", Message{})
	}
	th.shutdown(t) // saves the final state

	th2 := newTestHost(t, dir)
	seen := &recorder{}
	th2.start(t, "C", counter{seen}, nil, nil)
	th2.Send("C", Message{})
	testenv.WaitFor(t, 5*time.Second, "a message", func() bool { return seen.count() == 1 })
	if got := seen.snapshot()[0]["ct"]; got != 8.0 {
		t.Fatalf("after restart ct = %v, want 8", got)
	}
}

func TestFirstChangeAfterAStartIsSavedAtOnce(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	th.start(t, "C", counter{}, nil, map[string]time.Duration{SaveStateTimer: time.Hour})
	th.Send("C", Message{})
	testenv.WaitFor(t, 5*time.Second, "the first change saved", func() bool { return th.Status()[0].StateGeneration == 1 })
	for range 3 {
		th.Send("C", Message{})
	}
	testenv.WaitFor(t, 5*time.Second, "three more messages", func() bool { return th.Status()[0].MessagesIn == 4 })
	if g := th.Status()[0].StateGeneration; g != 1 {
		t.Fatalf("generation %d: later changes wait for the save interval", g)
	}
}

// chain passes a message on to the next task; the last one records it.
type chain struct{ next string }

func (c chain) Message(ctx Context, m Message) error { return ctx.Send(c.next, m) }

func TestShutdownDrainsMessagesInFlight(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	rec := &recorder{}
	th.start(t, "End", rec, nil, nil)
	th.start(t, "B", chain{"End"}, nil, nil)
	th.start(t, "A", chain{"B"}, nil, nil)
	const n = 20000
	for i := range n {
		th.Send("A", Message{"i": i})
	}
	th.shutdown(t)
	if got := rec.count(); got != n {
		t.Fatalf("after shutdown End got %d of %d messages", got, n)
	}
	if err := th.Send("A", Message{}); !errors.Is(err, ErrNoSuchQueue) {
		t.Fatalf("send after shutdown: %v", err)
	}
}

func TestEmitStampsSourceAndGoesToRouter(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	router := &recorder{}
	th.start(t, "Router", router, nil, nil)
	th.start(t, "E", emitter{}, nil, nil)
	th.Send("E", Message{"source": "outside", "x": 1})
	testenv.WaitFor(t, 5*time.Second, "router got it", func() bool { return router.count() == 1 })
	m := router.snapshot()[0]
	if m["source"] != "E" || m["previous_source"] != "outside" || m["x"] != 1 {
		t.Fatalf("emitted %v", m)
	}
}

type emitter struct{}

func (emitter) Message(ctx Context, m Message) error { ctx.Emit(m); return nil }

// saveSnapshots writes ct=1..n as snapshots of task name's state file.
func saveSnapshots(t *testing.T, dir, name string, n int) string {
	t.Helper()
	path := filepath.Join(dir, "tasks", name+".db")
	st, err := statestore.Open(path, statestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := 1; i <= n; i++ {
		b, _ := json.Marshal(map[string]any{"ct": i, "marker": fmt.Sprintf("snapshot-%03d", i)})
		if _, err := st.Save(b); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestFlippedByteInNewestSnapshotLoadsPrevious(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := saveSnapshots(t, dir, "C", 3)
	b, _ := os.ReadFile(path)
	i := bytes.Index(b, []byte("snapshot-003"))
	if i < 0 || bytes.Count(b, []byte("snapshot-003")) != 1 {
		t.Fatal("newest snapshot not found exactly once in the file")
	}
	b[i+11] ^= 0x01
	os.WriteFile(path, b, 0o600)

	th := newTestHost(t, dir)
	seen := &recorder{}
	th.start(t, "C", counter{seen}, nil, nil)
	th.Send("C", Message{})
	testenv.WaitFor(t, 5*time.Second, "a message", func() bool { return seen.count() == 1 })
	if got := seen.snapshot()[0]["ct"]; got != 3.0 {
		t.Fatalf("ct after loading the previous snapshot = %v, want 2+1", got)
	}
	if errs := th.err.String(); !strings.Contains(errs, "state snapshot failed verification") ||
		!strings.Contains(errs, "generation=3") {
		t.Fatalf("no alert for the bad snapshot:\n%s", errs)
	}
}

func TestGarbageStateFileStartsEmptyAndOthersRun(t *testing.T) {
	t.Parallel()
	for _, damage := range []string{"garbage", "truncated"} {
		t.Run(damage, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := saveSnapshots(t, dir, "Bad", 3)
			saveSnapshots(t, dir, "Good", 5)
			if damage == "garbage" {
				os.WriteFile(path, bytes.Repeat([]byte{0xde, 0xad}, 10000), 0o600)
			} else {
				os.Truncate(path, 1000)
			}
			th := newTestHost(t, dir)
			bad, good := &recorder{}, &recorder{}
			th.start(t, "Bad", counter{bad}, nil, nil)
			th.start(t, "Good", counter{good}, nil, nil)
			th.Send("Bad", Message{})
			th.Send("Good", Message{})
			testenv.WaitFor(t, 5*time.Second, "both handled", func() bool { return bad.count() == 1 && good.count() == 1 })
			if got := bad.snapshot()[0]["ct"]; got != 1.0 {
				t.Fatalf("Bad ct = %v, want 1 (empty state)", got)
			}
			if got := good.snapshot()[0]["ct"]; got != 6.0 {
				t.Fatalf("Good ct = %v, want 6", got)
			}
			if errs := th.err.String(); !strings.Contains(errs, "state file is corrupt") {
				t.Fatalf("no alert for the corrupt file:\n%s", errs)
			}
			moved, _ := filepath.Glob(path + ".corrupt-*")
			if len(moved) != 1 {
				t.Fatalf("corrupt file not kept aside: %v", moved)
			}
		})
	}
}

func TestSecondHostOnSameStateIsRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	th := newTestHost(t, dir)
	th.start(t, "C", counter{}, nil, nil)
	th2 := newTestHost(t, dir)
	err := th2.Start(TaskSpec{Name: "C", New: func() Task { return counter{} }})
	if !errors.Is(err, statestore.ErrLocked) {
		t.Fatalf("second host: %v, want ErrLocked", err)
	}
}

// slowChain passes messages on after a pause, so that at shutdown messages
// are both queued and being handled across several tasks.
type slowChain struct {
	next  string
	pause time.Duration
}

func (c slowChain) Message(ctx Context, m Message) error {
	time.Sleep(c.pause)
	return ctx.Send(c.next, m)
}

func TestShutdownDrainsSlowChainAmongIdleTasks(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	rec := &recorder{}
	specs := []TaskSpec{
		{Name: "End", New: func() Task { return rec }},
		{Name: "Mid", New: func() Task { return slowChain{"End", 0} }},
		{Name: "Z_slow", New: func() Task { return slowChain{"Mid", 200 * time.Microsecond} }},
	}
	for i := range 500 { // idle tasks make each scan slow enough to race
		specs = append(specs, TaskSpec{Name: fmt.Sprintf("Idle%03d", i), New: func() Task { return &recorder{} }})
	}
	for i, err := range th.StartAll(specs) {
		if err != nil {
			t.Fatalf("%s: %v", specs[i].Name, err)
		}
	}
	const n = 300
	for i := range n {
		th.Send("Z_slow", Message{"i": i})
	}
	th.shutdown(t)
	if got := rec.count(); got != n {
		t.Fatalf("End got %d of %d messages", got, n)
	}
}

func TestStopDrainsSavesAndForgets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	th := newTestHost(t, dir)
	seen := &recorder{}
	th.start(t, "C", counter{seen}, nil, nil)
	for range 3 {
		th.Send("C", Message{})
	}
	if err := th.Stop(context.Background(), "C"); err != nil {
		t.Fatal(err)
	}
	if seen.count() != 3 {
		t.Fatalf("Stop left %d of 3 messages unhandled", 3-seen.count())
	}
	if err := th.Send("C", Message{}); !errors.Is(err, ErrNoSuchQueue) {
		t.Fatalf("send to a stopped task: %v", err)
	}
	// Its state was saved: a new instance continues.
	seen2 := &recorder{}
	th.start(t, "C", counter{seen2}, nil, nil)
	th.Send("C", Message{})
	testenv.WaitFor(t, 5*time.Second, "a message", func() bool { return seen2.count() == 1 })
	if got := seen2.snapshot()[0]["ct"]; got != 4.0 {
		t.Fatalf("ct after Stop and Start = %v, want 4", got)
	}
}

// picky rejects configs without ok: true, and reports what it runs with.
type picky struct {
	mu  sync.Mutex
	cur string
}

func (p *picky) Message(ctx Context, m Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return ctx.Send("Out", Message{"cur": p.cur})
}
func (p *picky) SetConfig(_ Context, c map[string]any) error {
	if c["ok"] != true {
		return errors.New("not ok")
	}
	p.mu.Lock()
	p.cur = fmt.Sprint(c["name"])
	p.mu.Unlock()
	return nil
}

func TestFailedReconfigureKeepsPreviousConfig(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	out := &recorder{}
	th.start(t, "Out", out, nil, nil)
	th.start(t, "P", &picky{}, map[string]any{"ok": true, "name": "first"}, nil)
	ctx := context.Background()
	if err := th.Reconfigure(ctx, "P", map[string]any{"name": "second"}, nil); err == nil || !strings.Contains(err.Error(), "not ok") {
		t.Fatalf("Reconfigure with a bad config: %v", err)
	}
	th.Send("P", Message{})
	testenv.WaitFor(t, 5*time.Second, "a reply", func() bool { return out.count() == 1 })
	if got := out.snapshot()[0]["cur"]; got != "first" {
		t.Fatalf("running with %v after a failed change, want first", got)
	}
	if err := th.Reconfigure(ctx, "Nope", nil, nil); !errors.Is(err, ErrNoSuchQueue) {
		t.Fatalf("Reconfigure of an unknown task: %v", err)
	}
}

func TestStateTransformMessage(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	seen := &recorder{}
	th.start(t, "C", counter{seen}, nil, nil)
	th.Send("C", Message{})
	th.Send("C", Message{ControlKey: map[string]any{"transform": map[string]any{"ct": 999.0, "note": "set"}}})
	th.Send("C", Message{ControlKey: "not an object"})
	th.Send("C", Message{})
	testenv.WaitFor(t, 5*time.Second, "two messages", func() bool { return seen.count() == 2 })
	if got := seen.snapshot()[1]["ct"]; got != 1000.0 {
		t.Fatalf("after the transform ct = %v, want 999+1 (the control messages are not delivered)", got)
	}
	testenv.WaitFor(t, 5*time.Second, "the bad one counted", func() bool { return th.Status()[0].Failures == 1 })
}

// starter emits while starting, before its first message.
type starter struct{}

func (starter) Message(Context, Message) error { return nil }
func (starter) SetConfig(ctx Context, _ map[string]any) error {
	ctx.Emit(Message{"hello": true})
	return nil
}

func TestEmitWhileStartingReachesALaterStartedRouter(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	router := &recorder{}
	// "A" sorts and starts before "Router": both are started together.
	errs := th.StartAll([]TaskSpec{
		{Name: "A", New: func() Task { return starter{} }},
		{Name: "Router", New: func() Task { return router }},
	})
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	testenv.WaitFor(t, 5*time.Second, "the emit", func() bool { return router.count() == 1 })
}

func TestSendFailuresAreCountedOnce(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	th.start(t, "S", chain{"Nowhere"}, nil, nil)
	th.Send("S", Message{})
	testenv.WaitFor(t, 5*time.Second, "the failure", func() bool { return th.Status()[0].Failures == 1 })
	if st := th.Status()[0]; st.SendFailures != 1 {
		t.Fatalf("status %+v: want one handler failure and one send failure", st)
	}
}

// ticker counts its Recur firings and records its messages.
type ticker struct {
	recorder
	ticks atomic.Int64
}

func (tk *ticker) SetConfig(ctx Context, _ map[string]any) error {
	ctx.Recur("t", time.Millisecond, func(Context) { tk.ticks.Add(1) })
	return nil
}

func TestNoTimersRegistersButNeverFires(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	quiet, busy := &ticker{}, &ticker{}
	for name, tk := range map[string]*ticker{"Quiet": quiet, "Busy": busy} {
		if err := th.Start(TaskSpec{Name: name, Kind: "test." + name, New: func() Task { return tk },
			NoTimers: name == "Quiet"}); err != nil {
			t.Fatal(err)
		}
	}
	// The control: the same task without NoTimers ticks.
	testenv.WaitFor(t, 5*time.Second, "Busy's 1ms timer to fire", func() bool { return busy.ticks.Load() >= 3 })
	// Quiet's timer would have fired several times by now; a probe handled
	// after that, on the task's own goroutine (where timers run), proves
	// none of its firings was queued before or with it.
	if err := th.Send("Quiet", Message{"probe": true}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "Quiet to handle the probe", func() bool {
		quiet.mu.Lock()
		defer quiet.mu.Unlock()
		return len(quiet.msgs) == 1
	})
	if n := quiet.ticks.Load(); n != 0 {
		t.Fatalf("a NoTimers task's Recur fired %d times", n)
	}
	for _, s := range th.Status() {
		if s.Name == "Quiet" && s.Timers["t"] != time.Millisecond {
			t.Fatalf("Quiet's timer is not registered: %v", s.Timers)
		}
	}
}

// Active lists each task that handled something since the last call,
// once, and keeps listing one still busy; an idle task is never listed.
func TestActiveListsTheTasksThatMoved(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	rec := &recorder{}
	g := gate{open: make(chan struct{}), rec: &recorder{}}
	th.start(t, "Rec", rec, nil, nil)
	th.start(t, "Gate", g, nil, nil)
	th.start(t, "Idle", &recorder{}, nil, nil)
	active := func() []string {
		var names []string
		th.Active(func(name string) { names = append(names, name) })
		slices.Sort(names)
		return names
	}
	// Until the list is first read, nothing is listed: a host whose list
	// nobody reads (an external process) keeps no runner on it.
	if err := th.Send("Rec", Message{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "Rec's first message handled", func() bool { return rec.count() == 1 })
	th.active.mu.Lock()
	n := len(th.active.list)
	th.active.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d runners listed before anyone read the list", n)
	}
	active()
	for _, name := range []string{"Rec", "Rec", "Gate"} {
		if err := th.Send(name, Message{}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "Rec's messages handled", func() bool { return rec.count() == 3 })
	testenv.WaitFor(t, 10*time.Second, "Gate busy", func() bool { s, _ := th.Counters("Gate"); return s.Busy > 0 })
	if got := active(); !slices.Equal(got, []string{"Gate", "Rec"}) {
		t.Fatalf("active %q, want Gate and Rec", got)
	}
	for i := range 3 { // Gate is still busy (Rec may just be finishing)
		if got := active(); !slices.Contains(got, "Gate") || slices.Contains(got, "Idle") {
			t.Fatalf("call %d: active %q, want Gate and never Idle", i, got)
		}
	}
	close(g.open)
	testenv.WaitFor(t, 10*time.Second, "no task listed once Gate is done", func() bool {
		got := active()
		if slices.Contains(got, "Idle") || slices.Contains(got, "Rec") {
			t.Fatalf("active %q: an idle task listed", got)
		}
		return len(got) == 0
	})
	if s, _ := th.Counters("Gate"); s.MessagesIn != 1 {
		t.Fatalf("Gate handled %d", s.MessagesIn)
	}
}
