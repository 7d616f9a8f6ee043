package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/statestore"
	"github.com/multimodule/multimodule/transit"
)

// externalPoll is how often the daemon looks whether the external
// processes it adopted (not its children) are alive.
const externalPoll = 500 * time.Millisecond

// daemon is one running multimodule: the wiring of its parts and the
// owner goroutine (serve). The controller, the monitor's state and the
// config error belong to that goroutine; everything else reaches it as a
// message on a channel.
type daemon struct {
	o      *daemonOptions
	schema *schema.Schema
	ch     *runtime.Channels
	lock   *statestore.DirLock
	// queueLock: this daemon alone serves its control queue.
	queueLock *control.QueueLock
	tasks     *hosting
	ctl       *reconcile.Controller
	watcher   *reconcile.Watcher
	mon       *monitoring
	started   time.Time

	// intake carries the control queue's requests to the owner.
	intake *intake
	// cfg is the config dir's loading.
	cfg configState
	// exitExternals: the shutdown stops the externals too.
	exitExternals bool
	// stopMetrics stops the Prometheus endpoint (--metrics-addr).
	stopMetrics func()
}

// configState is the loading of the config dir (the owner's).
type configState struct {
	loads   *loader
	resolve func(kind string) (string, runtime.Factory, error)
	// err is the last config load problem, for status; the tasks run on
	// the last good config meanwhile.
	err string
	// counts are what Prometheus reads of the loads.
	counts loadCounts
}

// loadCounts count config loads, for Prometheus (atomic: it reads them
// from its own goroutine).
type loadCounts struct {
	// errors are loads that failed or timed out; reloads loads applied
	// after the first; generation the configs applied so far.
	errors, reloads, generation atomic.Uint64
	// ready is, by task, whether it runs its current spec (Ready True).
	ready atomic.Pointer[map[string]bool]
}

func newDaemon(k Kinds, o *daemonOptions, level slog.Level, stdout, stderr io.Writer) (_ *daemon, code int, err error) {
	resolve := resolver(k.Registry, strings.Split(o.namespaces, ","))
	d := &daemon{o: o, started: time.Now(), cfg: configState{loads: newLoader(o.loadTimeout), resolve: resolve}}
	if d.schema, err = k.Schema(); err != nil {
		return nil, 1, err
	}
	// The watcher is armed before the first load: an edit made while it
	// runs is seen and loaded after it (the first hash is taken now).
	d.watcher, err = reconcile.NewWatcher(o.configDir, reconcile.WatchOptions{
		OnError: func(err error) { d.ch.Error.Error("watching the config dir", "error", err) },
	})
	if err != nil {
		return nil, 1, fmt.Errorf("watching %s: %w", o.configDir, err)
	}
	// Until serve runs it, nothing else closes it.
	cleanups := []func(){func() { d.watcher.Close() }}
	defer func() {
		if err != nil {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
		}
	}()
	cfg, err := d.firstLoad()
	if err != nil {
		return nil, 1, err
	}
	lock, err := statestore.LockDir(o.stateDir)
	if err != nil {
		return nil, 1, err
	}
	d.lock = lock
	// What was set up is undone when a later step fails.
	cleanups = append(cleanups, func() { lock.Unlock() })
	var qlimit queueLimit
	tr, err := transit.Open(qlimit.transitOptions(o.transitDir, cfg))
	if err != nil {
		return nil, 1, err
	}
	queueLock, err := control.LockQueue(tr.Dir(), o.controlQueue, o.stateDir)
	if err != nil {
		return nil, 1, err
	}
	d.queueLock = queueLock
	cleanups = append(cleanups, func() { queueLock.Unlock() })
	host, err := runtime.NewHost(runtime.Options{
		StateDir: o.stateDir, OOB: o.oob, Level: level, Stdout: stdout, Stderr: stderr, Remote: tr,
		DeadLetter: func(q, reason string, m runtime.Message) error { return tr.DeadLetter(q, reason, m) },
	})
	if err != nil {
		return nil, 2, err
	}
	cleanups = append(cleanups, func() { host.Close() })
	d.ch = host.Channels()
	qlimit.alert.Store(d.ch.Alert)
	d.mon = newMonitoring(d.ch)
	if o.metricsAddr != "" {
		if d.stopMetrics, err = d.mon.serveMetrics(o.metricsAddr, tr, &d.cfg.counts); err != nil {
			return nil, 1, err
		}
		cleanups = append(cleanups, d.stopMetrics)
	}
	in, err := runtime.NewInbound(host, tr, o.controlQueue+".doorbell", func(err error) {
		d.ch.Error.Error("inbound", "error", err)
	})
	if err != nil {
		return nil, 1, err
	}
	d.tasks = newHosting(o, host, in, tr, resolve)
	d.intake = newIntake(d.ch, tr, o.controlQueue)
	if err := in.ServeFunc(o.controlQueue, d.intake.take); err != nil {
		return nil, 1, err
	}
	if err := in.ServeFunc(control.OOBQueue(o.controlQueue), d.mon.oobHandler(d.tasks.ext.sup)); err != nil {
		return nil, 1, err
	}
	d.ctl = reconcile.NewController(d.tasks, reconcile.SystemClock{},
		reconcile.Loggers{Log: d.ch.Log, Error: d.ch.Error, Alert: d.ch.Alert},
		reconcile.HoldFile(filepath.Join(o.stateDir, "held.json")), reconcile.Timing{})
	for _, obs := range d.tasks.adopt() {
		d.ctl.Adopt(obs)
		d.intake.noteTasks([]string{obs.Name})
	}
	d.apply(cfg, reconcile.Watched)
	d.cfg.counts.generation.Add(1)
	return d, 0, nil
}

// resolver resolves a config's kind names in the daemon's namespaces.
func resolver(reg *runtime.Registry, namespaces []string) func(kind string) (string, runtime.Factory, error) {
	return func(kind string) (string, runtime.Factory, error) { return reg.Resolve(kind, namespaces) }
}

// load reads and checks the config dir, kinds included: every enabled
// task's kind must resolve, and only stateful kinds may be external.
func load(s *schema.Schema, dir string, resolve func(string) (string, runtime.Factory, error)) (*schema.Config, error) {
	cfg, err := s.Load(dir)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, name := range cfg.Names() {
		t := cfg.Tasks[name]
		if t.Disabled {
			continue
		}
		_, factory, err := resolve(t.Kind)
		if err != nil {
			errs = append(errs, fmt.Errorf("task %s: %w", name, err))
			continue
		}
		if t.External && !isStateful(factory) {
			errs = append(errs, fmt.Errorf("task %s: external: true needs a stateful task; kind %s is stateless (it runs in every process anyway)", name, t.Kind))
		}
	}
	return cfg, errors.Join(errs...)
}

// isStateful reports whether a kind's tasks are Stateful.
func isStateful(factory runtime.Factory) bool {
	_, ok := factory().(runtime.Stateful)
	return ok
}

// apply hands a loaded config to the controller and the parts that follow
// it (the stateless tasks every external runs, the monitor's limits).
func (d *daemon) apply(cfg *schema.Config, kind reconcile.LoadKind) []reconcile.Result {
	d.intake.noteTasks(cfg.Names())
	d.tasks.setStateless(cfg)
	d.mon.configure(cfg)
	results := d.ctl.Load(cfg, kind)
	d.tasks.pushBundles()
	return results
}

// serve runs the owner goroutine until a signal or a cleanly_exit, then
// shuts down in order.
func (d *daemon) serve(sig <-chan os.Signal) int {
	ctx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() { d.watcher.Run(ctx); close(watchDone) }()
	d.tasks.in.Start()
	// Externals this daemon started are reaped by it, and their exits
	// reach it at once (Events); the poll is for adopted ones.
	poll := time.NewTicker(externalPoll)
	defer poll.Stop()
	sampler := time.NewTicker(d.mon.every)
	defer sampler.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	d.ch.Log.Info("multimodule running", "tasks", len(d.ctl.Observed()), "config", d.o.configDir,
		"state_dir", d.o.stateDir, "transit_dir", d.tasks.tr.Dir(), "control_queue", d.o.controlQueue, "pid", os.Getpid())
	reason := ""
	for reason == "" {
		d.rearm(wake)
		select {
		case s := <-sig:
			reason = "signal " + s.String()
		case m := <-d.intake.ch:
			if d.handleControl(m) {
				reason = "cleanly_exit"
			}
		case <-d.watcher.Changes():
			d.requestLoad(loadRequest{kind: reconcile.Watched, apply: true})
		case r := <-d.cfg.loads.results:
			d.loaded(r)
		case <-d.cfg.loads.freed:
			d.freed()
		case <-wake.C:
			if confirm, _ := d.ctl.Tick(); confirm {
				d.requestLoad(loadRequest{kind: reconcile.Confirming, apply: true})
			}
		case r := <-d.tasks.stopped:
			d.tasks.inflight--
			d.ctl.Stopped(r.task, r.err)
			d.tasks.pushBundles()
		case <-poll.C:
			d.tasks.ext.sup.Poll()
		case ev := <-d.tasks.ext.sup.Events():
			d.tasks.exited(ev, d.ctl)
			d.tasks.pushBundles()
		case <-sampler.C:
			d.sample()
			if d.mon.every != d.mon.sampledEvery {
				sampler.Reset(d.mon.every)
				d.mon.sampledEvery = d.mon.every
			}
		}
	}
	stopWatch()
	<-watchDone
	return d.shutdown(reason, sig)
}

// rearm sets the wake timer for the controller's next due work.
func (d *daemon) rearm(t *time.Timer) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	if next := d.ctl.NextWake(); !next.IsZero() {
		t.Reset(max(0, time.Until(next)))
	}
}

// ShutdownTimeout bounds the orderly shutdown: draining in-flight messages
// (each task then gets runtime.SaveGrace more to save its state).
const ShutdownTimeout = 10 * time.Second

// shutdown, in this order: stop taking messages from outside (they wait
// in their queues); stop the externals if asked; let the stops under way
// finish; drain and save every internal task; take what was handled off
// the queues; release the state dir. All of it within ShutdownTimeout; a
// second signal exits at once.
func (d *daemon) shutdown(reason string, sig <-chan os.Signal) int {
	d.ch.Log.Info("shutting down", "reason", reason)
	close(d.intake.closing)
	defer d.lock.Unlock()
	defer d.queueLock.Unlock()
	defer d.tasks.host.Close()
	if d.stopMetrics != nil {
		defer d.stopMetrics() // before the channels it logs to close
	}
	in := d.tasks.in
	// The inbound's goroutines end promptly unless its doorbell is jammed;
	// it is not worth more than the shutdown's bound, nor a second signal.
	switch d.await(sig, "stopping the inbound", ShutdownTimeout, in.Stop) {
	case awaitSignal:
		return 130
	case awaitTimeout:
		d.ch.Error.Error("the inbound did not stop within the shutdown timeout: going on", "timeout", ShutdownTimeout)
	}
	for _, w := range d.cfg.loads.waiting() {
		r := w.reply
		r.OK, r.Error = false, "the daemon is shutting down: not applied"
		d.reply(w.replyTo, r)
	}
	// Requests taken off the control queue and not yet seen are answered,
	// not left to their senders' timeouts.
	for drained := false; !drained; {
		select {
		case m := <-d.intake.ch:
			d.intake.refuse(m, "the daemon is shutting down")
		default:
			drained = true
		}
	}
	observed := d.ctl.Observed()
	stopping := map[string]bool{}
	for _, ts := range d.ctl.Tasks() {
		stopping[ts.Name] = ts.Stopping
	}
	for name, o := range observed {
		if !o.External {
			in.Unserve(name)
		}
	}
	in.Unserve(d.o.controlQueue)
	in.Unserve(control.OOBQueue(d.o.controlQueue))
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if d.exitExternals {
		for name, o := range observed {
			if o.External && !stopping[name] { // a stop under way ends by itself
				d.tasks.Stop(o, false)
			}
		}
	} else if n := len(d.tasks.ext.running); n > 0 {
		d.ch.Log.Info("external tasks keep running", "count", n)
	}
	for d.tasks.inflight > 0 {
		select {
		case r := <-d.tasks.stopped:
			d.tasks.inflight--
			if r.err != nil {
				d.ch.Error.Error("stopping a task", "task", r.task, "error", r.err)
			}
		case ev := <-d.tasks.ext.sup.Events():
			// The controller is done: it must not start anything again.
			if ev.Requested || d.tasks.gone[ev.Task] {
				delete(d.tasks.gone, ev.Task)
				d.tasks.inflight--
			}
		case s := <-sig:
			d.secondSignal(s, "waiting for tasks to stop")
			return 130
		case <-ctx.Done():
			d.ch.Error.Error("tasks still stopping when the shutdown timed out", "tasks", d.tasks.inflight)
			d.tasks.inflight = 0
		}
	}
	// The internal tasks get their own time to drain, whatever the stops
	// above took.
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancelDrain()
	var err error
	// Bounded by drainCtx itself; the margin covers the tasks' SaveGrace.
	switch d.await(sig, "draining and saving the internal tasks", ShutdownTimeout+runtime.SaveGrace+time.Second,
		func() { err = d.tasks.host.Shutdown(drainCtx) }) {
	case awaitSignal:
		return 130
	case awaitTimeout:
		d.ch.Error.Error("shutdown incomplete: the internal tasks did not finish draining and saving; their messages stay queued")
		return 1
	}
	// What the tasks handled leaves their queues; after an incomplete
	// shutdown it stays, to be handled again (at least once).
	for name, o := range observed {
		if !o.External {
			in.Release(name, err == nil)
		}
	}
	if err != nil {
		d.ch.Error.Error("shutdown incomplete", "error", err)
		return 1
	}
	d.ch.Log.Info("stopped cleanly", d.leftBehind()...)
	return 0
}

// leftBehind says where what was not handled is: in the queues of the
// tasks (handled when they run again) and among the dead letters.
func (d *daemon) leftBehind() []any {
	tr := d.tasks.tr
	left := map[string]uint64{}
	for name := range d.ctl.Desired().Tasks {
		if !tr.Exists(name) {
			continue
		}
		if q, err := tr.Lookup(name); err == nil {
			if st, err := q.Stats(); err == nil && st.Messages > 0 {
				left[name] = st.Messages
			}
		}
	}
	return []any{"left_in_task_queues", left, "dead_letters", tr.DeadLetters()}
}

// What await saw first.
const (
	awaitDone = iota
	awaitSignal
	awaitTimeout
)

// await runs slow beside the shutdown and waits for it, at most limit,
// and not at all past a second signal: every wait of the shutdown goes
// through here or selects on sig itself, so a second SIGTERM or SIGINT
// always exits at once. slow's results may be read only after awaitDone.
func (d *daemon) await(sig <-chan os.Signal, what string, limit time.Duration, slow func()) int {
	done := make(chan struct{})
	go func() { slow(); close(done) }()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-done:
		return awaitDone
	case s := <-sig:
		d.secondSignal(s, what)
		return awaitSignal
	case <-t.C:
		return awaitTimeout
	}
}

// secondSignal says why the shutdown ends unfinished.
func (d *daemon) secondSignal(s os.Signal, what string) {
	d.ch.Error.Error("second signal: exiting at once without finishing the shutdown; unhandled messages stay queued",
		"signal", s.String(), "while", what)
}
