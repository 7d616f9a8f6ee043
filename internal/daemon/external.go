package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/runtime/external"
	"github.com/multimodule/multimodule/schema"
)

// An external task runs in its own process, started from this binary with
// -m TASK, detached (its own session, stdin /dev/null, output appended to
// STATE/external/TASK.log). The daemon tracks it by pid and process start
// time (a pid alone may be reused) in STATE/external/TASK.pid, so a daemon
// started later adopts it instead of starting a second copy.

// externalProc is a running external process as the daemon knows it.
type externalProc struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"` // clock ticks since boot, from /proc
	Hash  string `json:"hash"`  // the spec bundle it was given
	Kind  string `json:"kind"`  // the kind as the config named it

	started  time.Time
	stopping bool
	// failsafed: a failsafe is ending it; its exit is not a crash.
	failsafed bool
}

// stableAfter is how long an external must run before a crash no longer
// counts towards a crash loop.
const stableAfter = 10 * time.Second

func pidPath(stateDir, task string) string { return external.PidPath(stateDir, task) }

// alive: the process (pid and start time) has not fully exited. A zombie
// thread-group leader whose other threads are still exiting counts as
// alive: one of them may still hold the state file or take a message.
func (p *externalProc) alive() bool {
	st, err := external.StartTime(p.Pid)
	if err == nil {
		return st == p.Start
	}
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(p.Pid) + "/task/*")
	return len(tasks) > 1
}

// isStateful reports whether a kind's tasks are Stateful.
func isStateful(factory runtime.Factory) bool {
	_, ok := factory().(runtime.Stateful)
	return ok
}

// statelessOf lists cfg's enabled stateless tasks, which every external
// process runs too.
func (d *daemon) statelessOf(cfg *schema.Config) []external.NamedSpec {
	var out []external.NamedSpec
	for _, n := range cfg.Names() {
		t := cfg.Tasks[n]
		if t.Disabled || t.External {
			continue
		}
		if _, factory, err := d.kinds.Registry.Resolve(t.Kind, d.namespaces); err == nil && !isStateful(factory) {
			out = append(out, external.Named(n, t))
		}
	}
	return out
}

// bundle is what the external process of task name runs: the task and
// the stateless tasks, with a hash over all of them, so that a change to
// any of them reaches the external.
func bundle(cfg *schema.Config, name string, stateless []external.NamedSpec) (external.Spec, string) {
	spec := external.Spec{Task: external.Named(name, cfg.Tasks[name]), Stateless: stateless, ReportEvery: cfg.Daemon.SampleEvery}
	return spec, spec.Hash()
}

// withBundles gives each external task the hash of its bundle.
func withBundles(cfg *schema.Config, stateless []external.NamedSpec) *schema.Config {
	out := *cfg
	out.Tasks = make(map[string]schema.TaskSpec, len(cfg.Tasks))
	for n, t := range cfg.Tasks {
		if t.External && !t.Disabled {
			_, t.Hash = bundle(cfg, n, stateless)
		}
		out.Tasks[n] = t
	}
	return &out
}

// writeSpec hands the external its bundle, atomically, keeping the token
// of the spec it already has.
func (d *daemon) writeSpec(name string) (external.Spec, error) {
	spec, _ := bundle(d.loaded, name, d.stateless)
	spec, err := external.WriteSpec(d.o.stateDir, spec)
	d.tokens.set(name, spec.Token)
	return spec, err
}

// writeJSONFile writes v to path atomically, private.
func writeJSONFile(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// spawnExternal starts the external process of t.
func (d *daemon) spawnExternal(t schema.TaskSpec) error {
	if _, err := d.writeSpec(t.Name); err != nil {
		return fmt.Errorf("handing the spec over: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(external.Dir(d.o.stateDir), t.Name+".log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "-m", t.Name, "-c", d.o.configDir, "-s", d.o.stateDir, "-T", d.o.transitDir,
		"-q", d.o.controlQueue, "-p", d.o.namespaces, "-d", d.o.level, "-o", d.o.oob)
	cmd.Stdout, cmd.Stderr = logf, logf // stdin stays /dev/null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s -m %s: %w", exe, t.Name, err)
	}
	go func() { // reap it if it exits while we are its parent, and say how
		err := cmd.Wait()
		d.ch.Log.Info("external process exited", "task", t.Name, "pid", cmd.Process.Pid, "status", fmt.Sprint(err))
		select {
		case d.exited <- struct{}{}: // look now rather than at the next poll
		default:
		}
	}()
	start, err := external.StartTime(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("external %s exited at once: see %s.log", t.Name, t.Name)
	}
	p := &externalProc{Pid: cmd.Process.Pid, Start: start, Hash: t.Hash, Kind: t.Kind, started: time.Now()}
	if err := d.recordExternal(t.Name, p); err != nil {
		return err
	}
	d.externals[t.Name] = p
	d.ch.Log.Info("external task started", "task", t.Name, "pid", p.Pid)
	return nil
}

func (d *daemon) recordExternal(name string, p *externalProc) error {
	return writeJSONFile(pidPath(d.o.stateDir, name), p)
}

// adoptExternals takes over the externals a previous daemon left running.
func (d *daemon) adoptExternals() {
	paths, _ := filepath.Glob(filepath.Join(external.Dir(d.o.stateDir), "*.pid"))
	sort.Strings(paths)
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".pid")
		var p externalProc
		b, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(b, &p)
		}
		if err != nil || !p.alive() {
			os.Remove(path)
			continue
		}
		p.started = time.Now()
		if spec, err := external.ReadSpec(d.o.stateDir, name); err == nil {
			d.tokens.set(name, spec.Token)
		}
		d.externals[name] = &p
		d.observed[name] = reconcile.Observed{Name: name, Kind: p.Kind, Hash: p.Hash, External: true}
		d.ch.Log.Info("adopted a running external task", "task", name, "pid", p.Pid)
	}
}

// externalStopWait is how long an external may take to drain and save
// after SIGTERM: its own shutdown bound, its save grace, and a margin.
const externalStopWait = ShutdownTimeout + runtime.SaveGrace + 5*time.Second

// stopExternal asks an external to drain, save and exit (SIGTERM) and
// waits for it. One that does not exit in time is left running (killing
// it would lose what it has taken and roll its state back): the error
// says so, and the change is retried.
func (d *daemon) stopExternal(_ context.Context, name string) error {
	p := d.externals[name]
	if p == nil {
		return nil
	}
	p.stopping = true
	if p.alive() {
		syscall.Kill(p.Pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(externalStopWait)
	for p.alive() {
		if time.Now().After(deadline) {
			p.stopping = false
			return fmt.Errorf("external %s (pid %d) has not exited %v after SIGTERM: left running", name, p.Pid, externalStopWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
	delete(d.externals, name)
	os.Remove(pidPath(d.o.stateDir, name))
	d.forgetDoorbell(name)
	return nil
}

// forgetDoorbell removes the doorbell of task name's external process
// once it is gone (one that was killed could not): senders stop ringing
// it, and the next process makes its own.
func (d *daemon) forgetDoorbell(name string) {
	d.tr.ClearDoorbell(name)
	d.tr.Remove(name + ".doorbell")
}

// checkExternals notices externals that died without being asked to:
// each is restarted with backoff, and a crash loop ends held.
func (d *daemon) checkExternals() {
	crashed := false
	for name, p := range d.externals {
		if p.failsafed && !p.alive() {
			delete(d.externals, name)
			delete(d.observed, name)
			os.Remove(pidPath(d.o.stateDir, name))
			d.forgetDoorbell(name)
			d.ch.Log.Info("failsafed external task has exited", "task", name, "pid", p.Pid)
			crashed = true // cleared or changed meanwhile, it starts again now
			continue
		}
		if p.stopping || p.failsafed {
			continue
		}
		if p.alive() {
			if st := d.tasks[name]; st != nil && st.failures > 0 && time.Since(p.started) > stableAfter {
				st.failures, st.lastErr, st.nextTry = 0, "", time.Time{}
			}
			continue
		}
		crashed = true
		delete(d.externals, name)
		delete(d.observed, name)
		os.Remove(pidPath(d.o.stateDir, name))
		d.forgetDoorbell(name)
		st := d.tasks[name]
		if st == nil {
			continue
		}
		if time.Since(p.started) > stableAfter {
			st.failures = 0 // it ran well: this is not a loop
		}
		st.restarts = append(st.restarts, time.Now())
		d.noteFailure(name, st, fmt.Errorf("external process %d exited unexpectedly", p.Pid))
		if st.failures == 1 && !st.held {
			st.nextTry = time.Now() // the first crash is restarted at once
		}
	}
	if crashed {
		d.reconcile(false)
	}
}

// reconfigureExternal hands a changed bundle to a running external: on
// disk for its next start, and on its queue, in order with its messages.
func (d *daemon) reconfigureExternal(t schema.TaskSpec) error {
	spec, err := d.writeSpec(t.Name)
	if err != nil {
		return err
	}
	msg, err := external.ConfigMessage(spec)
	if err != nil {
		return err
	}
	if err := d.tr.Send(t.Name, msg); err != nil {
		return err
	}
	if p := d.externals[t.Name]; p != nil {
		p.Hash = t.Hash
		d.recordExternal(t.Name, p)
	}
	return nil
}

// startInternal starts tasks in the daemon and serves their queues.
func (d *daemon) startInternal(specs []schema.TaskSpec) []error {
	errs := make([]error, len(specs))
	var rs []runtime.TaskSpec
	var idx []int
	for i, t := range specs {
		kind, factory, err := d.kinds.Registry.Resolve(t.Kind, d.namespaces)
		if err != nil {
			errs[i] = err
			continue
		}
		rs = append(rs, runtime.TaskSpec{Name: t.Name, Kind: kind, New: factory, Config: t.Config,
			Intervals: intervals(t), CatchUp: true})
		idx = append(idx, i)
	}
	for j, err := range d.host.StartAll(rs) {
		i := idx[j]
		if err == nil {
			err = d.in.ServeTask(specs[i].Name)
		}
		if err == nil {
			// The daemon's own doorbell serves the task now (ServeTask):
			// an external process's is no longer wanted.
			d.tr.Remove(specs[i].Name + ".doorbell")
		}
		errs[i] = err
	}
	return errs
}

// stopInternal stops taking a task's messages, drains and saves it; what
// it handled then leaves its queue.
func (d *daemon) stopInternal(ctx context.Context, name string) error {
	if err := d.in.Unserve(name); err != nil {
		return err
	}
	err := d.host.Stop(ctx, name)
	if errors.Is(err, runtime.ErrNoSuchQueue) {
		err = nil
	}
	d.in.Release(name, err == nil)
	return err
}
