package daemon

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/runtime/external"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

// An external task runs in its own process, started from this binary with
// -m TASK, detached (its own session, stdin /dev/null, output appended to
// STATE/external/TASK.log). The daemon tracks it by pid and process start
// time (a pid alone may be reused) in STATE/external/TASK.pid, so a daemon
// started later adopts it instead of starting a second copy.

// externalProc is a running external process as the daemon knows it.
type externalProc struct {
	external.Identity
	Hash string `json:"hash"` // the task's spec hash
	Kind string `json:"kind"` // the kind as the config named it
	// Bundle is the hash of the stateless tasks it was last handed.
	Bundle string `json:"bundle"`
	Token  string `json:"-"`

	started time.Time
	// stopping: a stop is under way; its exit is not a crash.
	stopping bool
}

// externalStopWait is how long an external may take to drain and save
// after SIGTERM (its own shutdown bound, its save grace, and a margin)
// before it is killed.
const externalStopWait = ShutdownTimeout + runtime.SaveGrace + 5*time.Second

// externals are the external processes of one daemon. Its methods are safe
// for concurrent use: stops run beside the owner goroutine.
type externals struct {
	o  *daemonOptions
	tr *transit.Transit
	ch *runtime.Channels

	mu    sync.Mutex
	procs map[string]*externalProc
	// stateless and bundle: the stateless tasks every external may run,
	// and their hash.
	stateless   []external.NamedSpec
	bundle      string
	reportEvery float64
	// exited is signalled when an external this daemon started exits.
	exited chan struct{}
}

func newExternals(o *daemonOptions, tr *transit.Transit, ch *runtime.Channels) *externals {
	return &externals{o: o, tr: tr, ch: ch, procs: map[string]*externalProc{}, exited: make(chan struct{}, 1)}
}

func pidPath(stateDir, task string) string {
	return filepath.Join(external.Dir(stateDir), task+".pid")
}

// setStateless records cfg's enabled stateless tasks: each external
// process may run them to handle its own messages to them.
func (x *externals) setStateless(cfg *schema.Config, resolve func(string) (string, runtime.Factory, error)) {
	var list []external.NamedSpec
	h := sha256.New()
	fmt.Fprintf(h, "%g\x00", cfg.Daemon.SampleEvery)
	for _, n := range cfg.Names() {
		t := cfg.Tasks[n]
		if t.Disabled || t.External {
			continue
		}
		if _, factory, err := resolve(t.Kind); err == nil && !isStateful(factory) {
			list = append(list, external.Named(n, t))
			h.Write([]byte(n + "\x00" + t.Hash + "\x00"))
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.stateless, x.bundle, x.reportEvery = list, hex.EncodeToString(h.Sum(nil)[:8]), cfg.Daemon.SampleEvery
}

// specFor is what task t's process runs, with the token it already has
// (or a new one).
func (x *externals) specFor(t schema.TaskSpec) (external.Spec, string) {
	x.mu.Lock()
	spec := external.Spec{Task: external.Named(t.Name, t), Stateless: x.stateless, ReportEvery: x.reportEvery}
	bundle := x.bundle
	x.mu.Unlock()
	if old, err := external.ReadSpec(x.o.stateDir, t.Name); err == nil && old.Token != "" {
		spec.Token = old.Token
	} else {
		var r [16]byte
		rand.Read(r[:])
		spec.Token = hex.EncodeToString(r[:])
	}
	return spec, bundle
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

// spawn starts the external process of t.
func (x *externals) spawn(t schema.TaskSpec) error {
	spec, bundle := x.specFor(t)
	if err := os.MkdirAll(external.Dir(x.o.stateDir), 0o700); err != nil {
		return err
	}
	if err := writeJSONFile(external.SpecPath(x.o.stateDir, t.Name), spec); err != nil {
		return fmt.Errorf("handing the spec over: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(external.Dir(x.o.stateDir), t.Name+".log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	o := x.o
	cmd := exec.Command(exe, "-m", t.Name, "-c", o.configDir, "-s", o.stateDir, "-T", o.transitDir,
		"-q", o.controlQueue, "-p", o.namespaces, "-d", o.level, "-o", o.oob)
	cmd.Stdout, cmd.Stderr = logf, logf // stdin stays /dev/null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s -m %s: %w", exe, t.Name, err)
	}
	go func() { // reap it if it exits while we are its parent, and say how
		err := cmd.Wait()
		x.ch.Log.Info("external process exited", "task", t.Name, "pid", cmd.Process.Pid, "status", fmt.Sprint(err))
		select {
		case x.exited <- struct{}{}: // look now rather than at the next poll
		default:
		}
	}()
	start, err := external.StartTime(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("external %s exited at once: see %s.log", t.Name, t.Name)
	}
	p := &externalProc{Identity: external.Identity{Pid: cmd.Process.Pid, Start: start}, Hash: t.Hash, Kind: t.Kind,
		Bundle: bundle, Token: spec.Token, started: time.Now()}
	if err := writeJSONFile(pidPath(o.stateDir, t.Name), p); err != nil {
		return err
	}
	x.mu.Lock()
	x.procs[t.Name] = p
	x.mu.Unlock()
	x.ch.Log.Info("external task started", "task", t.Name, "pid", p.Pid)
	return nil
}

// adopt takes over the externals a previous daemon left running.
func (x *externals) adopt() []reconcile.Observed {
	paths, _ := filepath.Glob(filepath.Join(external.Dir(x.o.stateDir), "*.pid"))
	sort.Strings(paths)
	var out []reconcile.Observed
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".pid")
		var p externalProc
		b, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(b, &p)
		}
		if err != nil || !p.Alive() {
			os.Remove(path)
			continue
		}
		p.started = time.Now()
		if spec, err := external.ReadSpec(x.o.stateDir, name); err == nil {
			p.Token = spec.Token
		}
		x.mu.Lock()
		x.procs[name] = &p
		x.mu.Unlock()
		out = append(out, reconcile.Observed{Name: name, Kind: p.Kind, Hash: p.Hash, External: true})
	}
	return out
}

// reconfigure hands a changed spec to a running external: on disk for its
// next start, and on its queue, in order with its messages.
func (x *externals) reconfigure(t schema.TaskSpec) error {
	spec, bundle := x.specFor(t)
	if err := writeJSONFile(external.SpecPath(x.o.stateDir, t.Name), spec); err != nil {
		return err
	}
	msg, err := asMessage(spec)
	if err != nil {
		return err
	}
	if err := x.tr.Send(t.Name, msg); err != nil {
		return err
	}
	x.mu.Lock()
	p := x.procs[t.Name]
	if p != nil {
		p.Hash, p.Bundle = t.Hash, bundle
	}
	x.mu.Unlock()
	if p != nil {
		writeJSONFile(pidPath(x.o.stateDir, t.Name), p)
	}
	return nil
}

// pushBundles hands the current stateless tasks to every running external
// that has older ones.
func (x *externals) pushBundles() {
	x.mu.Lock()
	var stale []schema.TaskSpec
	for name, p := range x.procs {
		if !p.stopping && p.Bundle != x.bundle {
			spec, err := external.ReadSpec(x.o.stateDir, name)
			if err == nil {
				t := spec.Task.Spec
				t.Name, t.Hash = name, spec.Task.Hash
				stale = append(stale, t)
			}
		}
	}
	x.mu.Unlock()
	for _, t := range stale {
		if err := x.reconfigure(t); err != nil {
			x.ch.Error.Error("handing an external the changed stateless tasks", "task", t.Name, "error", err)
		}
	}
}

// stop asks an external to drain, save and exit (SIGTERM), beside the
// caller: after grace it is killed with its whole process group (what it
// took stays in its queue, to be handled again; its state goes back at
// most to its last save). done is called with the outcome.
func (x *externals) stop(name string, grace time.Duration, done func(error)) {
	x.mu.Lock()
	p := x.procs[name]
	if p != nil {
		p.stopping = true
	}
	x.mu.Unlock()
	if p == nil {
		go done(nil)
		return
	}
	go func() {
		err := terminate(p.Identity, grace)
		x.forget(name)
		done(err)
	}()
}

// terminate sends id SIGTERM and, if it is still alive after grace,
// SIGKILL to its process group (its session: children included).
func terminate(id external.Identity, grace time.Duration) error {
	if !id.Alive() {
		return nil
	}
	syscall.Kill(id.Pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for id.Alive() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !id.Alive() {
		return nil
	}
	syscall.Kill(-id.Pid, syscall.SIGKILL)
	syscall.Kill(id.Pid, syscall.SIGKILL)
	for i := 0; id.Alive() && i < 500; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("external process %d did not exit within %v of SIGTERM: killed", id.Pid, grace)
}

// forget drops a process that has exited: its pid file, and its doorbell
// (one that was killed could not remove it), so that senders stop ringing
// it and the next process makes its own.
func (x *externals) forget(name string) {
	x.mu.Lock()
	delete(x.procs, name)
	x.mu.Unlock()
	os.Remove(pidPath(x.o.stateDir, name))
	x.tr.ClearDoorbell(name)
	x.tr.Remove(name + ".doorbell")
}

// deadProc is an external that died unasked.
type deadProc struct {
	task string
	pid  int
}

// dead finds the externals that died without being asked to and forgets
// them.
func (x *externals) dead() []deadProc {
	x.mu.Lock()
	var out []deadProc
	for name, p := range x.procs {
		if !p.stopping && !p.Alive() {
			out = append(out, deadProc{name, p.Pid})
		}
	}
	x.mu.Unlock()
	for _, d := range out {
		x.forget(d.task)
	}
	return out
}

// lookup returns what is known of task's process.
func (x *externals) lookup(task string) (externalProc, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	p := x.procs[task]
	if p == nil {
		return externalProc{}, false
	}
	return *p, true
}

func (x *externals) count() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.procs)
}

// validToken reports whether token is task's process's secret.
func (x *externals) validToken(task, token string) bool {
	x.mu.Lock()
	p := x.procs[task]
	want := ""
	if p != nil {
		want = p.Token
	}
	x.mu.Unlock()
	return want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1
}
