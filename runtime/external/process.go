package external

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

// ProcessOptions are what the process of one external task (-m TASK) is
// started with.
type ProcessOptions struct {
	Task                      string
	StateDir, TransitDir, OOB string
	ControlQueue              string // the daemon's; reports and records go to its OOB queue
	Level                     slog.Level
	// Resolve finds a kind in this binary's registry, searching the
	// daemon's namespaces (the daemon passes its registry's Resolve with
	// its -p namespaces bound).
	Resolve func(kind string) (string, runtime.Factory, error)
	// ShutdownTimeout bounds draining on SIGTERM and on a config change
	// that stops or reconfigures a task (default 10s).
	ShutdownTimeout time.Duration
}

// RunProcess is the process of one external task (-m TASK): it hosts the
// task and, to handle what its own tasks send them, the stateless tasks
// (without their timers, which run in the daemon), takes the task's
// messages from its queue, and on a signal from sig stops taking them,
// drains, saves and exits. It returns the exit code.
func RunProcess(o ProcessOptions, sig <-chan os.Signal, stdout, stderr io.Writer) int {
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "multimodule -m %s: %v\n", o.Task, err)
		return code
	}
	b, err := os.ReadFile(SpecPath(o.StateDir, o.Task))
	if err != nil {
		return fail(1, fmt.Errorf("no spec from the daemon: %w", err))
	}
	var spec Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fail(1, fmt.Errorf("spec %s: %w", SpecPath(o.StateDir, o.Task), err))
	}
	// The alert channel exists only once the host does; a send before
	// that cannot happen (no task runs yet).
	var alerts atomic.Pointer[slog.Logger]
	tr, err := transit.Open(transit.Options{Dir: o.TransitDir, MaxQueues: spec.MaxQueues,
		OnQueueLimit: func(queue string, limit int) {
			if a := alerts.Load(); a != nil {
				queueLimitAlert(a, o.Task, queue, limit)
			}
		}})
	if err != nil {
		return fail(1, err)
	}
	toDaemon, err := tr.Queue(control.OOBQueue(o.ControlQueue))
	if err != nil {
		return fail(1, err)
	}
	// Everything sent to the daemon is signed, and waits only briefly for
	// room: a daemon that is down or behind must not slow the task. After
	// a failure, sends do not wait at all for a second.
	var failedAt atomic.Int64
	sendDaemon := func(m runtime.Message) error {
		m[control.FromKey], m[control.TokenKey] = o.Task, spec.Token
		wait := 20 * time.Millisecond
		if time.Since(time.Unix(0, failedAt.Load())) < time.Second {
			wait = 0
		}
		err := toDaemon.SendWithin(m, wait)
		if err != nil {
			failedAt.Store(time.Now().UnixNano())
		}
		return err
	}
	host, err := runtime.NewHost(runtime.Options{StateDir: o.StateDir, OOB: o.OOB, Level: o.Level,
		Stdout: stdout, Stderr: stderr, Remote: tr, OOBForward: sendDaemon,
		DeadLetter: func(q, reason string, m runtime.Message) error { return tr.DeadLetter(q, reason, m) }})
	if err != nil {
		return fail(2, err)
	}
	defer host.Close()
	alerts.Store(host.Channels().Alert)
	x := &process{o: o, host: host, tr: tr, ch: host.Channels(), running: map[string]string{}, token: spec.Token}
	x.reportEvery.Store(int64(reportInterval(spec)))
	// Record ourselves: a daemon that died between starting us and
	// recording us must still find and adopt us.
	if start, err := StartTime(os.Getpid()); err == nil {
		p := Process{Identity: Identity{Pid: os.Getpid(), Start: start}, Hash: spec.Hash(), Kind: spec.Task.Spec.Kind}
		if err := writeJSONFile(PidPath(o.StateDir, o.Task), p); err != nil {
			x.ch.Error.Error("recording this process", "task", o.Task, "error", err)
		}
	}
	if err := x.apply(spec); err != nil {
		return fail(1, err)
	}
	q, err := tr.Queue(o.Task)
	if err != nil {
		return fail(1, err)
	}
	// Senders ring this process's doorbell after each send, so that it
	// can wait for messages it only peeks at (see receive).
	bell, err := tr.Bell(o.Task + ".doorbell")
	if err == nil {
		err = tr.SetDoorbell(o.Task, bell.Name())
	}
	if err != nil {
		return fail(1, err)
	}
	x.ch.Log.Info("external task running", "task", o.Task, "pid", os.Getpid())

	// rang wakes the receive loop: a ring of the doorbell, or a delivery
	// whose lineage settled (it can leave the queue).
	rang := make(chan struct{}, 1)
	ring := func() {
		select {
		case rang <- struct{}{}:
		default:
		}
	}
	rx := runtime.NewReceiver(host, q, o.Task, runtime.ReceiverOptions{
		OnSettled: ring,
		Yield:     true,
		Takes:     isConfig,
		Take:      func(m runtime.Message) { x.configure(configOf(m)) },
		OnError:   func(err error) { x.ch.Error.Error("receiving", "task", o.Task, "error", err) },
	})
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() { defer close(done); x.receive(rx, bell, rang, &stopping) }()
	stopReports := make(chan struct{})
	defer close(stopReports)
	go x.report(sendDaemon, stopReports)
	var s os.Signal
	select {
	case s = <-sig:
	case <-done: // the queue failed
	}
	stopping.Store(true)
	if err := bell.Wake(); err != nil {
		x.ch.Error.Error("waking the doorbell waiter", "task", o.Task, "error", err)
	}
	<-done
	x.ch.Log.Info("external task stopping", "task", o.Task, "signal", fmt.Sprint(s))
	ctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	err = host.Shutdown(ctx)
	// What was handled leaves the queue; after an incomplete shutdown it
	// stays there, to be handled again by the next process.
	if rerr := rx.Release(err == nil); rerr != nil {
		x.ch.Error.Error("taking handled messages off the queue", "task", o.Task, "error", rerr)
	}
	tr.ClearDoorbell(o.Task)
	tr.Remove(bell.Name())
	if err != nil {
		x.ch.Error.Error("shutdown incomplete", "task", o.Task, "error", err)
		return 1
	}
	return 0
}

// process is the state of an external process (owned by its receive
// goroutine after start).
type process struct {
	o       ProcessOptions
	host    *runtime.Host
	tr      *transit.Transit
	ch      *runtime.Channels
	running map[string]string // task -> applied spec hash
	token   string
	// reportEvery is the time between two reports to the daemon.
	reportEvery atomic.Int64
}

// queueLimitAlert says on the alert channel that task's process has
// created as many queues on demand as it may: further sends to new names
// fail with transit.ErrTooManyQueues (said once, until it is hit again).
func queueLimitAlert(alert *slog.Logger, task, queue string, limit int) {
	alert.Warn("too many queues created on demand: sends to new queue names fail",
		"task", task, "metric", "queues_created", "value", limit, "threshold", limit, "level", "severe",
		"queue", queue)
}

func reportInterval(spec Spec) time.Duration {
	if spec.ReportEvery <= 0 {
		return time.Second
	}
	return schema.Seconds(spec.ReportEvery)
}

// report sends the daemon the task's counters every reportEvery, which it
// turns into the task's rates and levels. An idle task reports less: once
// its counters stop changing, two more reports (the daemon needs two
// samples to see the rates back at zero), then one in ten.
func (x *process) report(send func(runtime.Message) error, stop <-chan struct{}) {
	var last runtime.TaskStatus
	quiet := 0
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(x.reportEvery.Load())):
		}
		for _, s := range x.host.Status() {
			if s.Name != x.o.Task {
				continue
			}
			if s.MessagesIn == last.MessagesIn && s.MessagesOut == last.MessagesOut && s.Failures == last.Failures &&
				s.Depth == last.Depth && s.Busy == last.Busy {
				quiet++
			} else {
				quiet = 0
			}
			last = s
			if quiet > 2 && quiet%10 != 0 {
				continue
			}
			// A failed send is counted by the daemon's silence; the next
			// report carries the same counters.
			_ = send(runtime.Message{control.ReportKey: map[string]any{"at": float64(time.Now().UnixNano()) / 1e9, "busy_s": s.Busy.Seconds(),
				"messages_in": float64(s.MessagesIn), "messages_out": float64(s.MessagesOut),
				"failures": float64(s.Failures), "depth": float64(s.Depth)}})
		}
	}
}

// receive moves messages from the task's queue to the task through rx,
// which applies config messages in order with them and leaves each in the
// queue until the task has handled it, so a SIGKILL loses none (they are
// handled again by the next process: at least once). It waits for a ring
// on bell (or a safety tick), leaves messages in the queue while the task
// is at the high-water mark, and returns when stopping is set (a Wake of
// bell makes a waiting receive return).
func (x *process) receive(rx *runtime.Receiver, bell *transit.Queue, rang chan struct{}, stopping *atomic.Bool) {
	ring := func() {
		select {
		case rang <- struct{}{}:
		default:
		}
	}
	go func() {
		for !stopping.Load() {
			d, err := bell.Receive(true)
			if err != nil {
				time.Sleep(100 * time.Millisecond) // do not spin on a broken queue
			}
			// The queue dead-letters junk (an odd mtype); a message
			// sent to the doorbell itself is kept there too.
			for _, m := range d.Msgs {
				if err := x.tr.DeadLetter(bell.Name(), "a message on a doorbell, which carries only rings", m); err != nil {
					x.ch.Error.Error("doorbell", "task", x.o.Task, "error", err)
				}
			}
			ring()
		}
	}()
	tick := time.NewTicker(time.Second) // a lost ring is not a stall
	defer tick.Stop()
	wait := func(d time.Duration) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-rang:
		case <-tick.C:
		case <-t.C:
		}
	}
	// After a message, look again soon, less often the longer the queue
	// stays empty, then only on a ring: a busy task does not wait for
	// rings (a sender notices a new doorbell only within a second), an
	// idle one costs nothing.
	const firstLook, lastLook = 100 * time.Microsecond, 50 * time.Millisecond
	look := firstLook
	for !stopping.Load() {
		_, err := rx.Next()
		switch {
		case err == nil:
			look = firstLook
		case errors.Is(err, runtime.ErrHighWater):
			wait(5 * time.Millisecond)
		case errors.Is(err, transit.ErrEmpty):
			if look > lastLook {
				wait(time.Hour)
			} else {
				wait(look)
				look *= 2
			}
		default:
			x.ch.Error.Error("receiving", "task", x.o.Task, "error", err)
			if errors.Is(err, transit.ErrNoQueue) {
				return
			}
			wait(100 * time.Millisecond)
		}
	}
}

// configure applies a config message from the daemon (err: it could not
// be read).
func (x *process) configure(spec Spec, err error) {
	switch {
	case err != nil:
	case spec.Token != x.token || spec.Task.Name != x.o.Task:
		err = errors.New("config message without this process's token or for another task: refused")
	default:
		x.reportEvery.Store(int64(reportInterval(spec)))
		x.tr.SetMaxQueues(spec.MaxQueues)
		err = x.apply(spec)
	}
	if err != nil {
		x.ch.Error.Error("config from the daemon not applied", "task", x.o.Task, "error", err)
	}
}

// apply makes the process run exactly what spec says. The stateless tasks
// run without their timers: the daemon's copies fire them, once.
func (x *process) apply(spec Spec) error {
	want := map[string]schema.TaskSpec{}
	for _, ns := range append([]NamedSpec{spec.Task}, spec.Stateless...) {
		ns.Spec.Name, ns.Spec.Hash = ns.Name, ns.Hash
		want[ns.Name] = ns.Spec
	}
	ctx, cancel := context.WithTimeout(context.Background(), x.o.ShutdownTimeout)
	defer cancel()
	var errs []error
	for name := range x.running {
		if _, ok := want[name]; !ok {
			errs = append(errs, x.host.Stop(ctx, name))
			delete(x.running, name)
		}
	}
	var starts []runtime.TaskSpec
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t := want[name]
		hash, running := x.running[name]
		switch {
		case running && hash == t.Hash:
		case running:
			if err := x.host.Reconfigure(ctx, name, t.Config, t.IntervalDurations()); err != nil {
				errs = append(errs, fmt.Errorf("task %s: %w", name, err))
				continue
			}
			x.running[name] = t.Hash
		default:
			kind, factory, err := x.o.Resolve(t.Kind)
			if err != nil {
				errs = append(errs, fmt.Errorf("task %s: %w", name, err))
				continue
			}
			starts = append(starts, runtime.TaskSpec{Name: name, Kind: kind, New: factory, Config: t.Config,
				Intervals: t.IntervalDurations(), NoTimers: name != spec.Task.Name})
		}
	}
	for i, err := range x.host.StartAll(starts) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		x.running[starts[i].Name] = want[starts[i].Name].Hash
	}
	return errors.Join(errs...)
}
