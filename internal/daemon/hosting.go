package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/runtime/external"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

// hosting runs tasks where their specs say: internal ones in the daemon's
// host, external ones in processes of their own. It is the controller's
// Target, called on the owner goroutine; stops run beside it and report
// on stopped.
type hosting struct {
	host    *runtime.Host
	in      *runtime.Inbound
	tr      *transit.Transit
	ext     *externals
	resolve func(kind string) (string, runtime.Factory, error)
	// stopped carries the end of each Stop to the owner; inflight counts
	// the stops under way (owner only).
	stopped  chan stopResult
	inflight int
	// gone are externals asked to stop whose crash is already reported
	// (queued on the supervisor's events): that report ends the stop.
	gone map[string]bool
	// failsafeGrace is how long a failsafed external gets after SIGTERM,
	// stopGrace any other (--stop-grace).
	failsafeGrace, stopGrace time.Duration
}

// stopResult is the end of a Stop.
type stopResult struct {
	task string
	err  error
}

func newHosting(o *daemonOptions, host *runtime.Host, in *runtime.Inbound, tr *transit.Transit,
	resolve func(string) (string, runtime.Factory, error)) *hosting {
	h := &hosting{host: host, in: in, tr: tr, resolve: resolve, stopped: make(chan stopResult, 16), gone: map[string]bool{},
		stopGrace: o.stopGrace}
	h.ext = newExternals(o, h)
	return h
}

var _ reconcile.Target = (*hosting)(nil)

// setStateless records cfg's stateless tasks, which every external
// process may run locally, and the failsafe grace.
func (h *hosting) setStateless(cfg *schema.Config) {
	h.ext.setStateless(cfg, h.resolve)
	h.failsafeGrace = schema.Seconds(cfg.Daemon.FailsafeGrace)
	applyMaxQueues(h.tr, cfg)
}

// pushBundles hands every running external the stateless tasks as they
// are now, if they changed since it last got them.
func (h *hosting) pushBundles() { h.ext.pushBundles() }

// adopt takes over the externals a previous daemon left running.
func (h *hosting) adopt() []reconcile.Observed { return h.ext.adopt() }

// Why an external is stopped, as its Exited event says.
const (
	stopAsked    external.StopReason = "reconcile"
	stopFailsafe external.StopReason = "failsafe"
)

// Start starts internal tasks together in the host and serves their
// queues, and spawns the external ones.
func (h *hosting) Start(specs []schema.TaskSpec) []error {
	errs := make([]error, len(specs))
	var rs []runtime.TaskSpec
	var idx []int
	for i, t := range specs {
		if t.External {
			errs[i] = h.ext.spawn(t)
			continue
		}
		kind, factory, err := h.resolve(t.Kind)
		if err != nil {
			errs[i] = err
			continue
		}
		rs = append(rs, runtime.TaskSpec{Name: t.Name, Kind: kind, New: factory, Config: t.Config,
			Intervals: t.IntervalDurations(), CatchUp: true})
		idx = append(idx, i)
	}
	for j, err := range h.host.StartAll(rs) {
		name := rs[j].Name
		if err == nil {
			if err = h.in.ServeTask(name); err != nil {
				// Not served, it must not run either: a retry would find
				// it running and fail for good.
				ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
				if serr := h.host.Stop(ctx, name); serr != nil {
					err = errors.Join(err, fmt.Errorf("undoing the start: %w", serr))
				}
				cancel()
			}
		}
		if err == nil {
			// The daemon's own doorbell serves the task now: an external
			// process's is no longer wanted.
			h.tr.Remove(name + ".doorbell")
		}
		errs[idx[j]] = err
	}
	return errs
}

// DefaultStopGrace is how long an external may take to drain and save
// after SIGTERM (its own shutdown bound, its save grace, and a margin)
// before it is killed (--stop-grace).
const DefaultStopGrace = ShutdownTimeout + runtime.SaveGrace + 5*time.Second

// exited turns the end of an external process into the controller's
// input: the end of a Stop, or a crash.
func (h *hosting) exited(ev external.Exited, ctl *reconcile.Controller) {
	h.ext.exited(ev.Task)
	if h.gone[ev.Task] {
		delete(h.gone, ev.Task)
		ev.Requested = true // the stop asked for after it had crashed
	}
	if !ev.Requested {
		h.host.Channels().Log.Info("external process exited unexpectedly", "task", ev.Task, "pid", ev.Process.Pid, "status", fmt.Sprint(ev.Err))
		err := fmt.Errorf("process %d is gone", ev.Process.Pid)
		if ev.Err != nil {
			err = fmt.Errorf("process %d: %w", ev.Process.Pid, ev.Err)
		}
		ctl.Exited(ev.Task, err)
		return
	}
	h.inflight--
	if spec, ok := ctl.Desired().Tasks[ev.Task]; !ok || !spec.External {
		h.ext.sup.Forget(ev.Task) // a later process of it gets a new token
	}
	var err error
	if ev.Killed && ev.Reason != stopFailsafe {
		err = fmt.Errorf("external process %d did not exit within %v of SIGTERM: killed with its process group", ev.Process.Pid, h.stopGrace)
	}
	ctl.Stopped(ev.Task, err)
}

// Reconfigure hands a running task its changed spec.
func (h *hosting) Reconfigure(t schema.TaskSpec) error {
	if t.External {
		return h.ext.reconfigure(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	return h.host.Reconfigure(ctx, t.Name, t.Config, t.IntervalDurations())
}

// Stop stops taking a task's messages at once (they wait in its queue)
// and, beside the owner, drains and saves it (internal) or asks its
// process to exit (external); the end comes on stopped.
func (h *hosting) Stop(o reconcile.Observed, failsafe bool) {
	h.inflight++
	if o.External {
		grace, why := h.stopGrace, stopAsked
		if failsafe {
			grace, why = h.failsafeGrace, stopFailsafe
		}
		// Its end comes as an Exited event of the supervisor: a requested
		// one, or the crash it reported before Stop and the owner has not
		// taken yet.
		if !h.ext.sup.Stop(o.Name, grace, why) {
			h.gone[o.Name] = true
		}
		return
	}
	if err := h.in.Unserve(o.Name); err != nil {
		h.host.Channels().Error.Error("unserving a task's queue", "task", o.Name, "error", err)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		err := h.host.Stop(ctx, o.Name)
		if errors.Is(err, runtime.ErrNoSuchQueue) {
			err = nil
		}
		// What it handled leaves its queue; what it did not stays there.
		h.in.Release(o.Name, err == nil)
		h.stopped <- stopResult{o.Name, err}
	}()
}
