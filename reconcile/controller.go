package reconcile

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/multimodule/multimodule/schema"
)

// Target carries out what the controller decides. Start and Reconfigure
// are quick and report their outcome; Stop may be slow (draining a task,
// waiting out an external's grace), so it only begins the work: its end
// is reported with Controller.Stopped, on the controller's goroutine.
type Target interface {
	// Start starts tasks together (so they can reach each other while
	// starting); one error or nil per spec. A task whose start failed
	// must not be left half running.
	Start(specs []schema.TaskSpec) []error
	// Reconfigure hands a running task its changed spec; its state is kept.
	Reconfigure(spec schema.TaskSpec) error
	// Stop begins stopping what runs as o: drain, save, exit. failsafe
	// says the task went past a failsafe limit (an external process then
	// gets the failsafe grace before SIGKILL).
	Stop(o Observed, failsafe bool)
}

// Clock tells the time. The daemon passes the system clock; tests pass a
// clock they move themselves.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now is time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// Loggers are where the controller reports: what it did (Log), what
// failed (Error), and what an operator must look at (Alert: holds).
type Loggers struct {
	Log, Error, Alert *slog.Logger
}

// Timing tunes the controller; zero values take the defaults.
type Timing struct {
	// ConfirmRemoval is how long a task whose definition vanished waits
	// before it is stopped: the directory is loaded again then, and only
	// if it still lacks the task is it stopped (an editor may be between
	// deleting and rewriting a file). Default 200ms.
	ConfirmRemoval time.Duration
	// StableAfter is how long a started task must run before a crash no
	// longer counts towards a crash loop. Default 10s.
	StableAfter time.Duration
	// RestartWindow is how far back the restarts of a task are counted.
	// Default 10 minutes.
	RestartWindow time.Duration
}

// LoadKind says where a config came from, which decides when removals
// apply.
type LoadKind int

const (
	// Watched: the directory changed. Removals wait for a confirming load.
	Watched LoadKind = iota
	// Confirming: the load the controller asked for (Tick) to confirm
	// pending removals.
	Confirming
	// Forced: an operator asked (mmctl apply). Removals apply at once.
	Forced
)

// Controller reconciles the tasks a config wants with the tasks that run.
// It is level-based and keyed by task name: it keeps, per task, the
// desired spec and its generation, what runs, the retry backoff and any
// hold, and on every input it plans from scratch and acts on what is due.
//
// It is owned by one goroutine: every method must be called from it.
// It never waits: slow work runs in the Target and comes back as Stopped.
// Time comes from the Clock, and the owner wakes the controller with Tick
// at NextWake, so tests drive it without sleeping.
type Controller struct {
	target  Target
	clock   Clock
	logs    Loggers
	timing  Timing
	holds   HoldStore
	desired *schema.Config
	tasks   map[string]*taskState
	// confirmHash and confirmAt: the config whose removals wait for a
	// confirming load, and when to ask for it.
	confirmHash string
	confirmAt   time.Time
	// loaded: a config has been loaded (the first load restores holds).
	loaded bool
	// changes counts the inputs (every exported method that may change a
	// task: Adopt, Load, Stopped, Exited, Failsafe, Clear, Tick, Do).
	// Between two, nothing a task's Monitored or NextWake shows changes
	// but a restart leaving the restart window: NextWake is computed
	// again only after one, and monitoring reads every task again only
	// after one (see Changes).
	changes uint64
	// wake is NextWake as computed when changes was wakeAt-1 (wakeAt 0:
	// never computed).
	wake   time.Time
	wakeAt uint64
}

// Changes counts the inputs so far: while it stays the same, no task's
// Monitored changes except for Restarts, as restarts age out of the
// restart window.
func (c *Controller) Changes() uint64 { return c.changes }

// taskState is what the controller knows of one task name.
type taskState struct {
	// generation counts the changes of the desired spec; observedGeneration
	// is the generation of the spec that runs.
	generation, observedGeneration int64
	specHash                       string

	// running is what runs under the name, nil when nothing does;
	// applied the spec it was given (nil for an adopted process), for
	// mmctl diff to show which fields a change moves.
	running *Observed
	applied *schema.TaskSpec
	// oneOff is the last one-off action an operator asked for (Do).
	oneOff  *LastOneOff
	started time.Time
	// stopping: a Stop is under way; nothing else is done to the task
	// until it is reported.
	stopping bool

	retry    retry
	hold     *Hold
	restarts []time.Time
	// failedStops are when stops failed (an external that had to be
	// killed, an internal task that did not drain), within RestartWindow.
	// Unlike retry, nothing but Clear forgives them: a task flipped
	// between internal and external changes its config at every flip,
	// runs for long in between, and stops well every other time (as an
	// internal task), yet must end held if it will not stop when asked.
	failedStops []time.Time
}

// retry is the backoff of one task: the only place failures are counted
// and forgiven.
type retry struct {
	failures int
	next     time.Time
	lastErr  string
}

func (r *retry) reset() { *r = retry{} }

// NewController returns a controller with nothing desired and nothing
// running. Call Adopt for what already runs, then Load.
func NewController(t Target, clock Clock, logs Loggers, holds HoldStore, timing Timing) *Controller {
	if timing.ConfirmRemoval <= 0 {
		timing.ConfirmRemoval = 200 * time.Millisecond
	}
	if timing.StableAfter <= 0 {
		timing.StableAfter = 10 * time.Second
	}
	if timing.RestartWindow <= 0 {
		timing.RestartWindow = 10 * time.Minute
	}
	return &Controller{target: t, clock: clock, logs: logs, timing: timing, holds: holds,
		desired: &schema.Config{Tasks: map[string]schema.TaskSpec{}}, tasks: map[string]*taskState{}}
}

func (c *Controller) task(name string) *taskState {
	st := c.tasks[name]
	if st == nil {
		st = &taskState{}
		c.tasks[name] = st
	}
	return st
}

// Adopt records a task found running when the daemon started (an
// external process a previous daemon left).
func (c *Controller) Adopt(o Observed) {
	c.changes++
	st := c.task(o.Name)
	o2 := o
	st.running, st.started = &o2, c.clock.Now()
}

// Desired is the config the controller works towards.
func (c *Controller) Desired() *schema.Config { return c.desired }

// Load makes cfg the desired state and reconciles. A config whose source
// did not change since the last one does nothing, unless an operator
// forced it or it confirms pending removals. The first Load also restores
// the holds recorded by the last daemon.
func (c *Controller) Load(cfg *schema.Config, kind LoadKind) []Result {
	c.changes++
	first := !c.loaded
	c.loaded = true
	if kind == Watched && !first && cfg.SourceHash == c.desired.SourceHash {
		return nil
	}
	confirmed := kind == Forced || kind == Confirming && cfg.SourceHash == c.confirmHash
	c.desired = cfg
	released := false
	for name, spec := range cfg.Tasks {
		st := c.task(name)
		if kind == Forced && st.hold == nil {
			// An operator asked for it now (mmctl apply): a change waiting
			// out its backoff is tried at once, so that apply reports the
			// outcome of an attempt rather than "no changes".
			st.retry.next = time.Time{}
		}
		if st.specHash == spec.Hash {
			continue
		}
		st.specHash = spec.Hash
		st.generation++
		if st.running != nil && !st.stopping && st.running.Hash == spec.Hash {
			// Edited back to what runs: nothing to apply, and the running
			// spec is this generation (status must not show Ready beside
			// an old generation).
			st.observedGeneration = st.generation
		}
		// A changed spec gives a failing or held task a fresh start.
		if st.hold != nil {
			c.logs.Log.Info("held task released: its config changed", "task", name)
			released = true
		}
		st.hold = nil
		st.retry.reset()
	}
	if first {
		c.restoreHolds()
	}
	for name, st := range c.tasks {
		if _, wanted := cfg.Tasks[name]; !wanted && st.hold != nil && st.running == nil && !st.stopping {
			st.hold = nil // its config is gone: so is its hold
			released = true
			c.forget(name)
		}
	}
	if released && !first {
		c.saveHolds()
	}
	if kind != Watched {
		// Confirmed or not, this load answers the one asked for; removals
		// still pending in cfg wait for a confirmation of their own.
		c.confirmHash, c.confirmAt = "", time.Time{}
	}
	return c.reconcile(!confirmed)
}

// Stopped reports the end of a Stop: the task no longer runs. err says
// what went wrong (a drain that timed out, a process that had to be
// killed); it counts as a failure of the task, so a task that will not
// stop ends held rather than stopped and started forever.
func (c *Controller) Stopped(name string, err error) []Result {
	c.changes++
	st := c.tasks[name]
	if st == nil {
		return nil
	}
	st.stopping, st.running, st.applied = false, nil, nil
	if st.oneOff != nil && st.oneOff.Action == OneOffStop {
		st.oneOff.Done = true
	}
	if err != nil {
		now := c.clock.Now()
		st.failedStops = append(recent(st.failedStops, now, c.timing.RestartWindow), now)
		err = fmt.Errorf("stopping: %w", err)
		c.fail(name, st, err)
		if ha := c.desired.Tasks[name].Restart.HoldAfter; ha > 0 && len(st.failedStops) >= ha && st.hold == nil {
			c.holdTask(name, st, HoldRetries, fmt.Sprintf("%d stops failed within %v: %v", len(st.failedStops), c.timing.RestartWindow, err))
		}
	}
	c.forget(name)
	return c.reconcile(true)
}

// Exited reports that a task's process ended without being asked to: a
// crash. It is started again at once the first time, then with backoff,
// and a crash loop ends held. A task that ran for StableAfter before it
// crashed starts its count afresh.
func (c *Controller) Exited(name string, err error) []Result {
	c.changes++
	st := c.tasks[name]
	if st == nil || st.running == nil || st.stopping {
		return nil
	}
	now := c.clock.Now()
	if now.Sub(st.started) >= c.timing.StableAfter {
		st.retry.reset()
	}
	st.running, st.applied = nil, nil
	st.restarts = append(st.restarts, now)
	c.fail(name, st, fmt.Errorf("exited unexpectedly: %w", err))
	if st.retry.failures == 1 && st.hold == nil {
		st.retry.next = now // the first crash is restarted at once
	}
	c.forget(name)
	return c.reconcile(true)
}

// Failsafe holds a running task that went past a failsafe limit and
// stops it. It stays held, across restarts of the daemon, until Clear or
// a change of its config.
func (c *Controller) Failsafe(name, reason string) {
	c.changes++
	st := c.tasks[name]
	if st == nil || st.running == nil || st.hold != nil && st.hold.Why == HoldFailsafe {
		return
	}
	c.holdTask(name, st, HoldFailsafe, reason) // a retries hold of a running task gives way
	c.reconcile(true)
}

// ErrNotHeld is returned by Clear for a task that is not held.
var ErrNotHeld = errors.New("task is not held")

// ErrNoTask is returned for a name the controller does not know.
var ErrNoTask = errors.New("no such task")

// Clear releases a held task: it is retried at once.
func (c *Controller) Clear(name string) ([]Result, error) {
	c.changes++
	st := c.tasks[name]
	if st == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoTask, name)
	}
	if st.hold == nil {
		return nil, fmt.Errorf("task %s: %w", name, ErrNotHeld)
	}
	st.hold = nil
	st.retry.reset()
	st.failedStops = nil
	c.saveHolds()
	c.logs.Log.Info("task cleared: retrying", "task", name)
	return c.reconcile(true), nil
}

// Tick does what is due: retries whose backoff ran out, and forgiving
// the failures of tasks that have run for StableAfter. It reports whether
// the owner should load the config again to confirm pending removals
// (then call Load with Confirming).
func (c *Controller) Tick() (confirm bool, results []Result) {
	c.changes++
	now := c.clock.Now()
	for _, st := range c.tasks {
		if st.running != nil && !st.stopping && st.retry.failures > 0 && st.hold == nil &&
			now.Sub(st.started) >= c.timing.StableAfter {
			st.retry.reset()
		}
	}
	confirm = c.confirmHash != "" && !now.Before(c.confirmAt)
	return confirm, c.reconcile(true)
}

// NextWake is when Tick has something to do; zero if nothing waits.
func (c *Controller) NextWake() time.Time {
	if c.wakeAt == c.changes+1 {
		return c.wake
	}
	var next time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	earlier(c.confirmAt)
	for _, st := range c.tasks {
		if st.hold != nil || st.stopping {
			continue // nothing is due until it is released or stopped
		}
		earlier(st.retry.next)
		if st.running != nil && st.retry.failures > 0 {
			earlier(st.started.Add(c.timing.StableAfter))
		}
	}
	c.wake, c.wakeAt = next, c.changes+1
	return next
}

// Plan is what reconciling now would do, as mmctl diff shows it: held
// tasks' changes as held, pending removals and changes in their backoff
// included.
func (c *Controller) Plan() []Action { return c.PlanFor(c.desired) }

// PlanFor is Plan for another config (apply --dry-run).
func (c *Controller) PlanFor(cfg *schema.Config) []Action {
	return Diff(cfg.Tasks, c.Observed(), c.heldLabels())
}

// Observed is what runs, by name.
func (c *Controller) Observed() map[string]Observed {
	out := make(map[string]Observed, len(c.tasks))
	for name, st := range c.tasks {
		if st.running != nil {
			out[name] = *st.running
		}
	}
	return out
}

func (c *Controller) heldLabels() map[string]string {
	out := map[string]string{}
	for name, st := range c.tasks {
		if st.hold != nil {
			out[name] = st.hold.Label()
		}
	}
	return out
}

// Diff is the plan from observed to desired with the changes of held
// tasks shown as held (held maps a task to its hold's label). The daemon,
// `mmctl diff` and `mmctl apply --dry-run` all show this.
func Diff(desired map[string]schema.TaskSpec, observed map[string]Observed, held map[string]string) []Action {
	plan := Plan(desired, observed)
	for i, a := range plan {
		if label, ok := held[a.Task()]; ok {
			if _, stop := a.(Stop); !stop {
				plan[i] = Held{Name: a.Task(), Reason: label}
			}
		}
	}
	return plan
}

// reconcile plans from scratch and acts on what is due. With
// deferRemovals, stopping a task whose definition vanished waits for a
// confirming load.
func (c *Controller) reconcile(deferRemovals bool) []Result {
	now := c.clock.Now()
	observed := c.Observed()
	var results []Result
	var starts []schema.TaskSpec
	deferred := false
	for _, a := range Plan(c.desired.Tasks, observed) {
		name := a.Task()
		st := c.task(name)
		if st.stopping {
			continue
		}
		if stop, ok := a.(Stop); ok {
			if _, wanted := c.desired.Tasks[name]; !wanted && deferRemovals {
				deferred = true
				if c.confirmHash != c.desired.SourceHash {
					c.confirmHash, c.confirmAt = c.desired.SourceHash, now.Add(c.timing.ConfirmRemoval)
				}
				continue
			}
			c.stop(st, stop.Name, false)
			results = append(results, Result{Action: a})
			continue
		}
		if st.hold != nil || now.Before(st.retry.next) {
			continue
		}
		switch a := a.(type) {
		case Restart, Migrate:
			// Stopped first; the next plan starts it in its new form.
			c.stop(st, name, false)
			results = append(results, Result{Action: a})
		case Reconfigure:
			err := c.target.Reconfigure(a.Spec)
			if err == nil {
				st.running.Hash = a.Spec.Hash
				st.applied = &a.Spec
				st.observedGeneration = st.generation
			}
			results = append(results, c.done(a, err))
		case Start:
			starts = append(starts, a.Spec)
		}
	}
	if !deferred {
		c.confirmHash, c.confirmAt = "", time.Time{}
	}
	// A failsafed task still running (the last daemon stopped before the
	// failsafe ended it) is stopped.
	for name, st := range c.tasks {
		if st.hold != nil && st.hold.Why == HoldFailsafe && st.running != nil && !st.stopping {
			c.stop(st, name, true)
		}
	}
	if len(starts) > 0 {
		for i, err := range c.target.Start(starts) {
			s := starts[i]
			if err == nil {
				st := c.task(s.Name)
				st.running = &Observed{Name: s.Name, Kind: s.Kind, Hash: s.Hash, External: s.External}
				st.applied = &s
				if st.oneOff != nil && st.oneOff.Action != OneOffStop {
					st.oneOff.Done = true // restarted or started
				}
				st.started = now
				st.observedGeneration = st.generation
			}
			results = append(results, c.done(Start{Spec: s}, err))
		}
	}
	return results
}

func (c *Controller) stop(st *taskState, name string, failsafe bool) {
	st.stopping = true
	c.target.Stop(*st.running, failsafe)
}

// done notes the outcome of an action.
func (c *Controller) done(a Action, err error) Result {
	name := a.Task()
	st := c.task(name)
	if err != nil {
		c.fail(name, st, fmt.Errorf("%s: %w", a, err))
		return Result{a, err}
	}
	c.logs.Log.Info("reconcile", "action", a.String())
	// Nothing waits for a retry now. An internal task that started is
	// well; an external process may still crash, and its failures are
	// forgiven once it has run for StableAfter.
	st.retry.next = time.Time{}
	if st.running != nil && !st.running.External {
		st.retry.reset()
	}
	return Result{a, nil}
}

// fail counts a failure of a task and sets its next try with backoff, or
// holds it once restart.hold_after failures in a row are reached.
func (c *Controller) fail(name string, st *taskState, err error) {
	rs := c.desired.Tasks[name].Restart
	st.retry.failures++
	st.retry.lastErr = err.Error()
	delay := Backoff(rs, st.retry.failures)
	st.retry.next = c.clock.Now().Add(delay)
	if rs.HoldAfter > 0 && st.retry.failures >= rs.HoldAfter && st.hold == nil {
		c.holdTask(name, st, HoldRetries, err.Error())
		return
	}
	c.logs.Error.Error("reconcile", "task", name, "error", err, "failures", st.retry.failures, "retry_in", delay)
}

// forget drops a task that is neither wanted nor running nor held.
func (c *Controller) forget(name string) {
	st := c.tasks[name]
	if _, wanted := c.desired.Tasks[name]; !wanted && st != nil && st.running == nil && !st.stopping && st.hold == nil {
		delete(c.tasks, name)
	}
}

// Backoff doubles from restart.initial up to restart.max seconds.
func Backoff(r schema.Restart, failures int) time.Duration {
	initial, maxDelay := r.Initial, r.Max
	if initial <= 0 {
		initial = 1
	}
	if maxDelay < initial {
		maxDelay = initial
	}
	s := initial
	for i := 1; i < failures && s < maxDelay; i++ {
		s *= 2
	}
	return time.Duration(min(s, maxDelay) * float64(time.Second))
}

// TaskState is the controller's view of one task, for status.
type TaskState struct {
	Name string
	// Spec is the desired spec; Wanted says whether the config has one.
	Spec   schema.TaskSpec
	Wanted bool
	// Running is what runs, if anything; Started when it was started;
	// Applied the spec it was given, when known.
	Running *Observed
	Applied *schema.TaskSpec
	// OneOff is the last one-off action asked of it (mmctl restart, stop,
	// start), if any.
	OneOff  *LastOneOff
	Started time.Time
	// Stopping: a stop is under way.
	Stopping                       bool
	Generation, ObservedGeneration int64
	Failures                       int
	NextTry                        time.Time
	LastError                      string
	Hold                           *Hold
	// Restarts counts unasked exits within the restart window.
	Restarts int
}

// Tasks lists every task that is wanted, runs or is held, by name.
func (c *Controller) Tasks() []TaskState {
	now := c.clock.Now()
	out := make([]TaskState, 0, len(c.tasks))
	for name, st := range c.tasks {
		spec, wanted := c.desired.Tasks[name]
		ts := TaskState{Name: name, Spec: spec, Wanted: wanted, Started: st.started, Stopping: st.stopping,
			Generation: st.generation, ObservedGeneration: st.observedGeneration, Failures: st.retry.failures,
			NextTry: st.retry.next, LastError: st.retry.lastErr, Restarts: st.recentRestarts(now, c.timing.RestartWindow)}
		if st.running != nil {
			o := *st.running
			ts.Running = &o
		}
		if st.applied != nil {
			a := *st.applied
			ts.Applied = &a
		}
		if st.oneOff != nil {
			o := *st.oneOff
			ts.OneOff = &o
		}
		if st.hold != nil {
			h := *st.hold
			ts.Hold = &h
			ts.LastError = h.Message
		}
		out = append(out, ts)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Monitored is what monitoring needs of one task, without the copies
// Tasks makes: see Each.
type Monitored struct {
	Name string
	// Running: something runs under the name; External where.
	Running, External bool
	Stopping          bool
	// Held is why the task is held, if it is.
	Held     string
	Restarts int
	// Wanted: the config has a spec for it; Ready its Ready condition when
	// what runs actually runs (as Conditions(Running && !Stopping) says).
	Wanted, Ready bool
}

// Each calls f for every task Tasks lists, in no order, with no copy of
// specs and no allocation: monitoring's pass over every task each sample.
func (c *Controller) Each(f func(Monitored)) {
	now := c.clock.Now()
	for name, st := range c.tasks {
		f(c.monitored(name, st, now))
	}
}

// Monitor is one task's Monitored; ok is false for a name Tasks does not
// list.
func (c *Controller) Monitor(name string) (m Monitored, ok bool) {
	st := c.tasks[name]
	if st == nil {
		return Monitored{}, false
	}
	return c.monitored(name, st, c.clock.Now()), true
}

func (c *Controller) monitored(name string, st *taskState, now time.Time) Monitored {
	spec, wanted := c.desired.Tasks[name]
	m := Monitored{Name: name, Running: st.running != nil, Stopping: st.stopping, Wanted: wanted,
		Restarts: st.recentRestarts(now, c.timing.RestartWindow)}
	if st.running != nil {
		m.External = st.running.External
	}
	if st.hold != nil {
		m.Held = st.hold.Why
	}
	m.Ready = ready(wanted, spec, st.running, st.hold, m.Running && !m.Stopping)
	return m
}

// ready is the Ready condition's status, as Conditions sets it: the task
// runs the spec the config asks for, or is disabled and stopped as it
// says, and was not stopped on purpose.
func ready(wanted bool, spec schema.TaskSpec, obs *Observed, hold *Hold, running bool) bool {
	if hold != nil && hold.Why == HoldStopped {
		return false
	}
	return wanted && spec.Disabled && !running || running && obs != nil && wanted && obs.Hash == spec.Hash
}

// recentRestarts counts the restarts in the window, forgetting older ones.
func (st *taskState) recentRestarts(now time.Time, window time.Duration) int {
	st.restarts = recent(st.restarts, now, window)
	return len(st.restarts)
}

// recent drops the times (oldest first) that are more than window ago.
func recent(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > window {
		i++
	}
	return ts[i:]
}

// Condition is one of a task's conditions, as Kubernetes reports them.
type Condition struct {
	Type    string
	Status  bool
	Reason  string
	Message string
}

// Conditions are Ready, Reconciling and Stalled for a task; running says
// whether it actually runs now (a process may have died unnoticed yet).
func (t TaskState) Conditions(running bool) []Condition {
	upToDate := running && t.Running != nil && t.Wanted && t.Running.Hash == t.Spec.Hash
	var conds []Condition
	switch {
	case t.Wanted && t.Spec.Disabled && !running:
		conds = append(conds, Condition{"Ready", true, "Disabled", "stopped as the config says; state kept"})
	case upToDate:
		conds = append(conds, Condition{"Ready", true, "Applied", ""})
	default:
		conds = append(conds, Condition{Type: "Ready"})
	}
	pending := t.Wanted && !t.Spec.Disabled && !upToDate || !t.Wanted && running
	switch {
	case t.Hold != nil && t.Hold.Why == HoldStopped:
		// Stopped on purpose: nothing is stuck.
		conds[0] = Condition{"Ready", false, HoldStopped, t.Hold.Message + "; mmctl start starts it"}
		conds = append(conds, Condition{Type: "Reconciling"}, Condition{Type: "Stalled"})
	case t.Hold != nil:
		conds = append(conds, Condition{Type: "Reconciling"}, Condition{"Stalled", true, t.Hold.Why, t.Hold.Message})
	case pending && t.LastError != "":
		conds = append(conds, Condition{"Reconciling", true, "Retrying",
			fmt.Sprintf("attempt %d failed: %s; next at %s", t.Failures, t.LastError, t.NextTry.Format(time.RFC3339))},
			Condition{Type: "Stalled"})
	default:
		conds = append(conds, Condition{Type: "Reconciling", Status: pending}, Condition{Type: "Stalled"})
	}
	return conds
}
