package daemon

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/internal/control"

	"github.com/multimodule/multimodule/monitor"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
)

// restartWindow is how far back the restarts metric counts.
const restartWindow = 10 * time.Minute

// taskMonitor is the daemon's side of monitoring: the tracker that judges
// (owned by the daemon's goroutine), the process sampler, and the
// externals' latest counter reports, which the inbound hands over.
type taskMonitor struct {
	tracker *monitor.Tracker
	procs   *monitor.ProcSampler
	reports reports
	// tasks and self are what control.go's status reads, refreshed after
	// every sample. They stay only until status asks the tracker itself
	// (Status, Totals, DaemonValues).
	tasks map[string]*taskView
	self  *taskView
}

func newTaskMonitor() *taskMonitor {
	t := monitor.NewTracker(monitor.BoxMemory())
	return &taskMonitor{tracker: t, procs: monitor.NewProcSampler(), reports: reports{m: map[string]monitor.Counters{}},
		tasks: map[string]*taskView{}, self: &taskView{t: t, daemon: true}}
}

// reports are the latest counters each external process sent.
type reports struct {
	mu sync.Mutex
	m  map[string]monitor.Counters
}

func (r *reports) put(task string, c monitor.Counters) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.At.After(r.m[task].At) {
		r.m[task] = c
	}
}

func (r *reports) get(task string) (monitor.Counters, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.m[task]
	return c, ok
}

// retain forgets the reports of the tasks keep refuses.
func (r *reports) retain(keep func(task string) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for task := range r.m {
		if !keep(task) {
			delete(r.m, task)
		}
	}
}

// taskView is one task as control.go's status reads it.
type taskView struct {
	t      *monitor.Tracker
	name   string
	daemon bool
	last   counters
}

// counters are a task's latest reported totals, as status reads them.
type counters struct {
	at                       time.Time
	in, out, failures, depth uint64
}

func (v *taskView) status() (metrics, levels map[string]any) {
	metrics, levels = map[string]any{}, map[string]any{}
	var m map[string]float64
	var l map[string]string
	if v.daemon {
		m = v.t.DaemonValues()
	} else {
		m, l = v.t.Status(v.name)
	}
	for k, x := range m {
		metrics[k] = x
	}
	for k, x := range l {
		levels[k] = x
	}
	return metrics, levels
}

// refreshViews makes the views match the tracker after a sample.
func (m *taskMonitor) refreshViews(rs []monitor.Reading) {
	clear(m.tasks)
	for _, r := range rs {
		if !m.tracker.Tracked(r.Task) {
			continue
		}
		v := &taskView{t: m.tracker, name: r.Task}
		if c, ok := m.tracker.Totals(r.Task); ok {
			v.last = counters{at: c.At, in: c.In, out: c.Out, failures: c.Failures, depth: c.Depth}
		}
		m.tasks[r.Task] = v
	}
}

// checkLimits reports a task's limits out of order once merged (a warn
// above the failsafe, say). They still work, the gravest level reached
// wins, but the failsafe then acts with no warning first.
func (d *daemon) checkLimits(name string, spec schema.TaskSpec) {
	for _, e := range d.mon.tracker.Limits(d.desired.Daemon.Limits, spec.Limits).Check() {
		d.ch.Error.Error("limits out of order (the defaults and daemon: limits included): a graver level is reached first",
			"task", name, "metric", e.Metric, "warn", e.Thresholds.Of(monitor.Warn),
			"severe", e.Thresholds.Of(monitor.Severe), "failsafe", e.Thresholds.Of(monitor.Failsafe))
	}
}

// sample measures every running task and the daemon, raises an alert on
// every level that changed, and failsafes what went too far.
func (d *daemon) sample() {
	now := time.Now()
	self, rs := d.readings(now)
	changes := d.mon.tracker.Observe(now, self, rs)
	d.mon.reports.retain(d.mon.tracker.Tracked)
	d.mon.refreshViews(rs)
	for _, c := range changes {
		lvl, msg, args := c.Alert()
		d.ch.Alert.Log(context.Background(), lvl, msg, args...)
	}
	for _, c := range changes {
		if c.Level == monitor.Failsafe {
			d.failsafe(c)
		}
	}
}

// readings gathers what the daemon knows of its tasks for the monitor:
// one reading per running task (its process sampled if external, its
// handler's counters, queue fill, restarts and limits), one per task that
// does not run but keeps its levels (held, or draining after a
// failsafe), and the daemon's own process sample. It is the only place
// monitoring reads the daemon's state.
func (d *daemon) readings(now time.Time) (self *monitor.ProcSample, rs []monitor.Reading) {
	running := map[string]runtime.TaskStatus{}
	for _, s := range d.host.Status() {
		running[s.Name] = s
	}
	rs = make([]monitor.Reading, 0, len(d.tasks))
	for name, obs := range d.observed {
		r := monitor.Reading{Task: name, Where: monitor.Internal, Pid: os.Getpid(), Started: running[name].Started,
			Running: true, Limits: d.mon.tracker.Limits(d.desired.Daemon.Limits, d.desired.Tasks[name].Limits)}
		if p := d.externals[name]; obs.External && p != nil {
			r.Where, r.Pid, r.Started = monitor.External, p.Pid, p.started
			if ps, err := d.mon.procs.Sample(p.Pid); err == nil { // else it exited; checkExternals deals with that
				r.Proc = &ps
			}
			if c, ok := d.mon.reports.get(name); ok {
				r.Counters = &c
			}
		} else if s, ok := running[name]; ok {
			r.Counters = &monitor.Counters{At: now, Busy: s.Busy, In: s.MessagesIn, Out: s.MessagesOut,
				Failures: s.Failures, Depth: s.Depth}
		}
		if q, err := d.tr.Lookup(name); err == nil {
			if qs, err := q.Stats(); err == nil {
				r.QueueFill, r.HasQueue = qs.Fill, true
			}
		}
		if st := d.tasks[name]; st != nil {
			r.Restarts = st.recentRestarts(now)
			if st.held {
				r.Held = st.holdWhy
			}
		}
		rs = append(rs, r)
	}
	for name, st := range d.tasks {
		if _, ok := d.observed[name]; ok || !(st.held || d.draining[name]) {
			continue
		}
		r := monitor.Reading{Task: name}
		if st.held {
			r.Held = st.holdWhy
		}
		rs = append(rs, r)
	}
	if ps, err := d.mon.procs.Sample(os.Getpid()); err == nil {
		self = &ps
	}
	d.mon.procs.Sweep()
	return self, rs
}

// failsafe stops a task that went past a failsafe level and holds it: an
// external process is sent SIGTERM, then SIGKILL after the grace period;
// an internal task stops taking messages (they stay in its queue), drains
// what it took and saves.
func (d *daemon) failsafe(c monitor.Judgement) {
	st := d.tasks[c.Task]
	obs, ok := d.observed[c.Task]
	if st == nil || !ok || st.held {
		return
	}
	d.hold(c.Task, st, holdFailsafe, c.Reason())
	if obs.External {
		if p := d.externals[c.Task]; p != nil && !p.failsafed {
			p.failsafed = true
			go terminate(p, d.failsafeGrace())
		}
		return
	}
	if err := d.in.Unserve(c.Task); err != nil {
		d.ch.Error.Error("failsafe: unserving", "task", c.Task, "error", err)
	}
	delete(d.observed, c.Task)
	d.draining[c.Task] = true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		d.drained <- drainResult{c.Task, d.host.Stop(ctx, c.Task)}
	}()
}

// drainResult is the end of a failsafed internal task's drain.
type drainResult struct {
	task string
	err  error
}

func (d *daemon) failsafeGrace() time.Duration {
	return seconds(d.desired.Daemon.FailsafeGrace)
}

// terminate sends p SIGTERM and, if it is still alive after grace,
// SIGKILL.
func terminate(p *externalProc, grace time.Duration) {
	syscall.Kill(p.Pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for p.alive() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if p.alive() {
		syscall.Kill(p.Pid, syscall.SIGKILL)
	}
}

// recentRestarts counts the restarts in the window, forgetting older ones.
func (st *taskState) recentRestarts(now time.Time) int {
	i := 0
	for i < len(st.restarts) && now.Sub(st.restarts[i]) > restartWindow {
		i++
	}
	st.restarts = st.restarts[i:]
	return len(st.restarts)
}

// tokens are the secrets of the external processes, by task. The daemon
// sets them; the inbound checks what externals send against them.
type tokens struct {
	mu sync.Mutex
	m  map[string]string
	// refusedAt is when a refusal was last logged (unix ns), refused how
	// many were refused since: a flood of forgeries is one line a minute.
	refusedAt, refused atomic.Int64
}

func (t *tokens) set(task, token string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if token == "" {
		delete(t.m, task)
		return
	}
	t.m[task] = token
}

func (t *tokens) valid(task, token string) bool {
	t.mu.Lock()
	want, ok := t.m[task]
	t.mu.Unlock()
	return ok && subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1
}

// refuse logs a refused message, at most once a minute.
func (t *tokens) refuse(log *slog.Logger, why, from string) {
	n := t.refused.Add(1)
	now := time.Now().UnixNano()
	if last := t.refusedAt.Load(); now-last < int64(time.Minute) || !t.refusedAt.CompareAndSwap(last, now) {
		return
	}
	t.refused.Store(0)
	log.Error("messages on the out-of-band queue refused: "+why, "from_task", from, "refused", n)
}

// handleOOB takes what an external process sent the daemon, on the
// inbound's goroutine: a report of its counters, or an out-of-band
// record, which goes out on the daemon's own channel of that name,
// marked with the signed from_task. Anything not signed with the task's
// token is refused.
func (d *daemon) handleOOB(m runtime.Message) {
	from, _ := m[control.FromKey].(string)
	token, _ := m[control.TokenKey].(string)
	if !d.tokens.valid(from, token) {
		d.tokens.refuse(d.ch.Error, "no known task and token", from)
		return
	}
	if r, ok := m[control.ReportKey].(map[string]any); ok {
		if c, ok := monitor.ParseReport(r); ok {
			d.mon.reports.put(from, c)
		}
		return
	}
	if m[runtime.OOBMarker] != true {
		d.tokens.refuse(d.ch.Error, "neither a report nor a record", from)
		return
	}
	var lvl slog.Level
	if s, _ := m["severity"].(string); lvl.UnmarshalText([]byte(s)) != nil {
		lvl = slog.LevelInfo
	}
	msg, _ := m["msg"].(string)
	keys := make([]string, 0, len(m))
	for k := range m {
		switch k {
		case runtime.OOBMarker, "source", "time", "severity", "msg", "channel", control.TokenKey:
		default:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, m[k])
	}
	logger := d.ch.Log
	switch m["channel"] {
	case runtime.ChanAlert:
		logger = d.ch.Alert
	case runtime.ChanError:
		logger = d.ch.Error
	case runtime.ChanDebug:
		logger = d.ch.Debug
	}
	logger.Log(context.Background(), lvl, msg, args...)
}
