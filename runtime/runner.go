package runtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	stdruntime "runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/statestore"
	"github.com/multimodule/multimodule/transit"
)

// SaveStateTimer is the interval name that sets how often a Stateful task's
// state is saved when it changed.
const SaveStateTimer = "save_state"

// DefaultSaveState is the save interval when the config does not set one.
const DefaultSaveState = time.Second

type configChange struct {
	config    map[string]any
	intervals map[string]time.Duration
	done      chan error
}

// runner hosts one task. Everything not atomic or under timers.mu is
// owned by the task's goroutine (or by Start, before that goroutine
// exists). Its fields are grouped by concern into value sub-structs:
// they sit inline, so the message path reaches them through r as before,
// with no extra pointer.
type runner struct {
	h        *Host
	name     string
	kind     string
	task     Task
	stateful bool
	started  time.Time
	mbox     *mailbox
	done     chan struct{}

	timers timerSet
	// state is the task's state (Context.State); persist saves it.
	state   map[string]any
	persist persistence
	out     outbound

	catch catchUpGate
	stats counters
}

// outbound is what the task's sends need to know (task goroutine only).
type outbound struct {
	// from is the message being handled, whose lineage and hops what the
	// handler sends inherits (zero in timers and SetConfig).
	from origin
	// noRouter: the last emit found no Router (see Emit).
	noRouter bool
	// forwards: the task is a Forwarder.
	forwards bool
	// box gathers the task's sends to queues outside the process until
	// the batch ends (see outbox.go).
	box outbox
}

// origin is where a message a task sends comes from: the message being
// handled and its lineage.
type origin struct {
	msg Message
	lin *lineage
}

// handsOn reports whether sending msg hands on the message being handled:
// that very map, or anything a Forwarder sends.
func (o *outbound) handsOn(msg Message) bool {
	return o.from.msg != nil && (o.forwards || sameMap(msg, o.from.msg))
}

// sameMap reports whether a and b are the same map (not equal maps): a
// map value is a pointer to its header.
func sameMap(a, b Message) bool {
	return *(*unsafe.Pointer)(unsafe.Pointer(&a)) == *(*unsafe.Pointer)(unsafe.Pointer(&b))
}

// timerSet is a task's timers and the config's interval overrides.
type timerSet struct {
	// intervals overrides the periods the task asks for, by timer name.
	intervals map[string]time.Duration
	// idle: see TaskSpec.NoTimers.
	idle bool

	mu     sync.Mutex
	byName map[string]*recurTimer // under mu
	closed bool                   // under mu: the task is stopping
	// save saves a Stateful task's state (SaveStateTimer); set under mu,
	// by the task's goroutine.
	save *recurTimer
}

// persistence is how a Stateful task's state is kept in its state file.
//
// The settle rule (DESIGN section 6): a handled message may leave its
// queue only while the task's state can be saved. While saves succeed a
// handled message is done in its lineage at once, ahead of the next save,
// so a SIGKILL costs at most one save interval of state, as it always did.
// Once a save fails (failing), the lineages of the messages it handles
// are parked: they stay queued and come again after a crash, until a save
// succeeds and releases them.
type persistence struct {
	store     *statestore.Store
	savedJSON []byte // the state as last saved, to skip unchanged saves
	err       error  // the last save's failure, reported by Stop and Shutdown
	// first: no change saved since the task started (see loop).
	first bool
	// gen is the generation last saved or restored; atomic for status.
	gen atomic.Uint64
	// failing: the last save failed (set and cleared by the task's
	// goroutine; atomic for status).
	failing atomic.Bool
	// parked are lineage members handled while saves fail (task goroutine
	// only): done once a save succeeds.
	parked []*lineage
}

// catchUpGate: while on, senders in this process still use the task's
// queue; see TaskSpec.CatchUp. mu orders them with the end of catch-up.
type catchUpGate struct {
	on atomic.Bool
	mu sync.RWMutex
	// bounded: the task's queue is served here, so its mailbox can push
	// back on it (see MailboxBound).
	bounded bool
}

// counters are what status reports of the handler's work; atomic, as
// status reads them from other goroutines.
type counters struct {
	msgsIn, msgsOut, failures, sendFailures atomic.Uint64
	busyNanos                               atomic.Int64
	// busySince is when the batch being handled began (unix ns), 0 when
	// idle: a handler that runs long shows as busy while it runs.
	busySince atomic.Int64
	// listed: the runner is on its host's active list (see Host.Active).
	listed atomic.Bool
}

func newRunner(h *Host, spec TaskSpec) (r *runner, err error) {
	r = &runner{
		h: h, name: spec.Name, kind: spec.Kind, started: time.Now(),
		mbox: newMailbox(), done: make(chan struct{}),
		timers: timerSet{idle: spec.NoTimers, byName: map[string]*recurTimer{}},
		state:  map[string]any{},
	}
	if err := r.safely("factory", func() error { r.task = spec.New(); return nil }); err != nil {
		return nil, err
	}
	if r.task == nil {
		return nil, fmt.Errorf("factory for %s returned nil", spec.Kind)
	}
	_, r.stateful = r.task.(Stateful)
	_, r.out.forwards = r.task.(Forwarder)
	r.persist.first = r.stateful
	if r.stateful {
		if err := r.openState(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// abandon releases what newRunner and a failed first SetConfig took.
func (r *runner) abandon() {
	r.mbox.close()
	if d := r.mbox.depth(); d > 0 {
		r.h.ch.Error.Error("task did not start: messages sent to it while it started are dropped (those taken from a queue come again)",
			"task", r.name, "messages", d)
	}
	batch, _ := r.mbox.takeAll()
	for s := batch; s != nil; s = s.next {
		for i := range s.items[:s.n] {
			if l := s.items[i].lin; l != nil {
				l.fail()
			}
		}
	}
	r.stopTimers()
	r.stopTask()
	r.flush()
	if r.persist.store != nil {
		r.persist.store.Close()
	}
}

// stopTask runs a Stopper's Stop, catching a panic like any task code.
func (r *runner) stopTask() {
	s, ok := r.task.(Stopper)
	if !ok {
		return
	}
	r.out.from = origin{}
	if err := r.safely("Stop", func() error { s.Stop(r); return nil }); err != nil {
		r.h.ch.Error.Error("task stop failed", "task", r.name, "error", err)
	}
}

// loop is the task's goroutine.
func (r *runner) loop() {
	defer close(r.done)
	for {
		batch, closed := r.mbox.takeAll()
		if batch == nil {
			if closed {
				break
			}
			r.mbox.wait()
			continue
		}
		r.listActive()
		t0 := time.Now()
		r.stats.busySince.Store(t0.UnixNano())
		var msgs, all uint64
		deferred := false // lineage members left to be done after the save
		for s := batch; s != nil; s = s.next {
			for i := range s.items[:s.n] {
				it := &s.items[i]
				if it.ctl == nil {
					msgs++
					r.out.from = origin{it.msg, it.lin}
					r.handleMessage(it.msg)
					if it.lin != nil {
						if r.persist.first || r.persist.failing.Load() {
							deferred = true
						} else {
							it.lin.done()
							it.lin = nil
						}
					}
				} else {
					r.out.from = origin{}
					r.handleControl(it.ctl)
				}
			}
			all += uint64(s.n)
		}
		// What the batch sent out of the process goes to its queues now,
		// before the lineages below may settle on it.
		r.out.from = origin{}
		r.flush()
		r.stats.msgsIn.Add(msgs)
		if r.persist.first && msgs > 0 {
			// The first change after a start is saved at once: a process
			// that dies within its first save interval then loses at most
			// its own work, not its predecessor's unsaved tail as well.
			// After a failure the save timer retries, not every batch.
			gen := r.persist.gen.Load()
			r.saveState()
			r.persist.first = r.persist.gen.Load() == gen && !r.persist.failing.Load()
		}
		r.stats.busyNanos.Add(int64(time.Since(t0)))
		r.stats.busySince.Store(0)
		r.out.from = origin{}
		// A message is done in its lineage once handled (what it sent is
		// counted by then); after the first change since a start, only
		// once that change is saved (above); while saves fail, once one
		// succeeds.
		if deferred {
			failing := r.persist.failing.Load()
			for s := batch; s != nil; s = s.next {
				for i := range s.items[:s.n] {
					if l := s.items[i].lin; l != nil {
						if failing {
							r.persist.parked = append(r.persist.parked, l)
						} else {
							l.done()
						}
					}
				}
			}
		}
		r.mbox.done.Add(all)
		r.mbox.recycle(batch)
	}
	r.finish()
}

// listActive puts the runner on its host's active list, once until the
// list is next read, if anyone reads it (see Host.Active). It is called
// at each batch: a batch moves the counters (timers and saves come as
// items too); a push moves the depth, and wakes the runner for a batch.
func (r *runner) listActive() {
	if r.h.active.read.Load() && !r.stats.listed.Load() && r.stats.listed.CompareAndSwap(false, true) {
		r.h.active.mu.Lock()
		r.h.active.list = append(r.h.active.list, r)
		r.h.active.mu.Unlock()
	}
}

// ControlKey marks a message addressed to the daemon rather than to the
// task: {".multimodule": {"transform": {...}}} changes the task's state.
const ControlKey = ".multimodule"

// handleMessage is the hot path: no closure, one deferred recover.
func (r *runner) handleMessage(msg Message) {
	if ctl, ok := msg[ControlKey]; ok {
		r.handleStateControl(ctl)
		return
	}
	defer func() {
		if p := recover(); p != nil {
			r.messageFailed(panicError("message handler", p))
		}
	}()
	if err := r.task.Message(r, msg); err != nil {
		r.messageFailed(err)
	}
}

// handleStateControl applies {".multimodule": {"transform": T}} to the
// task's state, as the Router's transform applies to a message.
func (r *runner) handleStateControl(ctl any) {
	c, ok := ctl.(map[string]any)
	if _, isConfig := c["config"]; ok && isConfig {
		// Meant for an external process and left in the queue when the
		// task moved back in: the daemon applies its own config.
		r.h.ch.Debug.Debug("config message for an external process ignored", "task", r.name)
		return
	}
	tr, hasTr := c["transform"].(map[string]any)
	if !ok || !hasTr {
		r.messageFailed(fmt.Errorf("%s message: want {%q: {\"transform\": {...}}}", ControlKey, ControlKey))
		return
	}
	t, err := message.CompileTransform(tr)
	if err != nil {
		r.messageFailed(fmt.Errorf("%s transform: %w", ControlKey, err))
		return
	}
	if !r.stateful {
		t.Apply(r.state)
		r.h.ch.Log.Info("state transformed", "task", r.name, "transform", tr)
		return
	}
	// A transform must not leave a state that cannot be saved: two valid
	// transforms can nest it past the loader's depth limit. Such a
	// transform is refused and undone, so the task keeps saving (and
	// settling) and a transform that comes again after a restart is
	// refused again rather than wedging the task. Transforms are rare:
	// the copy and the encoding cost nothing that matters.
	before := message.DeepCopy(r.state).(map[string]any)
	t.Apply(r.state)
	b, err := json.Marshal(r.state)
	if err == nil {
		err = checkState(b)
	}
	if err != nil {
		r.state = before
		err = fmt.Errorf("%s transform refused, the state is unchanged: %w", ControlKey, err)
		r.messageFailed(err)
		r.alert("state transform refused: the state it makes could not be saved and loaded", "error", err)
		return
	}
	r.h.ch.Log.Info("state transformed", "task", r.name, "transform", tr)
}

func (r *runner) messageFailed(err error) {
	r.stats.failures.Add(1)
	r.h.ch.Error.Error("message failed", "task", r.name, "error", err)
}

func (r *runner) handleControl(c *control) {
	switch c.kind {
	case ctlTimer:
		t := c.timer
		t.pending.Store(false)
		if t.isStopped() {
			return
		}
		if err := r.safely("timer "+t.name, func() error { t.work(r); return nil }); err != nil {
			r.stats.failures.Add(1)
			r.h.ch.Error.Error("timer failed", "task", r.name, "timer", t.name, "error", err)
		}
	case ctlConfig:
		err := r.applyConfig(c.config)
		if err != nil {
			r.h.ch.Error.Error("config change failed", "task", r.name, "error", err)
		}
		if c.config.done != nil {
			c.config.done <- err
		}
	}
}

// ErrPanic wraps a panic caught in task code.
var ErrPanic = errors.New("panic")

// safely runs task code, turning a panic into an error with its stack.
func (r *runner) safely(what string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(what, p)
		}
	}()
	return fn()
}

// panicError describes a recovered panic with the stack that raised it.
func panicError(what string, p any) error {
	buf := make([]byte, 8<<10)
	buf = buf[:stdruntime.Stack(buf, false)]
	return fmt.Errorf("%s: %w: %v\n%s", what, ErrPanic, p, buf)
}

func (r *runner) applyConfig(c *configChange) error {
	for name, d := range c.intervals {
		if d <= 0 {
			return fmt.Errorf("interval %s: must be positive, got %v", name, d)
		}
	}
	old := r.timers.intervals
	r.timers.intervals = c.intervals
	if cfg, ok := r.task.(Configurable); ok {
		config := c.config
		if config == nil {
			config = map[string]any{}
		}
		if err := r.safely("SetConfig", func() error { return cfg.SetConfig(r, config) }); err != nil {
			// The task keeps running on its previous config; timers it
			// set before failing stay (it asked for them).
			r.timers.intervals = old
			return fmt.Errorf("SetConfig: %w", err)
		}
	}
	// An override applies to timers the task did not re-create in SetConfig.
	r.timers.mu.Lock()
	for name, t := range r.timers.byName {
		if d, ok := r.timers.intervals[name]; ok {
			t.setEvery(d)
		}
	}
	r.timers.mu.Unlock()
	if r.stateful {
		every := DefaultSaveState
		if d, ok := r.timers.intervals[SaveStateTimer]; ok {
			every = d
		}
		if r.timers.save == nil {
			r.addTimer(func() *recurTimer {
				r.timers.save = r.newTimer(SaveStateTimer, every, func(Context) {
					r.persist.first = false
					r.saveState()
				})
				return r.timers.save
			})
		} else {
			r.timers.save.setEvery(every)
		}
	}
	return nil
}

// addTimer starts a timer unless the task is stopping.
func (r *runner) addTimer(mk func() *recurTimer) {
	r.timers.mu.Lock()
	defer r.timers.mu.Unlock()
	if r.timers.closed {
		return
	}
	mk()
}

func (r *runner) stopTimers() {
	r.timers.mu.Lock()
	defer r.timers.mu.Unlock()
	r.timers.closed = true
	for _, t := range r.timers.byName {
		t.stop()
	}
	if r.timers.save != nil {
		r.timers.save.stop()
	}
}

// finalErr is the last save's failure; read after r.done is closed.
func (r *runner) finalErr() error {
	if r.persist.err != nil {
		return fmt.Errorf("task %s: state not saved: %w", r.name, r.persist.err)
	}
	return nil
}

// finish runs on the task's goroutine after its last item.
func (r *runner) finish() {
	r.stopTimers()
	r.stopTask()
	r.flush()
	if r.persist.store != nil {
		r.saveState()
		// Handled, but the state they made could not be saved: they are
		// handed over again, not dropped.
		for _, l := range r.persist.parked {
			l.fail()
		}
		r.persist.parked = nil
		if err := r.persist.store.Close(); err != nil {
			r.h.ch.Error.Error("closing state file", "task", r.name, "error", err)
		}
	}
}

// openState opens the task's state file and restores the newest snapshot
// that verifies. Damage never stops the task: it is alerted, the bad data
// kept aside, and the task starts from what could be trusted.
func (r *runner) openState() error {
	path := r.h.statePath(r.name)
	_, statErr := os.Stat(path)
	if errors.Is(statErr, os.ErrNotExist) && r.h.everSaved(r.name) {
		r.alert("state file is missing: starting with empty state", "file", path)
	}
	st, snap, bad, err := openAndLoad(path)
	if errors.Is(err, statestore.ErrCorruptFile) {
		moved, merr := statestore.MoveAside(path, time.Now())
		if merr != nil {
			return fmt.Errorf("%w (and %v)", err, merr)
		}
		r.alert("state file is corrupt: moved aside, starting with empty state",
			"error", err, "moved_to", moved)
		st, snap, bad, err = openAndLoad(path)
	}
	for _, q := range bad {
		r.alert("state snapshot failed verification: quarantined",
			"generation", q.Generation, "error", q.Err, "file", path)
	}
	switch {
	case err == nil:
		var state map[string]any
		if jerr := json.Unmarshal(snap.Payload, &state); jerr != nil || state == nil {
			r.alert("state snapshot is not a JSON object: starting with empty state",
				"generation", snap.Generation, "error", jerr, "file", path)
			break
		}
		r.state = state
		r.persist.gen.Store(snap.Generation)
		if len(bad) > 0 {
			r.alert("restored an older state snapshot", "generation", snap.Generation, "saved_at", snap.Time)
		}
	case errors.Is(err, statestore.ErrNoSnapshot):
		if len(bad) > 0 {
			r.alert("no state snapshot verified: starting with empty state", "file", path)
		}
	default:
		return err
	}
	r.persist.store = st
	r.persist.savedJSON, _ = json.Marshal(r.state)
	return nil
}

// checkState is the loader's decoder (json.Unmarshal into a map, in
// openState) as a check on an encoded state, limits included: json.Valid
// runs the scanner Unmarshal runs first, with its nesting limit (10,000),
// without building the value. The store runs it before every save and on
// every snapshot it loads, so a state the loader could not read is never
// written, and one written anyway (by an older version) is passed over
// for the previous snapshot.
func checkState(b []byte) error {
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v) // only to say why
		return fmt.Errorf("state is not JSON the loader reads: %w", err)
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return errors.New("state is not a JSON object")
	}
	return nil
}

// openAndLoad opens a state file and loads it; on any error but
// ErrNoSnapshot the file is closed again.
func openAndLoad(path string) (*statestore.Store, statestore.Snapshot, []statestore.Quarantined, error) {
	st, err := statestore.Open(path, statestore.Options{Check: checkState})
	if err != nil {
		return nil, statestore.Snapshot{}, nil, err
	}
	snap, bad, err := st.Load()
	if err != nil && !errors.Is(err, statestore.ErrNoSnapshot) {
		st.Close()
		return nil, snap, bad, err
	}
	return st, snap, bad, err
}

// saveState writes the state if it changed since the last save. Once it
// is saved (or found unchanged), the messages parked while saves failed
// may leave their queues.
func (r *runner) saveState() {
	if r.persist.store == nil {
		return
	}
	b, err := json.Marshal(r.state)
	if err != nil {
		r.saveFailed(fmt.Errorf("state is not JSON: %w", err))
		return
	}
	if !bytes.Equal(b, r.persist.savedJSON) {
		gen, err := r.persist.store.Save(b)
		if err != nil && !errors.Is(err, statestore.ErrCompact) {
			r.saveFailed(err)
			return
		}
		if err != nil { // saved; only the file's compaction failed
			r.h.ch.Error.Error("state saved, but compacting its file failed", "task", r.name, "error", err)
		}
		if r.persist.gen.Load() == 0 {
			r.h.markSaved(r.name)
		}
		r.persist.savedJSON = b
		r.persist.gen.Store(gen)
	}
	r.persist.err = nil
	for _, l := range r.persist.parked {
		l.done()
	}
	r.persist.parked = nil
	if r.persist.failing.Load() {
		r.persist.failing.Store(false)
		r.h.ch.Alert.Info("state saved again: handled messages leave their queue again",
			"task", r.name, "metric", "state_save", "level", "ok", "previous", "severe", "generation", r.persist.gen.Load())
	}
}

// saveFailed records a failed save. The task's handled messages stay on
// its queue from now on (see persistence), and a severe alert says so
// once; it stands until a save succeeds, which sends an ok alert.
func (r *runner) saveFailed(err error) {
	r.stats.failures.Add(1)
	r.persist.err = err
	r.h.ch.Error.Error("saving state failed", "task", r.name, "error", err)
	if !r.persist.failing.Swap(true) {
		r.h.ch.Alert.Error("state cannot be saved: its handled messages stay queued until a save succeeds",
			"task", r.name, "metric", "state_save", "level", "severe", "previous", "ok", "error", err,
			"generation", r.persist.gen.Load())
	}
}

func (r *runner) alert(msg string, kv ...any) {
	r.h.ch.Alert.Warn(msg, append([]any{"task", r.name}, kv...)...)
}

// busy is the handler's busy time so far, the batch in hand included.
func (r *runner) busy() time.Duration {
	since := r.stats.busySince.Load()
	b := time.Duration(r.stats.busyNanos.Load())
	if since != 0 {
		b += time.Duration(max(0, time.Now().UnixNano()-since))
	}
	return b
}

// counters is status without the timers.
func (r *runner) counters() TaskStatus {
	return TaskStatus{
		Name: r.name, Kind: r.kind, Stateful: r.stateful, Started: r.started,
		MessagesIn: r.stats.msgsIn.Load(), MessagesOut: r.stats.msgsOut.Load(), Failures: r.stats.failures.Load(),
		SendFailures: r.stats.sendFailures.Load(),
		Depth:        r.mbox.depth(), Busy: r.busy(),
		StateGeneration: r.persist.gen.Load(),
	}
}

func (r *runner) status() TaskStatus {
	s := r.counters()
	s.Timers = map[string]time.Duration{}
	r.timers.mu.Lock()
	for name, t := range r.timers.byName {
		s.Timers[name] = t.period()
	}
	r.timers.mu.Unlock()
	return s
}

// --- Context, as seen by the task (only on its own goroutine) ---

func (r *runner) Name() string { return r.name }

func (r *runner) Emit(msg Message) {
	msg = StampSource(msg, r.name)
	err := r.Send("Router", msg)
	switch {
	case err != nil && !r.out.noRouter:
		// Say it once: a daemon without a Router would otherwise repeat
		// this for every emit. It is said again after the next success.
		r.out.noRouter = true
		r.h.ch.Error.Error("emitted message not delivered (further ones are counted, not logged)",
			"task", r.name, "error", err)
	case err == nil && r.out.noRouter:
		r.out.noRouter = false
	}
}

func (r *runner) Send(qname string, msg Message) error {
	if err := r.h.send(qname, msg, r); err != nil {
		r.stats.sendFailures.Add(1)
		var alerted alertedError
		if errors.Is(err, transit.ErrQueueFull) && !errors.As(err, &alerted) {
			r.alert("queue full: message not sent", "queue", qname, "error", err)
		}
		return err
	}
	r.stats.msgsOut.Add(1)
	return nil
}

func (r *runner) Recur(name string, every time.Duration, work func(Context)) {
	if d, ok := r.timers.intervals[name]; ok {
		every = d
	}
	if every <= 0 || work == nil {
		r.h.ch.Error.Error("Recur ignored: needs a positive interval and work", "task", r.name, "timer", name, "every", every)
		return
	}
	r.addTimer(func() *recurTimer {
		if old := r.timers.byName[name]; old != nil {
			old.stop()
		}
		var t *recurTimer
		if r.timers.idle {
			t = idleTimer(r, name, every, work) // see TaskSpec.NoTimers
		} else {
			t = r.newTimer(name, every, work)
		}
		r.timers.byName[name] = t
		return t
	})
}

func (r *runner) StopRecur(name string) {
	r.timers.mu.Lock()
	defer r.timers.mu.Unlock()
	if t := r.timers.byName[name]; t != nil {
		t.stop()
		delete(r.timers.byName, name)
	}
}

func (r *runner) State() map[string]any { return r.state }

func (r *runner) Log(msg string, kv ...any)   { r.h.ch.Log.Info(msg, r.kv(kv)...) }
func (r *runner) Debug(msg string, kv ...any) { r.h.ch.Debug.Debug(msg, r.kv(kv)...) }
func (r *runner) Alert(msg string, kv ...any) { r.h.ch.Alert.Warn(msg, r.kv(kv)...) }
func (r *runner) Error(msg string, kv ...any) { r.h.ch.Error.Error(msg, r.kv(kv)...) }

func (r *runner) kv(kv []any) []any { return append([]any{"task", r.name}, kv...) }

var _ Context = (*runner)(nil)
