package multimodule

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shirou/gopsutil/v4/mem"

	"github.com/multimodule/multimodule/monitor"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
)

// restartWindow is how far back the restarts metric counts.
const restartWindow = 10 * time.Minute

// taskMonitor is what the daemon knows of each task's use of the box. It
// is owned by the daemon's goroutine; Prometheus reads the snapshot it
// publishes after every sample.
type taskMonitor struct {
	procs *monitor.ProcSampler
	// box is the box's memory in bytes, for memory limits given as a
	// fraction.
	box      float64
	defaults map[string]monitor.Thresholds
	tasks    map[string]*taskWatch
	self     *taskWatch
	snap     atomic.Pointer[snapshot]
}

// taskWatch follows one running task.
type taskWatch struct {
	where   string
	pid     int
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
	held        bool
	heldWhy     string
	values      map[string]float64
	levels      map[string]monitor.Level
	totals      counters
	restarts    int
}

func newTaskMonitor() *taskMonitor {
	box := 0.0
	if vm, err := mem.VirtualMemory(); err == nil {
		box = float64(vm.Total)
	}
	m := &taskMonitor{procs: monitor.NewProcSampler(), box: box, defaults: monitor.Defaults(box),
		tasks: map[string]*taskWatch{}, self: newTaskWatch("daemon", os.Getpid())}
	m.snap.Store(&snapshot{})
	return m
}

func newTaskWatch(where string, pid int) *taskWatch {
	return &taskWatch{where: where, pid: pid, values: map[string]float64{}, watches: map[string]*monitor.Watch{}}
}

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

// thresholds are task name's limits: the task's own, level by level,
// over the daemon's, over the defaults.
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
			}
			th[i] = v
		}
	}
	return th
}

// judgement is one metric of one task whose level changed.
type judgement struct {
	task, metric string
	value, limit float64
	level, from  monitor.Level
}

// judge turns w's values into levels and returns the changes.
func (m *taskMonitor) judge(name string, w *taskWatch, th func(metric string) monitor.Thresholds) []judgement {
	var out []judgement
	for _, mt := range monitor.Metrics {
		v, ok := w.values[mt.Name]
		if !ok {
			continue
		}
		t := th(mt.Name)
		level := t.Judge(v)
		if mt.NoFailsafe && level == monitor.Failsafe {
			level = monitor.Severe
		}
		wt := w.watches[mt.Name]
		if wt == nil {
			wt = &monitor.Watch{}
			w.watches[mt.Name] = wt
		}
		if changed, from := wt.Observe(level); changed {
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
		w := m.tasks[name]
		where, pid := "internal", os.Getpid()
		if p := d.externals[name]; obs.External && p != nil {
			where, pid = "external", p.Pid
		}
		if w == nil || w.where != where || w.pid != pid {
			w = newTaskWatch(where, pid) // a new process starts from scratch
			m.tasks[name] = w
		}
		if where == "external" {
			ps, err := m.procs.Sample(pid)
			if err != nil {
				continue // it exited; checkExternals deals with that
			}
			ps.Values(w.values)
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
		})...)
	}
	for name := range m.tasks {
		if _, ok := d.observed[name]; !ok {
			delete(m.tasks, name) // stopped: a new start begins at ok
		}
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
	if c.level == monitor.OK {
		msg = fmt.Sprintf("%s %s is back to ok", c.task, c.metric)
	}
	d.ch.Alert.Log(context.Background(), lvl, msg, "task", c.task, "metric", c.metric, "value", c.value,
		"threshold", c.limit, "level", c.level.String(), "previous", c.from.String())
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
			grace := time.Duration(d.desired.Daemon.FailsafeGrace * float64(time.Second))
			go terminate(p, grace)
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

// onReport takes an external process's report of its handler counters.
func (d *daemon) onReport(task string, r map[string]any) {
	w := d.mon.tasks[task]
	if w == nil || w.where != "external" {
		return // not sampled yet; the next report counts
	}
	num := func(k string) uint64 { f, _ := r[k].(float64); return uint64(max(0, f)) }
	busy, _ := r["busy_s"].(float64)
	w.count(counters{at: time.Now(), busy: time.Duration(busy * float64(time.Second)), in: num("messages_in"),
		out: num("messages_out"), failures: num("failures"), depth: num("depth")}, false)
}

// publish makes this sample what Prometheus and status read.
func (d *daemon) publish(at time.Time) {
	m := d.mon
	snap := &snapshot{at: at, daemon: m.self.snap("", true, false, 0)}
	for name, st := range d.tasks {
		w := m.tasks[name]
		if w == nil {
			if st.held {
				snap.tasks = append(snap.tasks, taskSnap{name: name, held: true, heldWhy: st.holdWhy})
			}
			continue
		}
		ts := w.snap(name, true, st.held, st.recentRestarts(at))
		ts.heldWhy = st.holdWhy
		snap.tasks = append(snap.tasks, ts)
	}
	sort.Slice(snap.tasks, func(i, j int) bool { return snap.tasks[i].name < snap.tasks[j].name })
	m.snap.Store(snap)
}

func (w *taskWatch) snap(name string, running, held bool, restarts int) taskSnap {
	s := taskSnap{name: name, where: w.where, running: running, held: held, totals: w.last, restarts: restarts,
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
func (w *taskWatch) status() (metrics, levels map[string]any) {
	metrics, levels = map[string]any{}, map[string]any{}
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

// handleOOB takes what an external process sent the daemon: a report of
// its counters, or an out-of-band record, which goes out on the daemon's
// own channel of that name. Anything not signed with the task's token is
// refused.
func (d *daemon) handleOOB(m runtime.Message) {
	from, _ := m[fromKey].(string)
	token, _ := m[tokenKey].(string)
	if from == "" || token == "" || d.tokens[from] != token {
		d.ch.Error.Error("message on the out-of-band queue refused: no known task and token", "from_task", from)
		return
	}
	if r, ok := m[reportKey].(map[string]any); ok {
		d.onReport(from, r)
		return
	}
	if m[runtime.OOBMarker] != true {
		d.ch.Error.Error("message on the out-of-band queue refused: neither a report nor a record", "from_task", from)
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
		case runtime.OOBMarker, "source", "time", "severity", "msg", "channel", fromKey, tokenKey:
		default:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys)+2)
	for _, k := range keys {
		args = append(args, k, m[k])
	}
	if _, ok := m["task"]; !ok {
		args = append(args, "task", from)
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
