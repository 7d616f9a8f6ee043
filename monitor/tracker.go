package monitor

import (
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/schema"
)

// Where a task runs, as readings, snapshots and Prometheus labels say.
const (
	Internal = "internal"
	External = "external"
)

// Counters are a task's handler totals at one moment.
type Counters struct {
	At                       time.Time
	Busy                     time.Duration
	In, Out, Failures, Depth uint64
}

// ParseReport reads an external process's report of its handler
// counters. The time is the sender's: two reports that arrive together
// still make a true rate. ok is false for a report without a time.
func ParseReport(r map[string]any) (c Counters, ok bool) {
	at, ok := r["at"].(float64)
	if !ok || at <= 0 {
		return Counters{}, false
	}
	num := func(k string) uint64 { f, _ := r[k].(float64); return uint64(max(0, f)) }
	busy, _ := r["busy_s"].(float64)
	return Counters{At: time.Unix(0, int64(at*1e9)), Busy: time.Duration(busy * float64(time.Second)),
		In: num("messages_in"), Out: num("messages_out"), Failures: num("failures"), Depth: num("depth")}, true
}

// Reading is what is known of one task at one sample.
type Reading struct {
	Task  string
	Where string // Internal or External
	// Pid and Started identify the run: when either changes (or Where),
	// the task was restarted.
	Pid     int
	Started time.Time
	// Proc is an external's process sample; an external without one (it
	// exited) is not judged this time.
	Proc *ProcSample
	// Counters are the handler's: an internal task's as the host counts
	// them now, an external's as it last reported them. Counters no newer
	// than the previous ones are not counted again.
	Counters *Counters
	// QueueFill is the task's System V queue fill, if HasQueue.
	QueueFill float64
	HasQueue  bool
	// Restarts are the task's restarts in the restarts window.
	Restarts int
	Limits   Limits
	// Running: the task runs and is judged. A task that does not run but
	// whose levels stand until it runs again (held, or finishing what it
	// took after a failsafe) is given with Running false; a task stopped
	// for good is left out, which ends its levels.
	Running bool
	// Held is why the task is held, if it is.
	Held string
}

// Judgement is one metric of one task whose level changed.
type Judgement struct {
	Task, Metric string
	Value        float64
	// Limit is the threshold of the new level, or of the old one when the
	// level fell to OK; NaN when the task's run ended.
	Limit       float64
	Level, From Level
}

// Over says the level ended because the task's run did, not because the
// value fell.
func (j Judgement) Over() bool { return j.Level == OK && math.IsNaN(j.Limit) }

// Alert is the alert that reports the change: its level, message and
// attributes.
func (j Judgement) Alert() (lvl slog.Level, msg string, args []any) {
	lvl = slog.LevelWarn
	switch j.Level {
	case OK:
		lvl = slog.LevelInfo
	case Severe, Failsafe:
		lvl = slog.LevelError
	}
	msg = fmt.Sprintf("%s %s is %s", j.Task, j.Metric, j.Level)
	switch {
	case j.Over():
		msg = fmt.Sprintf("%s %s is over: the task stopped", j.Task, j.Metric)
	case j.Level == OK:
		msg = fmt.Sprintf("%s %s is back to ok", j.Task, j.Metric)
	}
	args = []any{"task", j.Task, "metric", j.Metric, "value", j.Value, "level", j.Level.String(), "previous", j.From.String()}
	if !math.IsNaN(j.Limit) { // none when the task stopped
		args = append(args, "threshold", j.Limit)
	}
	return lvl, msg, args
}

// Reason is why a failsafe stopped the task, as its hold shows it.
func (j Judgement) Reason() string {
	return fmt.Sprintf("failsafe: %s %s reached %s", j.Metric, Format(j.Metric, j.Value), Format(j.Metric, j.Limit))
}

// Format shows a value of metric for people.
func Format(metric string, v float64) string {
	switch metric {
	case Memory, ReadBytes, WriteBytes:
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	}
	return fmt.Sprintf("%.3g", v)
}

// Tracker judges the readings of every task into levels, following each
// task across restarts. It is owned by one goroutine: only Snapshot may
// be called from others (Prometheus scrapes read the snapshot Observe
// publishes, never the owner's state).
type Tracker struct {
	box      float64
	defaults map[string]Thresholds
	tasks    map[string]*tracked
	daemon   map[string]float64
	snap     atomic.Pointer[Snapshot]
	// gen counts the samples (Observe and ObservePart); changed says
	// whether this one judged, started or ended a task, so that its
	// snapshot is made anew rather than the last one's tasks shown again.
	// pubGen counts the snapshots made anew.
	gen, pubGen uint64
	changed     bool
	// at is when the last sample was taken.
	at time.Time
}

// tracked follows one task, across restarts of its process.
type tracked struct {
	where   string
	pid     int
	started time.Time
	values  map[string]float64
	watches map[string]*Watch
	// prev and last are the handler's counters at the two latest readings.
	prev, last Counters
	// seen is the Observe that last had a reading of the task.
	seen uint64
	// quiet: the last judged reading was of an internal task whose
	// counters had not moved since the one before (so its rates were
	// judged 0), and every watch was steady. A reading with the same
	// counters, queue fill, restarts and limits (those below) would then
	// judge to the same levels and change nothing, so it is not judged
	// (see idle): an idle pass over many tasks costs little.
	quiet    bool
	fill     float64
	hasQueue bool
	restarts int
	limits   Limits
	// pubValues and pubLevels are what the snapshot of pubGen shows of
	// the task (nil once judged since); pubRunning and pubHeld as it was
	// shown there.
	pubGen     uint64
	pubValues  map[string]float64
	pubLevels  map[string]Level
	pubRunning bool
	pubHeld    string
}

// NewTracker returns a tracker with no task. box is the machine's memory
// in bytes (0 if unknown), for memory limits given as a fraction.
func NewTracker(box float64) *Tracker {
	t := &Tracker{box: box, defaults: Defaults(box), tasks: map[string]*tracked{}, daemon: map[string]float64{}}
	t.snap.Store(&Snapshot{})
	return t
}

// Limits merges a task's limits over the daemon's over the defaults for
// this tracker's box (see MergeLimits). It reads nothing Observe changes.
func (t *Tracker) Limits(daemon, task map[string]schema.Levels) Limits {
	return MergeLimits(t.defaults, t.box, daemon, task)
}

// Observe judges one sample: rs has a reading of every task the tracker
// should know of, daemon (if measured) the daemon's own process, which is
// shown but not judged: it hosts every internal task, so per-task limits
// do not fit it. Tasks absent from rs stopped for good: their levels end.
// Observe returns the level changes, by task, and publishes the snapshot.
func (t *Tracker) Observe(now time.Time, daemon *ProcSample, rs []Reading) []Judgement {
	return t.observe(now, daemon, rs, true)
}

// ObservePart is Observe of a sample that read some tasks only: those
// absent from rs keep their levels, values and snapshot as they are (the
// caller knows nothing of them changed: see Quiet), and none ends.
func (t *Tracker) ObservePart(now time.Time, daemon *ProcSample, rs []Reading) []Judgement {
	return t.observe(now, daemon, rs, false)
}

// Quiet says that a reading of task with the counters, queue fill,
// restarts and limits of its last one would change nothing (see
// tracked.quiet); so does an untracked task's.
func (t *Tracker) Quiet(task string) bool {
	w := t.tasks[task]
	return w == nil || w.quiet
}

func (t *Tracker) observe(now time.Time, daemon *ProcSample, rs []Reading, all bool) []Judgement {
	var out []Judgement
	t.gen++
	for i := range rs {
		r := &rs[i]
		w := t.tasks[r.Task]
		if w != nil {
			w.seen = t.gen
		}
		if !r.Running {
			continue // its levels stand until it runs again
		}
		if w == nil {
			w = &tracked{values: map[string]float64{}, watches: map[string]*Watch{}, seen: t.gen}
			w.where, w.pid, w.started = r.Where, r.Pid, r.Started
			t.tasks[r.Task] = w
		} else if w.where != r.Where || w.pid != r.Pid || !w.started.Equal(r.Started) {
			out = append(out, w.restarted(r)...)
		} else {
			w.unread(t.at)
			if w.idle(r) {
				w.prev, w.last = w.last, *r.Counters // what judging it would change
				continue
			}
		}
		out = append(out, w.judge(r)...)
		w.pubValues, w.pubLevels = nil, nil
		t.changed = true
	}
	for name, w := range t.tasks {
		if all && w.seen != t.gen {
			out = append(out, w.end(name, true)...)
			delete(t.tasks, name)
			t.changed = true
		}
	}
	t.at = now
	if daemon != nil {
		daemon.Values(t.daemon)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Task < out[j].Task })
	if all {
		t.publish(now, rs)
	} else {
		t.publishPart(now, rs)
	}
	return out
}

// unread brings a quiet task not read since the sample at (see
// ObservePart) up to it: its counters stood as they were until then at
// least, so what moved since moved over one interval, not over the gap.
func (w *tracked) unread(at time.Time) {
	if w.quiet && w.last.At.Before(at) {
		w.prev, w.last.At = w.last, at
	}
}

// idle says that judging r would change nothing but the counters' time:
// the task was quiet and r has the inputs its last judged reading had.
func (w *tracked) idle(r *Reading) bool {
	c := r.Counters
	return w.quiet && r.Where == Internal && c != nil && c.At.After(w.last.At) && sameCounts(*c, w.last) &&
		r.HasQueue == w.hasQueue && (!r.HasQueue || r.QueueFill == w.fill) && r.Restarts == w.restarts &&
		sameMap(r.Limits, w.limits)
}

// sameCounts says whether a and b count the same, whenever taken.
func sameCounts(a, b Counters) bool {
	return a.In == b.In && a.Out == b.Out && a.Failures == b.Failures && a.Depth == b.Depth && a.Busy == b.Busy
}

// sameMap says whether a and b are the same map (not merely equal ones):
// the caller gives the same Limits for as long as they do not change.
func sameMap(a, b Limits) bool {
	return a != nil && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// restarted: the task runs in a new process, or was started again. What
// the previous run raised is over (but restarts, which span runs); the
// new run is judged afresh.
func (w *tracked) restarted(r *Reading) []Judgement {
	ended := w.end(r.Task, false)
	w.where, w.pid, w.started = r.Where, r.Pid, r.Started
	w.prev, w.last = Counters{}, Counters{}
	clear(w.values)
	return ended
}

// end forgets the levels of what ran (all but restarts, unless all) and
// returns the judgements that say they are over.
func (w *tracked) end(task string, all bool) []Judgement {
	var ended []Judgement
	for _, mt := range Metrics {
		wt := w.watches[mt.Name]
		if wt == nil || (mt.Name == Restarts && !all) {
			continue
		}
		if wt.Level() != OK {
			ended = append(ended, Judgement{Task: task, Metric: mt.Name, Value: w.values[mt.Name],
				Limit: math.NaN(), Level: OK, From: wt.Level()})
		}
		delete(w.watches, mt.Name)
	}
	return ended
}

// judge takes r's values and judges those this reading measured anew:
// a value not measured again is not judged again, so one reading never
// confirms itself.
func (w *tracked) judge(r *Reading) []Judgement {
	fresh := make(map[string]bool, len(Metrics))
	if r.Where == External {
		if r.Proc == nil {
			return nil // it exited; whoever runs it deals with that
		}
		r.Proc.Values(w.values)
		fresh[CPU] = r.Proc.HasCPU
		fresh[Memory], fresh[ReadBytes], fresh[WriteBytes], fresh[FDs], fresh[Threads] = true, true, true, true, true
	}
	quiet := false
	if c := r.Counters; c != nil && c.At.After(w.last.At) {
		// An external's CPU is its process's, not its handler's busy time.
		rates := w.count(*c, r.Where != External)
		quiet = rates && sameCounts(w.prev, w.last)
		fresh[Mailbox] = true
		fresh[MessagesIn], fresh[MessagesOut], fresh[Failures] = rates, rates, rates
		if r.Where != External {
			fresh[CPU] = rates
		}
	}
	if r.HasQueue {
		w.values[QueueFill], fresh[QueueFill] = r.QueueFill, true
	}
	w.values[Restarts], fresh[Restarts] = float64(r.Restarts), true
	var out []Judgement
	for _, mt := range Metrics {
		v, ok := w.values[mt.Name]
		if !ok || !fresh[mt.Name] {
			continue
		}
		th := r.Limits.Of(mt.Name)
		wt := w.watches[mt.Name]
		if wt == nil {
			wt = &Watch{}
			w.watches[mt.Name] = wt
		}
		if changed, from := wt.Observe(th.Judge(v)); changed {
			limit := th.Of(wt.Level())
			if wt.Level() == OK {
				limit = th.Of(from) // the limit it is back under
			}
			out = append(out, Judgement{Task: r.Task, Metric: mt.Name, Value: v, Limit: limit, Level: wt.Level(), From: from})
		}
	}
	for _, wt := range w.watches {
		quiet = quiet && wt.Steady()
	}
	w.quiet = quiet && r.Where == Internal
	w.fill, w.hasQueue, w.restarts, w.limits = r.QueueFill, r.HasQueue, r.Restarts, r.Limits
	return out
}

// count takes a new reading of the handler's counters and turns the
// change since the previous one into rates, reporting whether it could
// (not on the first reading of a run).
func (w *tracked) count(c Counters, withBusy bool) bool {
	w.prev, w.last = w.last, c
	w.values[Mailbox] = float64(c.Depth)
	if w.prev.At.IsZero() {
		return false
	}
	dt := c.At.Sub(w.prev.At).Seconds()
	if dt <= 0 {
		return false
	}
	rate := func(now, before uint64) float64 {
		if now < before { // the counters started over
			return 0
		}
		return float64(now-before) / dt
	}
	w.values[MessagesIn] = rate(c.In, w.prev.In)
	w.values[MessagesOut] = rate(c.Out, w.prev.Out)
	w.values[Failures] = rate(c.Failures, w.prev.Failures)
	if withBusy {
		w.values[CPU] = max(0, (c.Busy-w.prev.Busy).Seconds()/dt)
	}
	return true
}

// Tracked says whether the tracker follows task (it ran and has not
// stopped for good).
func (t *Tracker) Tracked(task string) bool { return t.tasks[task] != nil }

// Status is task's latest values and its levels other than OK, for mmctl
// status; nil for a task not tracked.
func (t *Tracker) Status(task string) (metrics map[string]float64, levels map[string]string) {
	w := t.tasks[task]
	if w == nil {
		return nil, nil
	}
	metrics, levels = make(map[string]float64, len(w.values)), map[string]string{}
	for k, v := range w.values {
		metrics[k] = v
	}
	for k, wt := range w.watches {
		if wt.Level() != OK {
			levels[k] = wt.Level().String()
		}
	}
	return metrics, levels
}

// Totals are task's latest handler counters (an external's as it last
// reported them); ok is false before any.
func (t *Tracker) Totals(task string) (c Counters, ok bool) {
	w := t.tasks[task]
	if w == nil || w.last.At.IsZero() {
		return Counters{}, false
	}
	return w.last, true
}

// DaemonValues are the daemon process's latest values.
func (t *Tracker) DaemonValues() map[string]float64 {
	out := make(map[string]float64, len(t.daemon))
	for k, v := range t.daemon {
		out[k] = v
	}
	return out
}

// Snapshot is one sample of every task that runs or is held.
type Snapshot struct {
	At     time.Time // zero before the first sample
	Tasks  []TaskSnapshot
	Daemon map[string]float64
}

// TaskSnapshot is one task in a Snapshot.
type TaskSnapshot struct {
	Task, Where string
	Running     bool
	Held        string // why, if held
	Values      map[string]float64
	Levels      map[string]Level
	Totals      Counters
}

// Snapshot returns the latest published sample. It is safe for
// concurrent use; the result must not be modified.
func (t *Tracker) Snapshot() *Snapshot { return t.snap.Load() }

// publish stores the snapshot of this sample. When no task was judged,
// started or ended and rs shows the same tasks as the last snapshot, the
// last snapshot's tasks are shown again as they are (their totals as of
// when they last changed) rather than copied.
func (t *Tracker) publish(at time.Time, rs []Reading) {
	s := &Snapshot{At: at, Daemon: t.DaemonValues()}
	if last := t.snap.Load(); !t.changed && t.shown(rs, len(last.Tasks)) {
		s.Tasks = last.Tasks
		t.snap.Store(s)
		return
	}
	t.changed = false
	t.pubGen++
	for _, r := range rs {
		if r.Running || r.Held != "" {
			s.Tasks = append(s.Tasks, t.shows(&r))
		}
	}
	sort.Slice(s.Tasks, func(i, j int) bool { return s.Tasks[i].Task < s.Tasks[j].Task })
	t.snap.Store(s)
}

// publishPart is publish after ObservePart: the last snapshot's tasks,
// with those of rs shown anew if any changed. (The tasks it does not
// show anew keep an older pubGen: the next full publish makes every
// task's anew.)
func (t *Tracker) publishPart(at time.Time, rs []Reading) {
	last := t.snap.Load()
	s := &Snapshot{At: at, Daemon: t.DaemonValues(), Tasks: last.Tasks}
	if t.changed {
		t.changed = false
		t.pubGen++
		s.Tasks = slices.Clone(last.Tasks)
		for _, r := range rs {
			if !r.Running && r.Held == "" {
				continue
			}
			i, found := sort.Find(len(s.Tasks), func(i int) int { return strings.Compare(r.Task, s.Tasks[i].Task) })
			if found {
				s.Tasks[i] = t.shows(&r)
			} else { // not expected: a task starts with an input, and a full sample
				s.Tasks = slices.Insert(s.Tasks, i, t.shows(&r))
			}
		}
	}
	t.snap.Store(s)
}

// shows is how a snapshot shows the task of r (which it shows: it runs
// or is held).
func (t *Tracker) shows(r *Reading) TaskSnapshot {
	ts := TaskSnapshot{Task: r.Task, Running: r.Running, Held: r.Held}
	if w := t.tasks[r.Task]; w != nil {
		if w.pubValues == nil {
			w.pubValues = make(map[string]float64, len(w.values))
			for k, v := range w.values {
				w.pubValues[k] = v
			}
			w.pubLevels = make(map[string]Level, len(w.watches))
			for k, wt := range w.watches {
				w.pubLevels[k] = wt.Level()
			}
		}
		w.pubGen, w.pubRunning, w.pubHeld = t.pubGen, r.Running, r.Held
		ts.Where, ts.Totals, ts.Values, ts.Levels = w.where, w.last, w.pubValues, w.pubLevels
	}
	return ts
}

// shown says whether the last snapshot, of n tasks, shows the tasks of rs
// as they are now: each one it would show, tracked and shown there the
// same way with values unchanged since.
func (t *Tracker) shown(rs []Reading, n int) bool {
	for _, r := range rs {
		if !r.Running && r.Held == "" {
			continue
		}
		w := t.tasks[r.Task]
		if n == 0 || w == nil || w.pubGen != t.pubGen || w.pubValues == nil || w.pubRunning != r.Running || w.pubHeld != r.Held {
			return false
		}
		n--
	}
	return n == 0
}
