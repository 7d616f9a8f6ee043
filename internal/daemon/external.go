package daemon

import (
	"log/slog"

	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/runtime/external"
	"github.com/multimodule/multimodule/schema"
)

// externals is what the daemon adds to the supervisor of external
// processes: the bundle each process gets (its task and the stateless
// tasks it may run locally), kept current as the config changes. It is
// used on the owner goroutine only.
type externals struct {
	sup      *external.Supervisor
	stateDir string
	errors   *slog.Logger
	// stateless are the stateless tasks every external may run, as the
	// config last applied says; reportEvery its sample interval.
	stateless   []external.NamedSpec
	reportEvery float64
	// maxQueues is daemon: max_queues, for each process's transit.
	maxQueues int
	// running are the specs of the externals the controller runs, by task.
	running map[string]schema.TaskSpec
}

func newExternals(o *daemonOptions, h *hosting) *externals {
	ch := h.host.Channels()
	sup := external.NewSupervisor(external.Options{StateDir: o.stateDir, ConfigDir: o.configDir,
		TransitDir: o.transitDir, ControlQueue: o.controlQueue, Namespaces: o.namespaces, Level: o.level,
		OOB: o.oob, Log: ch.Log, Error: ch.Error}, h.tr)
	return &externals{sup: sup, stateDir: o.stateDir, errors: ch.Error, running: map[string]schema.TaskSpec{}}
}

// setStateless records cfg's enabled stateless tasks: each external
// process may run them to handle its own messages to them.
func (x *externals) setStateless(cfg *schema.Config, resolve func(string) (string, runtime.Factory, error)) {
	x.stateless = nil
	for _, n := range cfg.Names() {
		t := cfg.Tasks[n]
		if t.Disabled || t.External {
			continue
		}
		if _, factory, err := resolve(t.Kind); err == nil && !isStateful(factory) {
			x.stateless = append(x.stateless, external.Named(n, t))
		}
	}
	x.reportEvery = cfg.Daemon.SampleEvery
	x.maxQueues = cfg.Daemon.MaxQueues
}

func (x *externals) bundle(t schema.TaskSpec) external.Spec {
	return external.Spec{Task: external.Named(t.Name, t), Stateless: x.stateless, ReportEvery: x.reportEvery,
		MaxQueues: x.maxQueues}
}

// adopt takes over the externals a previous daemon left running, as the
// controller sees them: with the task's own spec hash (from the spec file
// the process was handed).
func (x *externals) adopt() []reconcile.Observed {
	var out []reconcile.Observed
	for name, p := range x.sup.Adopt() {
		o := reconcile.Observed{Name: name, Kind: p.Kind, External: true}
		if spec, err := external.ReadSpec(x.stateDir, name); err == nil {
			o.Hash = spec.Task.Hash
			t := spec.Task.Spec
			t.Name, t.Hash = name, spec.Task.Hash
			x.running[name] = t
		}
		out = append(out, o)
	}
	return out
}

func (x *externals) spawn(t schema.TaskSpec) error {
	if _, err := x.sup.Spawn(x.bundle(t)); err != nil {
		return err
	}
	x.running[t.Name] = t
	return nil
}

func (x *externals) reconfigure(t schema.TaskSpec) error {
	if err := x.sup.Reconfigure(x.bundle(t)); err != nil {
		return err
	}
	x.running[t.Name] = t
	return nil
}

// pushBundles hands every running external the stateless tasks as they
// are now, if its bundle is older.
func (x *externals) pushBundles() {
	for name, t := range x.running {
		p, ok := x.sup.Lookup(name)
		if !ok || p.Hash == x.bundle(t).Hash() {
			continue
		}
		if err := x.reconfigure(t); err != nil {
			x.errors.Error("handing an external the changed stateless tasks", "task", name, "error", err)
		}
	}
}

// exited forgets a process that has ended.
func (x *externals) exited(task string) { delete(x.running, task) }
