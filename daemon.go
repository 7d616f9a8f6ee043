package multimodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/statestore"
	"github.com/multimodule/multimodule/transit"
)

// daemon is one running multimodule. Its state is owned by the goroutine
// running serve: control requests reach it as messages on a channel.
type daemon struct {
	o          *daemonOptions
	namespaces []string
	schema     *schema.Schema
	lock       *statestore.DirLock
	tr         *transit.Transit
	host       *runtime.Host
	in         *runtime.Inbound
	ch         *runtime.Channels
	started    time.Time

	control  chan runtime.Message
	observed map[string]reconcile.Observed
	failed   map[string]string // task -> why its last start failed
	// configErr is the last config load or apply problem, for status.
	configErr string
}

// newDaemon loads the config and prepares everything; the int is the exit
// code to use when it fails.
func newDaemon(o *daemonOptions, level slog.Level, stdout, stderr io.Writer) (*daemon, int, error) {
	d := &daemon{o: o, namespaces: strings.Split(o.namespaces, ","), started: time.Now(),
		control: make(chan runtime.Message, 64), observed: map[string]reconcile.Observed{},
		failed: map[string]string{}}
	var err error
	if d.schema, err = NewSchema(); err != nil {
		return nil, 1, err
	}
	cfg, err := d.schema.Load(o.configDir)
	if err != nil {
		return nil, 1, fmt.Errorf("config %s:\n%s", o.configDir, schema.Format(err))
	}
	if err := d.checkKinds(cfg); err != nil {
		return nil, 1, err
	}
	if d.lock, err = statestore.LockDir(o.stateDir); err != nil {
		return nil, 1, err
	}
	fail := func(code int, err error) (*daemon, int, error) {
		d.lock.Unlock()
		return nil, code, err
	}
	if d.tr, err = transit.Open(transit.Options{Dir: o.transitDir}); err != nil {
		return fail(1, err)
	}
	d.host, err = runtime.NewHost(runtime.Options{
		StateDir: o.stateDir, OOB: o.oob, Level: level, Stdout: stdout, Stderr: stderr, Remote: d.tr,
	})
	if err != nil {
		return fail(2, err)
	}
	d.ch = d.host.Channels()
	d.in, err = runtime.NewInbound(d.host, d.tr, o.controlQueue+".doorbell", func(err error) {
		d.ch.Error.Error("inbound", "error", err)
	})
	if err != nil {
		return fail(1, err)
	}
	if err := d.in.ServeFunc(o.controlQueue, func(m runtime.Message) { d.control <- m }); err != nil {
		return fail(1, err)
	}
	d.apply(context.Background(), cfg)
	return d, 0, nil
}

// checkKinds resolves every enabled task's kind, reporting all failures.
func (d *daemon) checkKinds(cfg *schema.Config) error {
	var errs []error
	for _, name := range cfg.Names() {
		t := cfg.Tasks[name]
		if t.Disabled {
			continue
		}
		if _, _, err := registry.Resolve(t.Kind, d.namespaces); err != nil {
			errs = append(errs, fmt.Errorf("task %s: %w", name, err))
		}
		if t.External {
			errs = append(errs, fmt.Errorf("task %s: external: true is not supported by this daemon yet", name))
		}
	}
	return errors.Join(errs...)
}

// serve runs until a signal or a cleanly_exit, then shuts down in order.
func (d *daemon) serve(sig <-chan os.Signal) int {
	d.in.Start()
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
		}
	}
	return d.shutdown(reason, sig)
}

// shutdown: stop taking messages from outside (they wait in their
// queues), then drain and save every task, then release the state dir.
func (d *daemon) shutdown(reason string, sig <-chan os.Signal) int {
	d.ch.Log.Info("shutting down", "reason", reason)
	defer d.lock.Unlock()
	defer d.host.Close()
	d.in.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.host.Shutdown(ctx) }()
	var err error
	select {
	case err = <-done:
	case s := <-sig:
		d.ch.Error.Error("second signal: exiting without finishing the shutdown", "signal", s.String())
		return 130
	}
	if err != nil {
		d.ch.Error.Error("shutdown incomplete", "error", err)
		return 1
	}
	d.ch.Log.Info("stopped cleanly")
	return 0
}

// apply reconciles the running tasks with cfg.
func (d *daemon) apply(ctx context.Context, cfg *schema.Config) []reconcile.Result {
	results := reconcile.Apply(ctx, d, reconcile.Plan(cfg.Tasks, d.observed))
	for _, r := range results {
		if r.Err != nil {
			d.ch.Error.Error("reconcile", "action", r.Action.String(), "error", r.Err)
		} else {
			d.ch.Log.Info("reconcile", "action", r.Action.String())
		}
	}
	return results
}

// --- reconcile.Target ---

func (d *daemon) StartTasks(specs []schema.TaskSpec) []error {
	errs := make([]error, len(specs))
	var rs []runtime.TaskSpec
	var idx []int
	for i, t := range specs {
		kind, factory, err := registry.Resolve(t.Kind, d.namespaces)
		if err == nil && t.External {
			err = errors.New("external: true is not supported by this daemon yet")
		}
		if err != nil {
			errs[i] = err
			continue
		}
		iv := make(map[string]time.Duration, len(t.Intervals))
		for k, sec := range t.Intervals {
			iv[k] = time.Duration(sec * float64(time.Second))
		}
		rs = append(rs, runtime.TaskSpec{Name: t.Name, Kind: kind, New: factory, Config: t.Config, Intervals: iv})
		idx = append(idx, i)
	}
	for j, err := range d.host.StartAll(rs) {
		i := idx[j]
		if err == nil {
			err = d.in.ServeTask(specs[i].Name)
		}
		errs[i] = err
	}
	for i, t := range specs {
		if errs[i] != nil {
			d.failed[t.Name] = errs[i].Error()
			continue
		}
		delete(d.failed, t.Name)
		d.observed[t.Name] = reconcile.Observed{Name: t.Name, Kind: t.Kind, Hash: t.Hash, External: t.External}
	}
	return errs
}

func (d *daemon) StopTask(ctx context.Context, name string) error {
	if err := d.in.Unserve(name); err != nil {
		return err
	}
	err := d.host.Stop(ctx, name)
	if err == nil || errors.Is(err, runtime.ErrNoSuchQueue) {
		delete(d.observed, name)
		return nil
	}
	return err
}

func (d *daemon) ReconfigureTask(ctx context.Context, t schema.TaskSpec) error {
	iv := make(map[string]time.Duration, len(t.Intervals))
	for k, sec := range t.Intervals {
		iv[k] = time.Duration(sec * float64(time.Second))
	}
	if err := d.host.Reconfigure(ctx, t.Name, t.Config, iv); err != nil {
		return err
	}
	o := d.observed[t.Name]
	o.Hash = t.Hash
	d.observed[t.Name] = o
	return nil
}

// --- the control queue ---

// handleControl answers one control message; it reports whether the
// daemon should exit.
func (d *daemon) handleControl(m runtime.Message) (exit bool) {
	ctl, _ := m[runtime.ControlKey].(map[string]any)
	ops, ok := ctl["control"].([]any)
	if !ok {
		d.ch.Error.Error("control queue: not a control message", "message", m)
		return false
	}
	for _, x := range ops {
		op, _ := x.(map[string]any)
		replyTo, _ := op["reply_to"].(string)
		if replyTo == "" {
			replyTo, _ = m["reply_to"].(string)
		}
		if exp, ok := op["expires"].(float64); ok && float64(time.Now().UnixMicro())/1e6 > exp {
			d.ch.Log.Info("control request expired before the daemon saw it: ignored", "request", op)
			continue
		}
		typ, _ := op["type"].(string)
		reply := map[string]any{"type": typ, "ok": true}
		if id, ok := op["id"]; ok {
			reply["id"] = id
		}
		var err error
		switch typ {
		case "status":
			reply["status"] = d.status()
		case "reconcile":
			reply["results"], err = d.reconcileNow()
		case "clear":
			err = d.clear(op)
		case "cleanly_exit":
			if ee, _ := op["exit_externals"].(bool); ee {
				reply["note"] = "no external tasks run in this daemon"
			}
			exit = true
		default:
			err = fmt.Errorf("unknown control type %q (want status, reconcile, clear, cleanly_exit)", typ)
		}
		if err != nil {
			reply["ok"] = false
			reply["error"] = err.Error()
		}
		d.reply(replyTo, reply)
	}
	return exit
}

func (d *daemon) reply(to string, msg map[string]any) {
	if to == "" {
		if msg["ok"] == false {
			d.ch.Error.Error("control request failed", "error", msg["error"])
		}
		return
	}
	q, err := d.tr.Lookup(to)
	if err == nil {
		err = q.Send(msg)
	}
	if err != nil {
		d.ch.Error.Error("control reply not delivered", "reply_to", to, "error", err)
	}
}

// reconcileNow reloads the config dir and applies it. A config that does
// not load changes nothing.
func (d *daemon) reconcileNow() ([]any, error) {
	cfg, err := d.schema.Load(d.o.configDir)
	if err == nil {
		err = d.checkKinds(cfg)
	}
	if err != nil {
		d.configErr = strings.TrimSpace(schema.Format(err))
		d.ch.Error.Error("config not applied: the running tasks are unchanged", "error", d.configErr)
		return nil, fmt.Errorf("config not applied: %s", d.configErr)
	}
	d.configErr = ""
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	out := []any{}
	for _, r := range d.apply(ctx, cfg) {
		e := map[string]any{"task": r.Action.Task(), "action": r.Action.String()}
		if r.Err != nil {
			e["error"] = r.Err.Error()
		}
		out = append(out, e)
	}
	return out, nil
}

func (d *daemon) clear(op map[string]any) error {
	task, _ := op["task"].(string)
	if _, running := d.observed[task]; !running {
		if _, failed := d.failed[task]; !failed {
			return fmt.Errorf("no task %q", task)
		}
	}
	return fmt.Errorf("task %s is not held: no failsafe has stopped it", task)
}

// status is what `mmctl status` shows.
func (d *daemon) status() map[string]any {
	now := time.Now()
	tasks := []any{}
	running := map[string]bool{}
	for _, s := range d.host.Status() {
		running[s.Name] = true
		t := map[string]any{
			"name": s.Name, "kind": s.Kind, "where": "internal", "pid": float64(os.Getpid()),
			"status": "running", "stateful": s.Stateful, "uptime_s": now.Sub(s.Started).Seconds(),
			"messages_in": float64(s.MessagesIn), "messages_out": float64(s.MessagesOut),
			"failures": float64(s.Failures), "send_failures": float64(s.SendFailures),
			"mailbox_depth": float64(s.Depth), "busy_s": s.Busy.Seconds(),
			"state_generation": float64(s.StateGeneration),
		}
		if o, ok := d.observed[s.Name]; ok {
			t["spec_hash"] = o.Hash
		}
		if q, err := d.tr.Lookup(s.Name); err == nil {
			if st, err := q.Stats(); err == nil {
				t["queue"] = map[string]any{"messages": float64(st.Messages), "bytes": float64(st.Bytes),
					"capacity": float64(st.Capacity), "fill": st.Fill}
			}
		}
		tasks = append(tasks, t)
	}
	var failed []string
	for name := range d.failed {
		if !running[name] {
			failed = append(failed, name)
		}
	}
	sort.Strings(failed)
	for _, name := range failed {
		tasks = append(tasks, map[string]any{"name": name, "status": "failed", "error": d.failed[name]})
	}
	return map[string]any{
		"daemon": map[string]any{
			"pid": float64(os.Getpid()), "started": d.started.UTC().Format(time.RFC3339),
			"uptime_s": now.Sub(d.started).Seconds(), "config_dir": d.o.configDir,
			"state_dir": d.o.stateDir, "transit_dir": d.tr.Dir(), "control_queue": d.o.controlQueue,
			"dead_letters": float64(d.in.DeadLetters()), "config_error": d.configErr,
		},
		"tasks": tasks,
	}
}
