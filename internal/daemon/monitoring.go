package daemon

import (
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/internal/control"

	"github.com/shirou/gopsutil/v4/mem"

	"github.com/multimodule/multimodule/monitor"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
)

// restartWindow is how far back the restarts metric counts.
const restartWindow = 10 * time.Minute

// taskMonitor is what the daemon knows of each task's use of the box. It
// is owned by the daemon's goroutine; Prometheus reads the snapshot it
// publishes after every sample, and the inbound hands it the externals'
// reports through reports.
type taskMonitor struct {
	procs *monitor.ProcSampler
	// box is the box's memory in bytes (0 if unknown), for memory limits
	// given as a fraction.
	box      float64
	defaults map[string]monitor.Thresholds
	tasks    map[string]*taskWatch
	self     *taskWatch
	snap     atomic.Pointer[snapshot]
	reports  reports
}

// reports are the latest counters each external process sent.
type reports struct {
	mu sync.Mutex
	m  map[string]counters
}

func (r *reports) put(task string, c counters) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.at.After(r.m[task].at) {
		r.m[task] = c
	}
}

func (r *reports) get(task string) counters {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[task]
}

func (r *reports) forget(task string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, task)
}

// taskWatch follows one task, across restarts of its process.
type taskWatch struct {
	where   string
	pid     int
	started time.Time // of the process or the internal task
	values  map[string]float64
	watches map[string]*monitor.Watch
	// prev and last are the handler's counters at the two latest readings
	// (an external's come in its reports).
	prev, last counters
}

// counters are a task's running totals at one moment.
type counters struct {
	at                       time.Time
	busy                     time.Duration
	in, out, failures, depth uint64
}

// snapshot is one sample of every task, for Prometheus.
type snapshot struct {
	at     time.Time
	tasks  []taskSnap
	daemon taskSnap
}

type taskSnap struct {
	name, where string
	running     bool
	held        string // why, if held
	values      map[string]float64
	levels      map[string]monitor.Level
	totals      counters
}

func newTaskMonitor() *taskMonitor {
	box := 0.0
	if vm, err := mem.VirtualMemory(); err == nil {
		box = float64(vm.Total)
	}
	m := &taskMonitor{procs: monitor.NewProcSampler(), box: box, defaults: monitor.Defaults(box),
		tasks: map[string]*taskWatch{}, self: newTaskWatch("daemon", os.Getpid(), time.Now()), reports: reports{m: map[string]counters{}}}
	m.snap.Store(&snapshot{})
	return m
}

func newTaskWatch(where string, pid int, started time.Time) *taskWatch {
	return &taskWatch{where: where, pid: pid, started: started, values: map[string]float64{}, watches: map[string]*monitor.Watch{}}
}

// end forgets the levels of what ran (all but restarts, which span runs,
// unless all is set) and returns the alerts that say they are over.
func (w *taskWatch) end(name string, all bool) []judgement {
	var ended []judgement
	for metric, wt := range w.watches {
		if metric == monitor.Restarts && !all {
			continue
		}
		if wt.Level() != monitor.OK {
			ended = append(ended, judgement{task: name, metric: metric, value: w.values[metric],
				limit: math.NaN(), level: monitor.OK, from: wt.Level()})
		}
		delete(w.watches, metric)
	}
	return ended
}

// restarted: the task runs in a new process, or was started again. What
// the previous run raised is over; the new one is judged afresh.
func (w *taskWatch) restarted(name, where string, pid int, started time.Time) []judgement {
	ended := w.end(name, false)
	w.where, w.pid, w.started = where, pid, started
	w.prev, w.last = counters{}, counters{}
	clear(w.values)
	return ended
}

// reportMetrics come from the counters of the task's handler.
var reportMetrics = []string{monitor.MessagesIn, monitor.MessagesOut, monitor.Failures, monitor.Mailbox}

// count takes a new reading of the handler's counters and turns the
// change since the previous one into rates.
func (w *taskWatch) count(c counters, withBusy bool) {
	w.prev, w.last = w.last, c
	w.values[monitor.Mailbox] = float64(c.depth)
	if w.prev.at.IsZero() {
		return
	}
	dt := c.at.Sub(w.prev.at).Seconds()
	if dt <= 0 {
		return
	}
	rate := func(now, before uint64) float64 {
		if now < before { // the counters started over
			return 0
		}
		return float64(now-before) / dt
	}
	w.values[monitor.MessagesIn] = rate(c.in, w.prev.in)
	w.values[monitor.MessagesOut] = rate(c.out, w.prev.out)
	w.values[monitor.Failures] = rate(c.failures, w.prev.failures)
	if withBusy {
		w.values[monitor.CPU] = max(0, (c.busy-w.prev.busy).Seconds()/dt)
	}
}

// thresholds are a task's limits for metric: the task's own, level by
// level, over the daemon's, over the defaults.
func (m *taskMonitor) thresholds(spec schema.TaskSpec, daemon schema.DaemonSpec, metric string) monitor.Thresholds {
	th, ok := m.defaults[metric]
	if !ok {
		th = monitor.Unset
	}
	for _, l := range []schema.Levels{daemon.Limits[metric], spec.Limits[metric]} {
		for i, t := range []*schema.Threshold{l.Warn, l.Severe, l.Failsafe} {
			if t == nil {
				continue
			}
			v := t.Value
			if metric == monitor.Memory && t.Size == "" {
				v *= m.box // a fraction of the box
				if m.box <= 0 {
					v = math.NaN() // unknown: not judged rather than 0
				}
			}
			th[i] = v
		}
	}
	return th
}

// checkLimits warns of a task's limits out of order once merged (a warn
// above the failsafe, say). They still work, the gravest level reached
// wins, but the failsafe then acts with no warning first.
func (d *daemon) checkLimits(name string, spec schema.TaskSpec) {
	for _, mt := range monitor.Metrics {
		th := d.mon.thresholds(spec, d.desired.Daemon, mt.Name)
		below := math.Inf(-1)
		for l := monitor.Warn; l <= monitor.Failsafe; l++ {
			v := th.Of(l)
			if math.IsNaN(v) {
				continue
			}
			if v < below {
				d.ch.Error.Error("limits out of order (the defaults and daemon: limits included): a graver level is reached first",
					"task", name, "metric", mt.Name, "warn", th.Of(monitor.Warn), "severe", th.Of(monitor.Severe), "failsafe", th.Of(monitor.Failsafe))
				break
			}
			below = v
		}
	}
}

// judgement is one metric of one task whose level changed.
type judgement struct {
	task, metric string
	value, limit float64
	level, from  monitor.Level
}

// judge turns the values of w that this sample measured into levels and
// returns the changes. Values not measured anew (skip) are not judged
// again: one reading is never confirmed by itself.
func (m *taskMonitor) judge(name string, w *taskWatch, th func(metric string) monitor.Thresholds, skip map[string]bool) []judgement {
	var out []judgement
	for _, mt := range monitor.Metrics {
		v, ok := w.values[mt.Name]
		if !ok || skip[mt.Name] {
			continue
		}
		t := th(mt.Name)
		wt := w.watches[mt.Name]
		if wt == nil {
			wt = &monitor.Watch{}
			w.watches[mt.Name] = wt
		}
		if changed, from := wt.Observe(t.Judge(v)); changed {
			limit := t.Of(wt.Level())
			if wt.Level() == monitor.OK {
				limit = t.Of(from) // the limit it is back under
			}
			out = append(out, judgement{task: name, metric: mt.Name, value: v, limit: limit, level: wt.Level(), from: from})
		}
	}
	return out
}

// sample measures every running task and the daemon, raises an alert on
// every level that changed, and failsafes what went too far.
func (d *daemon) sample() {
	m := d.mon
	now := time.Now()
	running := map[string]runtime.TaskStatus{}
	for _, s := range d.host.Status() {
		running[s.Name] = s
	}
	var changes []judgement
	for name, obs := range d.observed {
		where, pid, started := "internal", os.Getpid(), running[name].Started
		if p := d.externals[name]; obs.External && p != nil {
			where, pid, started = "external", p.Pid, p.started
		}
		w := m.tasks[name]
		if w == nil {
			w = newTaskWatch(where, pid, started)
			m.tasks[name] = w
		} else if w.where != where || w.pid != pid || !w.started.Equal(started) {
			changes = append(changes, w.restarted(name, where, pid, started)...)
		}
		skip := map[string]bool{}
		if where == "external" {
			ps, err := m.procs.Sample(pid)
			if err != nil {
				continue // it exited; checkExternals deals with that
			}
			ps.Values(w.values)
			skip[monitor.CPU] = !ps.HasCPU
			if r := m.reports.get(name); r.at.After(w.last.at) {
				w.count(r, false)
			} else {
				for _, k := range reportMetrics {
					skip[k] = true
				}
			}
		} else if s, ok := running[name]; ok {
			w.count(counters{at: now, busy: s.Busy, in: s.MessagesIn, out: s.MessagesOut, failures: s.Failures,
				depth: s.Depth}, true)
		}
		if q, err := d.tr.Lookup(name); err == nil {
			if qs, err := q.Stats(); err == nil {
				w.values[monitor.QueueFill] = qs.Fill
			}
		}
		if st := d.tasks[name]; st != nil {
			w.values[monitor.Restarts] = float64(st.recentRestarts(now))
		}
		spec := d.desired.Tasks[name]
		changes = append(changes, m.judge(name, w, func(metric string) monitor.Thresholds {
			return m.thresholds(spec, d.desired.Daemon, metric)
		}, skip)...)
	}
	for name, w := range m.tasks {
		if _, ok := d.observed[name]; ok {
			continue
		}
		if st := d.tasks[name]; st != nil && (st.held || d.draining[name]) {
			continue // its levels stand until it runs again
		}
		// Stopped for good: what it had raised is over.
		changes = append(changes, w.end(name, true)...)
		delete(m.tasks, name)
		m.reports.forget(name)
	}
	// The daemon itself is measured and shown, not judged: it hosts every
	// internal task, so per-task limits do not fit it.
	if ps, err := m.procs.Sample(os.Getpid()); err == nil {
		ps.Values(m.self.values)
	}
	m.procs.Sweep()
	sort.Slice(changes, func(i, j int) bool { return changes[i].task < changes[j].task })
	for _, c := range changes {
		d.alertLevel(c)
	}
	for _, c := range changes {
		if c.level == monitor.Failsafe {
			d.failsafe(c)
		}
	}
	d.publish(now)
}

// alertLevel reports a level change on the alert channel.
func (d *daemon) alertLevel(c judgement) {
	lvl := slog.LevelWarn
	switch c.level {
	case monitor.OK:
		lvl = slog.LevelInfo
	case monitor.Severe, monitor.Failsafe:
		lvl = slog.LevelError
	}
	msg := fmt.Sprintf("%s %s is %s", c.task, c.metric, c.level)
	switch {
	case c.level == monitor.OK && math.IsNaN(c.limit):
		msg = fmt.Sprintf("%s %s is over: the task stopped", c.task, c.metric)
	case c.level == monitor.OK:
		msg = fmt.Sprintf("%s %s is back to ok", c.task, c.metric)
	}
	args := []any{"task", c.task, "metric", c.metric, "value", c.value, "level", c.level.String(), "previous", c.from.String()}
	if !math.IsNaN(c.limit) { // none when the task stopped
		args = append(args, "threshold", c.limit)
	}
	d.ch.Alert.Log(context.Background(), lvl, msg, args...)
}

// failsafe stops a task that went past a failsafe level and holds it: an
// external process is sent SIGTERM, then SIGKILL after the grace period;
// an internal task stops taking messages (they stay in its queue), drains
// what it took and saves.
func (d *daemon) failsafe(c judgement) {
	st := d.tasks[c.task]
	obs, ok := d.observed[c.task]
	if st == nil || !ok || st.held {
		return
	}
	reason := fmt.Sprintf("failsafe: %s %s reached %s", c.metric, formatValue(c.metric, c.value), formatValue(c.metric, c.limit))
	d.hold(c.task, st, holdFailsafe, reason)
	if obs.External {
		if p := d.externals[c.task]; p != nil && !p.failsafed {
			p.failsafed = true
			go terminate(p, d.failsafeGrace())
		}
		return
	}
	if err := d.in.Unserve(c.task); err != nil {
		d.ch.Error.Error("failsafe: unserving", "task", c.task, "error", err)
	}
	delete(d.observed, c.task)
	d.draining[c.task] = true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		d.drained <- drainResult{c.task, d.host.Stop(ctx, c.task)}
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

func formatValue(metric string, v float64) string {
	switch metric {
	case monitor.Memory, monitor.ReadBytes, monitor.WriteBytes:
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	}
	return fmt.Sprintf("%.3g", v)
}

// report reads an external process's report of its handler counters,
// timed by the sender: two reports that arrive together still make a
// true rate.
func report(r map[string]any) (counters, bool) {
	at, ok := r["at"].(float64)
	if !ok || at <= 0 {
		return counters{}, false
	}
	num := func(k string) uint64 { f, _ := r[k].(float64); return uint64(max(0, f)) }
	busy, _ := r["busy_s"].(float64)
	return counters{at: time.Unix(0, int64(at*1e9)), busy: seconds(busy),
		in: num("messages_in"), out: num("messages_out"), failures: num("failures"), depth: num("depth")}, true
}

// publish makes this sample what Prometheus reads.
func (d *daemon) publish(at time.Time) {
	m := d.mon
	snap := &snapshot{at: at, daemon: m.self.snap("")}
	for name, st := range d.tasks {
		ts := taskSnap{name: name}
		if w := m.tasks[name]; w != nil {
			ts = w.snap(name)
		}
		_, ts.running = d.observed[name]
		if st.held {
			ts.held = st.holdWhy
		}
		if ts.running || ts.held != "" {
			snap.tasks = append(snap.tasks, ts)
		}
	}
	sort.Slice(snap.tasks, func(i, j int) bool { return snap.tasks[i].name < snap.tasks[j].name })
	m.snap.Store(snap)
}

func (w *taskWatch) snap(name string) taskSnap {
	s := taskSnap{name: name, where: w.where, totals: w.last,
		values: make(map[string]float64, len(w.values)), levels: make(map[string]monitor.Level, len(w.watches))}
	for k, v := range w.values {
		s.values[k] = v
	}
	for k, wt := range w.watches {
		s.levels[k] = wt.Level()
	}
	return s
}

// status is the task's latest values and its levels other than ok, for
// mmctl status.
func (w *taskWatch) status() (metrics map[string]float64, levels map[string]string) {
	metrics, levels = map[string]float64{}, map[string]string{}
	for k, v := range w.values {
		metrics[k] = v
	}
	for k, wt := range w.watches {
		if wt.Level() != monitor.OK {
			levels[k] = wt.Level().String()
		}
	}
	return metrics, levels
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
		if c, ok := report(r); ok {
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
