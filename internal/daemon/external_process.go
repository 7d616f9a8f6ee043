package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/internal/control"

	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/runtime/external"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

// configKey marks a message carrying a new external.Spec.
const configKey = "config"

func asMessage(e external.Spec) (map[string]any, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	m, err := transit.DecodeJSON(b)
	if err != nil {
		return nil, err
	}
	return map[string]any{runtime.ControlKey: map[string]any{configKey: m}}, nil
}

func specFromMessage(v any) (external.Spec, error) {
	var e external.Spec
	b, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(b, &e)
	}
	return e, err
}

// runExternal is the process of one external task (-m TASK): it hosts the
// task and the stateless tasks, takes the task's messages from its queue,
// and on SIGTERM or SIGINT stops taking them, drains, saves and exits.
func runExternal(k Kinds, o *daemonOptions, level slog.Level, sig <-chan os.Signal, stdout, stderr io.Writer) int {
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "multimodule -m %s: %v\n", o.task, err)
		return code
	}
	b, err := os.ReadFile(external.SpecPath(o.stateDir, o.task))
	if err != nil {
		return fail(1, fmt.Errorf("no spec from the daemon: %w", err))
	}
	var spec external.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fail(1, fmt.Errorf("spec %s: %w", external.SpecPath(o.stateDir, o.task), err))
	}
	tr, err := transit.Open(transit.Options{Dir: o.transitDir})
	if err != nil {
		return fail(1, err)
	}
	toDaemon, err := tr.Queue(control.OOBQueue(o.controlQueue))
	if err != nil {
		return fail(1, err)
	}
	// Everything sent to the daemon is signed, and waits only briefly for
	// room: a daemon that is down or behind must not slow the task. After
	// a failure, sends do not wait at all for a second.
	var failedAt atomic.Int64
	sendDaemon := func(m runtime.Message) error {
		m[control.FromKey], m[control.TokenKey] = o.task, spec.Token
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
	host, err := runtime.NewHost(runtime.Options{StateDir: o.stateDir, OOB: o.oob, Level: level,
		Stdout: stdout, Stderr: stderr, Remote: tr, OOBForward: sendDaemon})
	if err != nil {
		return fail(2, err)
	}
	defer host.Close()
	x := &childProcess{kinds: k, o: o, host: host, ch: host.Channels(), namespaces: strings.Split(o.namespaces, ","),
		running: map[string]string{}, token: spec.Token}
	x.reportEvery.Store(int64(reportInterval(spec)))
	// Record ourselves: a daemon that died between starting us and
	// recording us must still find and adopt us.
	if start, err := external.StartTime(os.Getpid()); err == nil {
		writeJSONFile(pidPath(o.stateDir, o.task), externalProc{Identity: external.Identity{Pid: os.Getpid(), Start: start}, Hash: spec.Task.Hash, Kind: spec.Task.Spec.Kind})
	}
	if err := x.apply(spec); err != nil {
		return fail(1, err)
	}
	q, err := tr.Queue(o.task)
	if err != nil {
		return fail(1, err)
	}
	// Senders ring this process's doorbell after each send, so that it
	// can wait for messages it only peeks at (see receive).
	bell, err := tr.Queue(o.task + ".doorbell")
	if err == nil {
		err = tr.SetDoorbell(o.task, bell.Name())
	}
	if err != nil {
		return fail(1, err)
	}
	x.ch.Log.Info("external task running", "task", o.task, "pid", os.Getpid())

	var stopping atomic.Bool
	done := make(chan struct{})
	go func() { defer close(done); x.receive(q, bell, &stopping) }()
	stopReports := make(chan struct{})
	defer close(stopReports)
	go x.report(sendDaemon, stopReports)
	var s os.Signal
	select {
	case s = <-sig:
	case <-done: // the queue failed
	}
	stopping.Store(true)
	bell.Wake()
	<-done
	x.ch.Log.Info("external task stopping", "task", o.task, "signal", fmt.Sprint(s))
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err = host.Shutdown(ctx)
	// What was handled leaves the queue; after an incomplete shutdown it
	// stays there, to be handled again by the next process.
	if rerr := x.pending.Release(q, err == nil); rerr != nil {
		x.ch.Error.Error("taking handled messages off the queue", "task", o.task, "error", rerr)
	}
	tr.ClearDoorbell(o.task)
	tr.Remove(bell.Name())
	if err != nil {
		x.ch.Error.Error("shutdown incomplete", "task", o.task, "error", err)
		return 1
	}
	return 0
}

// external is the state of an external process (owned by its receive
// goroutine after start).
type childProcess struct {
	kinds      Kinds
	o          *daemonOptions
	host       *runtime.Host
	ch         *runtime.Channels
	namespaces []string
	running    map[string]string // task -> applied spec hash
	token      string
	// reportEvery is the time between two reports to the daemon.
	reportEvery atomic.Int64
	// pending are the deliveries handed to the task and still in its queue.
	pending runtime.Peeked
}

func reportInterval(spec external.Spec) time.Duration {
	if spec.ReportEvery <= 0 {
		return time.Second
	}
	return seconds(spec.ReportEvery)
}

// report sends the daemon the task's counters every reportEvery, which it
// turns into the task's rates and levels. An idle task reports less: once
// its counters stop changing, two more reports (the daemon needs two
// samples to see the rates back at zero), then one in ten.
func (x *childProcess) report(send func(runtime.Message) error, stop <-chan struct{}) {
	var last runtime.TaskStatus
	quiet := 0
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(x.reportEvery.Load())):
		}
		for _, s := range x.host.Status() {
			if s.Name != x.o.task {
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
			send(runtime.Message{control.ReportKey: map[string]any{"at": float64(time.Now().UnixNano()) / 1e9, "busy_s": s.Busy.Seconds(),
				"messages_in": float64(s.MessagesIn), "messages_out": float64(s.MessagesOut),
				"failures": float64(s.Failures), "depth": float64(s.Depth)}})
		}
	}
}

// receive moves messages from the task's queue to the task, applying
// config messages in order with them. It peeks at them and takes them off
// the queue only once the task has handled them, so a SIGKILL loses none
// (they are handled again by the next process: at least once). It waits
// for a ring on bell (or a safety tick), leaves messages in the queue
// while the task is at the high-water mark, and returns when stopping is
// set (a Wake of bell makes a waiting receive return).
func (x *childProcess) receive(q, bell *transit.Queue, stopping *atomic.Bool) {
	rang := make(chan struct{}, 1)
	ring := func() {
		select {
		case rang <- struct{}{}:
		default:
		}
	}
	x.host.OnHandled(x.o.task, ring) // to settle soon after
	go func() {
		for !stopping.Load() {
			if _, err := bell.Receive(true); err != nil {
				time.Sleep(100 * time.Millisecond)
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
	peek := true
	for !stopping.Load() {
		if _, done, ok := x.host.Progress(x.o.task); ok {
			if err := x.pending.Settle(q, done); err != nil {
				x.ch.Error.Error("taking a handled message off the queue", "task", x.o.task, "error", err)
			}
		}
		if depth, ok := x.host.Depth(x.o.task); ok && depth >= runtime.HighWater {
			wait(5 * time.Millisecond)
			continue
		}
		var d transit.Delivery
		var err error
		if peek {
			d, err = q.Peek(x.pending.Len())
			if errors.Is(err, transit.ErrNoPeek) {
				peek = false
				x.ch.Error.Error("a SIGKILL of this process loses the messages it has taken but not handled", "task", x.o.task, "error", err)
				continue
			}
		} else {
			d, err = q.Receive(false)
		}
		switch {
		case errors.Is(err, transit.ErrEmpty):
			if look > lastLook {
				wait(time.Hour)
			} else {
				wait(look)
				look *= 2
			}
			continue
		case err != nil:
			x.ch.Error.Error("receiving", "task", x.o.task, "error", err)
			if errors.Is(err, transit.ErrNoQueue) {
				return
			}
			wait(100 * time.Millisecond)
			continue
		}
		look = firstLook
		for _, m := range d.Msgs {
			if ctl, ok := m[runtime.ControlKey].(map[string]any); ok {
				if v, ok := ctl[configKey]; ok {
					x.configure(v)
					continue
				}
			}
			if err := x.host.DeliverLocal(x.o.task, m); err != nil {
				x.ch.Error.Error("a message taken from the queue was not delivered", "task", x.o.task, "error", err)
			}
		}
		if peek {
			x.pending.Add(x.host, x.o.task, d)
		}
	}
}

// configure applies a config message from the daemon.
func (x *childProcess) configure(v any) {
	spec, err := specFromMessage(v)
	switch {
	case err != nil:
	case spec.Token != x.token || spec.Task.Name != x.o.task:
		err = errors.New("config message without this process's token or for another task: refused")
	default:
		x.reportEvery.Store(int64(reportInterval(spec)))
		err = x.apply(spec)
	}
	if err != nil {
		x.ch.Error.Error("config from the daemon not applied", "task", x.o.task, "error", err)
	}
}

// apply makes the process run exactly what spec says.
func (x *childProcess) apply(spec external.Spec) error {
	want := map[string]schema.TaskSpec{}
	for _, ns := range append([]external.NamedSpec{spec.Task}, spec.Stateless...) {
		ns.Spec.Name, ns.Spec.Hash = ns.Name, ns.Hash
		want[ns.Name] = ns.Spec
	}
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
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
			if err := x.host.Reconfigure(ctx, name, t.Config, intervals(t)); err != nil {
				errs = append(errs, fmt.Errorf("task %s: %w", name, err))
				continue
			}
			x.running[name] = t.Hash
		default:
			kind, factory, err := x.kinds.Registry.Resolve(t.Kind, x.namespaces)
			if err != nil {
				errs = append(errs, fmt.Errorf("task %s: %w", name, err))
				continue
			}
			starts = append(starts, runtime.TaskSpec{Name: name, Kind: kind, New: factory, Config: t.Config, Intervals: intervals(t)})
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
