package daemon

import (
	"context"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/runtime/external"

	"github.com/multimodule/multimodule/monitor"
	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
)

// taskMonitor is the daemon's side of monitoring: the tracker that judges
// (owned by the daemon's goroutine), the process sampler, and the
// externals' latest counter reports, which the inbound hands over.
type monitoring struct {
	ch      *runtime.Channels
	tracker *monitor.Tracker
	procs   *monitor.ProcSampler
	reports reports
	refused refusals
	// stalls are the running externals found stopped or silent, with why.
	stalls map[string]string
	// states are the /proc state letters of the externals' processes in
	// the last sample, by task (absent: its process could not be read),
	// so that the stall check reads no /proc file of its own.
	states map[string]byte
	// config is the config the limits come from; checked the spec hashes
	// whose limits were checked for order.
	config  *schema.Config
	checked map[string]string
	// every is the sample interval the config asks for; sampledEvery the
	// one the sampler runs at.
	every, sampledEvery time.Duration
	// limits are the merged limits of each task, made once per config
	// and spec (configure forgets them): the tracker tells an unchanged
	// idle task by being given the same Limits. Under "" are the
	// daemon's, which every task without limits of its own shares.
	limits map[string]taskLimits
	// rs, counters and ready are reused from sample to sample.
	rs       []monitor.Reading
	counters []monitor.Counters
	ready    []readiness
	// Most samples read only some tasks (see sample): those of watch,
	// which the last sample found might change by the next one, and those
	// the host found active. A sample reads every task when the
	// controller had an input since the last full one (changes), and
	// after fullEvery samples regardless.
	watch   map[string]struct{}
	changes uint64
	partial int
}

// fullEvery is how many samples may read only the tasks that may have
// changed before one reads every task again: a safety net, and what shows
// the queue of an idle task that was made but never sent a message.
const fullEvery = 30

type taskLimits struct {
	hash   string
	limits monitor.Limits
}

type readiness struct {
	task  string
	ready bool
}

func newMonitoring(ch *runtime.Channels) *monitoring {
	return &monitoring{ch: ch, tracker: monitor.NewTracker(monitor.BoxMemory()), procs: monitor.NewProcSampler(),
		reports: reports{m: map[string]monitor.Counters{}}, stalls: map[string]string{}, states: map[string]byte{}, config: &schema.Config{}, checked: map[string]string{},
		every: time.Second, sampledEvery: time.Second, watch: map[string]struct{}{}}
}

// configure takes the limits and sample interval of a loaded config, and
// reports limits out of order once for each spec.
func (m *monitoring) configure(cfg *schema.Config) {
	m.config = cfg
	m.limits = nil
	m.every = schema.Seconds(cfg.Daemon.SampleEvery)
	if m.every <= 0 {
		m.every = time.Second
	}
	for name, spec := range cfg.Tasks {
		if m.checked[name] != spec.Hash {
			m.checked[name] = spec.Hash
			m.checkLimits(name, spec)
		}
	}
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

// checkLimits reports a task's limits out of order once merged (a warn
// above the failsafe, say). They still work, the gravest level reached
// wins, but the failsafe then acts with no warning first.
func (m *monitoring) checkLimits(name string, spec schema.TaskSpec) {
	for _, e := range m.tracker.Limits(m.config.Daemon.Limits, spec.Limits).Check() {
		m.ch.Error.Error("limits out of order (the defaults and daemon: limits included): a graver level is reached first",
			"task", name, "metric", e.Metric, "warn", e.Thresholds.Of(monitor.Warn),
			"severe", e.Thresholds.Of(monitor.Severe), "failsafe", e.Thresholds.Of(monitor.Failsafe))
	}
}

// sample measures every running task and the daemon, raises an alert on
// every level that changed, and failsafes what went too far.
func (d *daemon) sample() {
	now := time.Now()
	m := d.mon
	all := m.partial >= fullEvery || m.changes != d.ctl.Changes()
	self, rs := d.readings(now, all)
	var changes []monitor.Judgement
	if all {
		m.partial, m.changes = 0, d.ctl.Changes()
		changes = m.tracker.Observe(now, self, rs)
	} else {
		m.partial++
		changes = m.tracker.ObservePart(now, self, rs)
	}
	// Read next time: what may change without an input to the controller
	// or a batch handled (which lists the task as active): an external's
	// process, restarts ageing out of their window, a queue with messages
	// in it, levels still settling. (A held or stopping task's levels
	// stand until it runs again, which is an input.)
	clear(m.watch)
	for i := range rs {
		r := &rs[i]
		if r.Running && (r.Where == monitor.External || r.Restarts > 0 || r.HasQueue && r.QueueFill > 0 || !m.tracker.Quiet(r.Task)) {
			m.watch[r.Task] = struct{}{}
		}
	}
	d.mon.reports.retain(d.mon.tracker.Tracked)
	d.checkStalls(now)
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

// publishReady records, for Prometheus, which tasks are Ready: they run
// the spec the config asks for (or are disabled as it says). ready is
// every wanted task's, from this sample; a new map is published only when
// they differ from the published ones.
func (d *daemon) publishReady(ready []readiness) {
	if old := d.cfg.counts.ready.Load(); old != nil && len(*old) == len(ready) {
		same := true
		for _, r := range ready {
			if v, ok := (*old)[r.task]; !ok || v != r.ready {
				same = false
				break
			}
		}
		if same {
			return
		}
	}
	m := make(map[string]bool, len(ready))
	for _, r := range ready {
		m[r.task] = r.ready
	}
	d.cfg.counts.ready.Store(&m)
}

// readings gathers what the daemon knows of its tasks for the monitor:
// one reading per running task (its process sampled if external, its
// handler's counters, queue fill, restarts and limits), one per task that
// does not run but keeps its levels (held, or stopping after a failsafe),
// and the daemon's own process sample; with all false, of the tasks that
// may have changed only (see monitoring.watch). It is the only place
// monitoring reads the daemon's state; when it reads every task it
// publishes which are ready. The readings are valid until the next call.
func (d *daemon) readings(now time.Time, all bool) (self *monitor.ProcSample, rs []monitor.Reading) {
	m := d.mon
	rs = m.rs[:0]
	if m.limits == nil {
		m.limits = map[string]taskLimits{}
	}
	clear(m.states)
	if all {
		d.tasks.host.Active(func(string) {}) // read below with every task
		ready := m.ready[:0]
		d.ctl.Each(func(st reconcile.Monitored) {
			if st.Wanted {
				ready = append(ready, readiness{st.Name, st.Ready})
			}
			rs = d.reading(rs, st, now)
		})
		m.ready = ready
		d.publishReady(ready) // only an input to the controller changes them
	} else {
		d.tasks.host.Active(func(name string) { m.watch[name] = struct{}{} })
		for name := range m.watch {
			if st, ok := d.ctl.Monitor(name); ok {
				rs = d.reading(rs, st, now)
			}
		}
	}
	if len(m.counters) < len(rs) {
		m.counters = make([]monitor.Counters, len(rs)+len(rs)/4)
	}
	m.rs = rs
	if ps, err := m.procs.Sample(os.Getpid()); err == nil {
		self = &ps
	}
	m.procs.Sweep()
	return self, rs
}

// reading appends to rs the reading of the task st, if it has one: it
// runs, or its levels stand until it runs again.
func (d *daemon) reading(rs []monitor.Reading, st reconcile.Monitored, now time.Time) []monitor.Reading {
	m := d.mon
	name := st.Name
	if !st.Running || st.Stopping {
		if st.Held != "" || st.Stopping {
			rs = append(rs, monitor.Reading{Task: name, Held: st.Held}) // its levels stand until it runs again
		}
		return rs
	}
	spec := m.config.Tasks[name]
	lim, ok := m.limits[name]
	if !ok || lim.hash != spec.Hash {
		lim = taskLimits{spec.Hash, m.limits[""].limits} // the daemon's, shared by tasks with none of their own
		if len(spec.Limits) > 0 || lim.limits == nil {
			lim.limits = m.tracker.Limits(m.config.Daemon.Limits, spec.Limits)
		}
		if len(spec.Limits) == 0 {
			m.limits[""] = taskLimits{limits: lim.limits}
		}
		m.limits[name] = lim
	}
	r := monitor.Reading{Task: name, Where: monitor.Internal, Pid: os.Getpid(),
		Running: true, Held: st.Held, Restarts: st.Restarts, Limits: lim.limits}
	p, isExt := external.Process{}, false
	if st.External {
		p, isExt = d.tasks.ext.sup.Lookup(name)
	}
	if isExt {
		r.Where, r.Pid, r.Started = monitor.External, p.Pid, p.Started
		if ps, err := m.procs.Sample(p.Pid); err == nil { // else it exited; its pidfd tells the supervisor
			r.Proc = &ps
			m.states[name] = ps.State
		}
		if c, ok := m.reports.get(name); ok {
			r.Counters = &c
		}
	} else if s, ok := d.tasks.host.Counters(name); ok {
		r.Started = s.Started
		c := &monitor.Counters{}
		if len(rs) < len(m.counters) { // the readings point into it: never grown while in use
			c = &m.counters[len(rs)]
		}
		*c = monitor.Counters{At: now, Busy: s.Busy, In: s.MessagesIn, Out: s.MessagesOut,
			Failures: s.Failures, Depth: s.Depth}
		r.Counters = c
	}
	// An internal task's queue, once it exists, is open here (its
	// inbound opens it at the first ring): no stat of a key file per
	// task and second. An external's may have been made by others.
	q := d.tasks.tr.Opened(name)
	if q == nil && r.Where == monitor.External {
		q, _ = d.tasks.tr.Lookup(name)
	}
	if q != nil {
		if qs, err := q.Stats(); err == nil {
			r.QueueFill, r.HasQueue = qs.Fill, true
		}
	}
	rs = append(rs, r)
	return rs
}

// failsafe holds a task that went past a failsafe level and has the
// controller stop it (an external process gets SIGTERM, then SIGKILL of
// its process group after the failsafe grace; an internal task stops
// taking messages, which stay in its queue, and drains what it took).
func (d *daemon) failsafe(c monitor.Judgement) {
	d.ctl.Failsafe(c.Task, c.Reason())
}

// refusals counts the messages refused on the out-of-band queue.
// refusedAt is when a refusal was last logged (unix ns), refused how many
// were refused since: a flood of forgeries is one line a minute.
type refusals struct {
	refusedAt, refused atomic.Int64
}

// refuse logs a refused message, at most once a minute.
func (t *refusals) refuse(log *slog.Logger, why, from string) {
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
func (mon *monitoring) oobHandler(sup *external.Supervisor) func(runtime.Message) {
	return func(m runtime.Message) { mon.handleOOB(sup, m) }
}

func (mon *monitoring) handleOOB(sup *external.Supervisor, m runtime.Message) {
	from, _ := m[control.FromKey].(string)
	token, _ := m[control.TokenKey].(string)
	if !sup.ValidToken(from, token) {
		mon.refused.refuse(mon.ch.Error, "no known task and token", from)
		return
	}
	if r, ok := m[control.ReportKey].(map[string]any); ok {
		if c, ok := monitor.ParseReport(r); ok {
			mon.reports.put(from, c)
		}
		return
	}
	if m[runtime.OOBMarker] != true {
		mon.refused.refuse(mon.ch.Error, "neither a report nor a record", from)
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
	logger := mon.ch.Log
	switch m["channel"] {
	case runtime.ChanAlert:
		logger = mon.ch.Alert
	case runtime.ChanError:
		logger = mon.ch.Error
	case runtime.ChanDebug:
		logger = mon.ch.Debug
	}
	logger.Log(context.Background(), lvl, msg, args...)
}
