package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/multimodule/multimodule/internal/control"

	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/runtime/external"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/statestore"
	"github.com/multimodule/multimodule/transit"
)

// externalPoll is how often the daemon looks whether the external
// processes it adopted (not its children) are alive.
const externalPoll = 500 * time.Millisecond

// ConfirmRemovalDelay is how long the daemon waits before a task whose
// definition vanished from the config dir is stopped: the directory is
// loaded again then, and only if it still lacks the task is it stopped
// (an editor may be between deleting and rewriting a file).
const ConfirmRemovalDelay = 200 * time.Millisecond

// daemon is one running multimodule. Its state is owned by the goroutine
// running serve: control requests, config changes and retries reach it as
// messages on channels, one at a time.
type daemon struct {
	kinds      Kinds
	o          *daemonOptions
	namespaces []string
	schema     *schema.Schema
	lock       *statestore.DirLock
	queueLock  *control.QueueLock // this daemon alone serves its control queue
	tr         *transit.Transit
	host       *runtime.Host
	in         *runtime.Inbound
	ch         *runtime.Channels
	watcher    *reconcile.Watcher
	started    time.Time

	control chan runtime.Message
	// closing is closed when the daemon stops taking control requests, so
	// the inbound never blocks handing one over.
	closing chan struct{}

	loaded *schema.Config // the last config that loaded
	// stateless are loaded's stateless tasks, which externals run too.
	stateless []external.NamedSpec
	desired   *schema.Config // loaded, with each external's hash covering its bundle
	observed  map[string]reconcile.Observed
	// externals are the external processes this daemon knows of.
	externals map[string]*externalProc
	// exitExternals: the shutdown stops the externals too.
	exitExternals bool
	// exited is signalled when an external this daemon started exits.
	exited chan struct{}
	tasks  map[string]*taskState
	// configErr is the last config load problem, for status; the tasks run
	// on the last good config meanwhile.
	configErr string

	retry   *time.Timer
	confirm *time.Timer
	// confirmHash is the content hash whose removals wait for confirmation.
	confirmHash string

	mon         *taskMonitor
	sampler     *time.Ticker
	sampleEvery time.Duration
	// tokens are the externals' secrets, by task (see external.Spec).
	tokens *tokens
	// draining are failsafed internal tasks still handing in what they
	// took; drained says when one is done.
	draining map[string]bool
	drained  chan drainResult
	// stopMetrics stops the Prometheus endpoint (--metrics-addr).
	stopMetrics func()
}

// taskState is the reconcile bookkeeping of one task name.
type taskState struct {
	// generation counts the changes of the task's desired spec;
	// observedGeneration is the generation the running task has applied.
	generation, observedGeneration int64
	specHash                       string

	failures int
	nextTry  time.Time
	lastErr  string
	held     bool
	// holdWhy is holdRetries or holdFailsafe.
	holdWhy   string
	heldSince time.Time
	// restarts are the times the task's process was restarted after a
	// crash, within restartWindow.
	restarts []time.Time
}

func newDaemon(k Kinds, o *daemonOptions, level slog.Level, stdout, stderr io.Writer) (*daemon, int, error) {
	d := &daemon{kinds: k, o: o, namespaces: strings.Split(o.namespaces, ","), started: time.Now(),
		control: make(chan runtime.Message, 64), closing: make(chan struct{}), observed: map[string]reconcile.Observed{},
		tasks: map[string]*taskState{}, externals: map[string]*externalProc{}, exited: make(chan struct{}, 1),
		retry: stoppedTimer(), confirm: stoppedTimer(), mon: newTaskMonitor(),
		tokens: &tokens{m: map[string]string{}}, draining: map[string]bool{}, drained: make(chan drainResult, 16)}
	var err error
	if d.schema, err = k.Schema(); err != nil {
		return nil, 1, err
	}
	cfg, err := d.load()
	if err != nil {
		return nil, 1, fmt.Errorf("config %s:\n%s", o.configDir, schema.Format(err))
	}
	if d.lock, err = statestore.LockDir(o.stateDir); err != nil {
		return nil, 1, err
	}
	fail := func(code int, err error) (*daemon, int, error) {
		if d.stopMetrics != nil {
			d.stopMetrics()
		}
		d.queueLock.Unlock()
		d.lock.Unlock()
		return nil, code, err
	}
	if d.tr, err = transit.Open(transit.Options{Dir: o.transitDir}); err != nil {
		return fail(1, err)
	}
	if d.queueLock, err = control.LockQueue(d.tr.Dir(), o.controlQueue, o.stateDir); err != nil {
		return fail(1, err)
	}
	d.host, err = runtime.NewHost(runtime.Options{
		StateDir: o.stateDir, OOB: o.oob, Level: level, Stdout: stdout, Stderr: stderr, Remote: d.tr,
	})
	if err != nil {
		return fail(2, err)
	}
	d.ch = d.host.Channels()
	if o.metricsAddr != "" {
		if d.stopMetrics, err = d.serveMetrics(o.metricsAddr); err != nil {
			return fail(1, err)
		}
	}
	d.in, err = runtime.NewInbound(d.host, d.tr, o.controlQueue+".doorbell", func(err error) {
		d.ch.Error.Error("inbound", "error", err)
	})
	if err != nil {
		return fail(1, err)
	}
	if err := d.in.ServeFunc(o.controlQueue, func(m runtime.Message) {
		select {
		case d.control <- m:
		case <-d.closing:
			d.ch.Log.Info("control request dropped: the daemon is shutting down", "request", m)
		}
	}); err != nil {
		return fail(1, err)
	}
	if err := d.in.ServeFunc(control.OOBQueue(o.controlQueue), d.handleOOB); err != nil {
		return fail(1, err)
	}
	d.watcher, err = reconcile.NewWatcher(o.configDir, reconcile.WatchOptions{
		OnError: func(err error) { d.ch.Error.Error("watching the config dir", "error", err) },
	})
	if err != nil {
		return fail(1, fmt.Errorf("watching %s: %w", o.configDir, err))
	}
	d.adoptExternals()
	d.setDesired(cfg)
	d.loadHeld()
	d.reconcile(false)
	return d, 0, nil
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// load reads and checks the config dir, kinds included.
func (d *daemon) load() (*schema.Config, error) {
	cfg, err := d.schema.Load(d.o.configDir)
	if err != nil {
		return nil, err
	}
	return cfg, d.checkKinds(cfg)
}

// checkKinds resolves every enabled task's kind, reporting all failures.
func (d *daemon) checkKinds(cfg *schema.Config) error {
	var errs []error
	for _, name := range cfg.Names() {
		t := cfg.Tasks[name]
		if t.Disabled {
			continue
		}
		_, factory, err := d.kinds.Registry.Resolve(t.Kind, d.namespaces)
		if err != nil {
			errs = append(errs, fmt.Errorf("task %s: %w", name, err))
			continue
		}
		if t.External && !isStateful(factory) {
			errs = append(errs, fmt.Errorf("task %s: external: true needs a stateful task; kind %s is stateless (it runs in every process anyway)", name, t.Kind))
		}
	}
	return errors.Join(errs...)
}

// serve runs until a signal or a cleanly_exit, then shuts down in order.
func (d *daemon) serve(sig <-chan os.Signal) int {
	ctx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() { d.watcher.Run(ctx); close(watchDone) }()
	d.in.Start()
	// Externals this daemon started are reaped by it, and their exits
	// reach it at once (d.exited); the poll is for adopted ones.
	watchExternals := time.NewTicker(externalPoll)
	defer watchExternals.Stop()
	d.sampler = time.NewTicker(d.sampleEvery)
	defer d.sampler.Stop()
	d.ch.Log.Info("multimodule running", "tasks", len(d.observed), "config", d.o.configDir,
		"state_dir", d.o.stateDir, "transit_dir", d.tr.Dir(), "control_queue", d.o.controlQueue, "pid", os.Getpid())
	reason := ""
	for reason == "" {
		select {
		case s := <-sig:
			reason = "signal " + s.String()
		case m := <-d.control:
			if d.handleControl(m) {
				reason = "cleanly_exit"
			}
		case <-d.watcher.Changes():
			d.reload(false, false)
		case <-d.confirm.C:
			d.reload(false, true)
		case <-d.retry.C:
			d.reconcile(false)
		case <-watchExternals.C:
			d.checkExternals()
		case <-d.exited:
			d.checkExternals()
		case <-d.sampler.C:
			d.sample()
		case r := <-d.drained:
			delete(d.draining, r.task)
			d.in.Release(r.task, r.err == nil)
			if r.err != nil {
				d.ch.Error.Error("failsafe: the task did not finish what it had taken", "task", r.task, "error", r.err)
			}
			d.reconcile(false)
		}
	}
	stopWatch()
	<-watchDone
	return d.shutdown(reason, sig)
}

// shutdown: stop taking messages from outside (they wait in their
// queues), then drain and save every task, then release the state dir.
func (d *daemon) shutdown(reason string, sig <-chan os.Signal) int {
	d.ch.Log.Info("shutting down", "reason", reason)
	close(d.closing)
	defer d.lock.Unlock()
	defer d.queueLock.Unlock()
	defer d.host.Close()
	if d.stopMetrics != nil {
		defer d.stopMetrics() // before the channels it logs to close
	}
	d.in.Stop()
	for name := range d.observed {
		d.in.Unserve(name)
	}
	d.in.Unserve(d.o.controlQueue)
	d.in.Unserve(control.OOBQueue(d.o.controlQueue))
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if d.exitExternals {
		for name := range d.externals {
			if err := d.stopExternal(ctx, name); err != nil {
				d.ch.Error.Error("stopping an external task", "task", name, "error", err)
			}
		}
	} else if len(d.externals) > 0 {
		d.ch.Log.Info("external tasks keep running", "count", len(d.externals))
	}
	// Failsafed tasks still handing in what they took finish first.
	for len(d.draining) > 0 {
		select {
		case r := <-d.drained:
			delete(d.draining, r.task)
			d.in.Release(r.task, r.err == nil)
		case <-ctx.Done():
			d.ch.Error.Error("failsafed tasks did not finish what they had taken", "tasks", len(d.draining))
			clear(d.draining)
		}
	}
	done := make(chan error, 1)
	go func() { done <- d.host.Shutdown(ctx) }()
	var err error
	select {
	case err = <-done:
	case s := <-sig:
		d.ch.Error.Error("second signal: exiting without finishing the shutdown", "signal", s.String())
		return 130
	}
	// What the tasks handled leaves their queues; after an incomplete
	// shutdown it stays, to be handled again (at least once).
	for name := range d.observed {
		d.in.Release(name, err == nil)
	}
	if err != nil {
		d.ch.Error.Error("shutdown incomplete", "error", err)
		return 1
	}
	d.ch.Log.Info("stopped cleanly")
	return 0
}

// reload loads the config dir and, if it loads, makes it the desired
// state and reconciles. A dir that does not load changes nothing that
// runs. Removals wait for a confirming reload (confirming says this is
// one).
func (d *daemon) reload(force, confirming bool) ([]reconcile.Result, error) {
	cfg, err := d.load()
	if err != nil {
		d.configErr = strings.TrimSpace(schema.Format(err))
		d.ch.Error.Error("config not applied: the running tasks are unchanged", "error", d.configErr)
		return nil, fmt.Errorf("config not applied:\n%s", d.configErr)
	}
	if d.configErr != "" {
		d.ch.Log.Info("config loads again", "config", d.o.configDir)
	}
	d.configErr = ""
	if !force && !confirming && d.desired != nil && cfg.SourceHash == d.desired.SourceHash {
		return nil, nil
	}
	d.setDesired(cfg)
	if confirming && cfg.SourceHash == d.confirmHash {
		d.confirmHash = ""
		return d.reconcile(false), nil
	}
	return d.reconcile(true), nil
}

// setDesired records cfg and bumps the generation of every task whose
// spec changed. A changed spec also gives a failing or held task a fresh
// start.
func (d *daemon) setDesired(loaded *schema.Config) {
	d.loaded = loaded
	d.stateless = d.statelessOf(loaded)
	cfg := withBundles(loaded, d.stateless)
	d.desired = cfg
	released := false
	for name, spec := range cfg.Tasks {
		st := d.tasks[name]
		if st == nil {
			st = &taskState{}
			d.tasks[name] = st
		}
		if st.specHash != spec.Hash {
			st.specHash = spec.Hash
			st.generation++
			d.checkLimits(name, spec)
			if st.held {
				d.ch.Log.Info("held task released: its config changed", "task", name)
				released = true
			}
			st.failures, st.held, st.nextTry, st.lastErr = 0, false, time.Time{}, ""
		}
	}
	if released {
		d.saveHeld()
	}
	every := seconds(cfg.Daemon.SampleEvery)
	if every <= 0 {
		every = time.Second
	}
	if every != d.sampleEvery {
		d.sampleEvery = every
		if d.sampler != nil {
			d.sampler.Reset(every)
		}
	}
}

// plan is what reconciling now would do: the plain plan, with the actions
// of held tasks shown as held, and (when deferRemovals) the stops of
// removed tasks left for the confirming reload.
func (d *daemon) plan(deferRemovals bool) (apply []reconcile.Action, shown []reconcile.Action, removalsWaiting bool) {
	now := time.Now()
	for _, a := range reconcile.Plan(d.desired.Tasks, d.observed) {
		name := a.Task()
		if stop, ok := a.(reconcile.Stop); ok && deferRemovals && d.desired.Tasks[name].Name == "" {
			removalsWaiting = true
			shown = append(shown, stop)
			continue
		}
		if p := d.externals[name]; d.draining[name] || p != nil && p.failsafed {
			shown = append(shown, a)
			continue // a failsafed task still finishing what it took
		}
		if st := d.tasks[name]; st != nil {
			if st.held {
				shown = append(shown, reconcile.Held{Name: name, Reason: control.HoldLabel(st.holdWhy, st.lastErr)})
				continue
			}
			if now.Before(st.nextTry) {
				shown = append(shown, a)
				continue // its backoff has not run out
			}
		}
		apply = append(apply, a)
		shown = append(shown, a)
	}
	return apply, shown, removalsWaiting
}

// reconcile applies the plan now, with per-task backoff on failure.
func (d *daemon) reconcile(deferRemovals bool) []reconcile.Result {
	apply, _, waiting := d.plan(deferRemovals)
	if waiting {
		d.confirmHash = d.desired.SourceHash
		d.confirm.Reset(ConfirmRemovalDelay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	results := reconcile.Apply(ctx, d, apply)
	for _, r := range results {
		name := r.Action.Task()
		st := d.tasks[name]
		if r.Err == nil {
			d.ch.Log.Info("reconcile", "action", r.Action.String())
			if st != nil {
				st.observedGeneration = st.generation
				// An external that started may still crash: its failures
				// are forgiven once it has run for a while (checkExternals).
				if !d.observed[name].External {
					st.failures, st.lastErr, st.nextTry = 0, "", time.Time{}
				}
			}
			continue
		}
		if st == nil { // a task being removed
			d.ch.Error.Error("reconcile", "action", r.Action.String(), "error", r.Err)
			continue
		}
		d.noteFailure(name, st, fmt.Errorf("%s: %w", r.Action, r.Err))
	}
	d.scheduleRetry()
	return results
}

// noteFailure counts a failure of a task's change (or a crash of its
// external process) and sets its next try with backoff, or holds it.
func (d *daemon) noteFailure(name string, st *taskState, err error) {
	st.failures++
	st.lastErr = err.Error()
	rs := d.desired.Tasks[name].Restart
	delay := backoff(rs, st.failures)
	st.nextTry = time.Now().Add(delay)
	if rs.HoldAfter > 0 && st.failures >= rs.HoldAfter {
		d.hold(name, st, holdRetries, err.Error())
		return
	}
	d.ch.Error.Error("reconcile", "task", name, "error", err, "failures", st.failures, "retry_in", delay)
}

// backoff doubles from restart.initial up to restart.max seconds.
func backoff(r schema.Restart, failures int) time.Duration {
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
	return seconds(min(s, maxDelay))
}

func (d *daemon) scheduleRetry() {
	var next time.Time
	for _, st := range d.tasks {
		if !st.held && !st.nextTry.IsZero() && (next.IsZero() || st.nextTry.Before(next)) {
			next = st.nextTry
		}
	}
	d.retry.Stop()
	if !next.IsZero() {
		d.retry.Reset(time.Until(next))
	}
}

// --- reconcile.Target ---

// seconds turns the config's seconds into a duration.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func intervals(t schema.TaskSpec) map[string]time.Duration {
	iv := make(map[string]time.Duration, len(t.Intervals))
	for k, sec := range t.Intervals {
		iv[k] = seconds(sec)
	}
	return iv
}

func (d *daemon) StartTasks(specs []schema.TaskSpec) []error {
	errs := make([]error, len(specs))
	var internal []schema.TaskSpec
	var idx []int
	for i, t := range specs {
		if t.External {
			errs[i] = d.spawnExternal(t)
			continue
		}
		internal = append(internal, t)
		idx = append(idx, i)
	}
	for j, err := range d.startInternal(internal) {
		errs[idx[j]] = err
	}
	for i, t := range specs {
		if errs[i] == nil {
			d.observed[t.Name] = reconcile.Observed{Name: t.Name, Kind: t.Kind, Hash: t.Hash, External: t.External}
		}
	}
	return errs
}

func (d *daemon) StopTask(ctx context.Context, name string) error {
	var err error
	if d.observed[name].External {
		err = d.stopExternal(ctx, name)
	} else {
		err = d.stopInternal(ctx, name)
	}
	if err != nil {
		return err
	}
	delete(d.observed, name)
	if _, wanted := d.desired.Tasks[name]; !wanted {
		delete(d.tasks, name)
		d.tokens.set(name, "")
	}
	return nil
}

// MigrateTask moves a task between the daemon and its own process. The old
// host stops taking messages (they wait in the queue), handles what it
// has taken and saves; only then does the new host load the state and
// take over the same queue: nothing is lost, repeated or reordered.
func (d *daemon) MigrateTask(ctx context.Context, t schema.TaskSpec) error {
	var err error
	if t.External {
		if err = d.stopInternal(ctx, t.Name); err == nil {
			delete(d.observed, t.Name)
			err = d.spawnExternal(t)
		}
	} else {
		if err = d.stopExternal(ctx, t.Name); err == nil {
			delete(d.observed, t.Name)
			err = d.startInternal([]schema.TaskSpec{t})[0]
		}
	}
	if err != nil {
		return err
	}
	d.observed[t.Name] = reconcile.Observed{Name: t.Name, Kind: t.Kind, Hash: t.Hash, External: t.External}
	return nil
}

func (d *daemon) ReconfigureTask(ctx context.Context, t schema.TaskSpec) error {
	var err error
	if t.External {
		err = d.reconfigureExternal(t)
	} else {
		err = d.host.Reconfigure(ctx, t.Name, t.Config, intervals(t))
	}
	if err != nil {
		return err
	}
	o := d.observed[t.Name]
	o.Hash = t.Hash
	d.observed[t.Name] = o
	return nil
}
