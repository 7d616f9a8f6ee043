package daemon

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/transit"
)

// handleControl answers one message of the control queue (see
// control.Op). Each operation with a reply_to gets a control.Reply. It
// reports whether the daemon should exit.
func (d *daemon) handleControl(m runtime.Message) (exit bool) {
	ops, err := control.Ops(m)
	if err != nil {
		d.ch.Error.Error("control queue: not a control message", "error", err, "message", m)
		return false
	}
	for _, x := range ops {
		op, err := control.DecodeOp(x)
		reply := control.Reply{Type: op.Type, ID: op.ID, OK: true}
		if err != nil {
			reply.OK, reply.Error = false, err.Error()+": refused"
			d.reply(op.ReplyTo, reply)
			continue
		}
		if float64(time.Now().UnixMicro())/1e6 > op.Expires {
			d.ch.Log.Info("control request expired before the daemon saw it: ignored", "request", x)
			continue
		}
		switch op.Type {
		case control.Status:
			st := d.status()
			reply.Status = &st
		case control.Reconcile:
			reply.Results, err = d.reconcileNow(op.DryRun)
		case control.Clear:
			err = d.clear(op.Task)
		case control.CleanlyExit:
			d.exitExternals = op.ExitExternals
			exit = true
		}
		if err != nil {
			reply.OK, reply.Error = false, err.Error()
		}
		d.reply(op.ReplyTo, reply)
	}
	return exit
}

// reply answers a control request. Replies go only to an existing queue
// that no daemon serves (a reply must not become a task's input), and
// wait only briefly for room: the daemon's own work comes first.
func (d *daemon) reply(to string, r control.Reply) {
	if to == "" {
		if !r.OK {
			d.ch.Error.Error("control request failed", "error", r.Error)
		}
		return
	}
	defer d.tr.Forget(to) // reply queues are used once
	msg, err := r.Message()
	if err == nil && (d.tr.Served(to) || to == d.o.controlQueue+".doorbell") {
		err = fmt.Errorf("reply_to %s is a served queue: refused", to)
	} else if err == nil {
		var q *transit.Queue
		if q, err = d.tr.Lookup(to); err == nil {
			err = q.SendWithin(msg, 200*time.Millisecond)
		}
	}
	if err != nil {
		d.ch.Error.Error("control reply not delivered", "reply_to", to, "error", err)
	}
}

// reconcileNow reloads the config dir and applies it (or, dry, says what
// applying it would do). Removals are applied at once: an operator asked.
func (d *daemon) reconcileNow(dry bool) ([]control.ActionResult, error) {
	var out []control.ActionResult
	if dry {
		cfg, err := d.load()
		if err != nil {
			return nil, fmt.Errorf("config does not load:\n%v", err)
		}
		saved := d.desired
		d.desired = cfg
		_, shown, _ := d.plan(false)
		d.desired = saved
		for _, a := range shown {
			out = append(out, control.ActionResult{Task: a.Task(), Action: a.String()})
		}
		return out, nil
	}
	results, err := d.reload(true, false)
	if err != nil {
		return nil, err
	}
	if d.confirmHash != "" { // an operator asked: do not wait to confirm
		d.confirmHash = ""
		d.confirm.Stop()
		results = append(results, d.reconcile(false)...)
	}
	for _, r := range results {
		e := control.ActionResult{Task: r.Action.Task(), Action: r.Action.String()}
		if r.Err != nil {
			e.Error = r.Err.Error()
		}
		out = append(out, e)
	}
	return out, nil
}

// clear gives a held task another chance.
func (d *daemon) clear(task string) error {
	st := d.tasks[task]
	if st == nil {
		return fmt.Errorf("no task %q", task)
	}
	if !st.held {
		return fmt.Errorf("task %s is not held", task)
	}
	st.held, st.failures, st.nextTry, st.lastErr = false, 0, time.Time{}, ""
	d.saveHeld()
	d.ch.Log.Info("task cleared: retrying", "task", task)
	d.reconcile(false)
	return nil
}

// condition is one of a task's conditions, as Kubernetes reports them.
func condition(typ string, status bool, reason, message string) control.Condition {
	s := "False"
	if status {
		s = "True"
	}
	return control.Condition{Type: typ, Status: s, Reason: reason, Message: message}
}

// ptr is v's address, for the status fields that are left out when they
// do not apply.
func ptr[T any](v T) *T { return &v }

// status is what `mmctl status` shows: every task that runs or is
// wanted, with its conditions.
func (d *daemon) status() control.StatusReply {
	now := time.Now()
	running := map[string]runtime.TaskStatus{}
	for _, s := range d.host.Status() {
		running[s.Name] = s
	}
	names := map[string]bool{}
	for n := range running {
		names[n] = true
	}
	for n := range d.desired.Tasks {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)

	tasks := []control.TaskStatus{}
	for _, name := range sorted {
		spec, wanted := d.desired.Tasks[name]
		s, isRunning := running[name]
		obs, observed := d.observed[name]
		st := d.tasks[name]
		t := control.TaskStatus{Name: name, Where: "internal"}
		if wanted && spec.External {
			t.Where = "external"
		}
		if observed && !obs.External {
			t.Where = "internal"
		}
		p := d.externals[name]
		if p != nil && observed && obs.External {
			t.Where, t.Pid = "external", p.Pid
			t.UptimeS = now.Sub(p.started).Seconds()
			isRunning = p.alive()
		}
		if wanted {
			t.SpecKind, t.SpecHash, t.External, t.Disabled = spec.Kind, spec.Hash, ptr(spec.External), ptr(spec.Disabled)
		}
		if observed {
			t.AppliedHash, t.AppliedKind, t.AppliedExternal = obs.Hash, obs.Kind, ptr(obs.External)
		}
		if st != nil {
			t.Generation, t.ObservedGeneration = ptr(st.generation), ptr(st.observedGeneration)
			t.FailuresInARow = ptr(st.failures)
			t.LastError = st.lastErr
		}
		upToDate := isRunning && observed && wanted && obs.Hash == spec.Hash
		held := st != nil && st.held
		switch {
		case held:
			t.Status = "held"
			t.HeldReason, t.HoldMessage = st.holdWhy, st.lastErr
		case isRunning && p != nil && (p.failsafed || p.stopping):
			t.Status = "stopping"
		case isRunning:
			t.Status = "running"
		case wanted && spec.Disabled:
			t.Status = "disabled"
		default:
			t.Status = "stopped"
		}
		switch {
		case wanted && spec.Disabled && !isRunning:
			t.Conditions = append(t.Conditions, condition("Ready", true, "Disabled", "stopped as the config says; state kept"))
		case upToDate:
			t.Conditions = append(t.Conditions, condition("Ready", true, "Applied", ""))
		default:
			t.Conditions = append(t.Conditions, condition("Ready", false, "", ""))
		}
		pending := wanted && !spec.Disabled && !upToDate || !wanted && isRunning
		switch {
		case held:
			t.Conditions = append(t.Conditions, condition("Reconciling", false, "", ""),
				condition("Stalled", true, st.holdWhy, st.lastErr))
		case pending && st != nil && st.lastErr != "":
			t.Conditions = append(t.Conditions, condition("Reconciling", true, "Retrying",
				fmt.Sprintf("attempt %d failed: %s; next at %s", st.failures, st.lastErr, st.nextTry.Format(time.RFC3339))),
				condition("Stalled", false, "", ""))
		default:
			t.Conditions = append(t.Conditions, condition("Reconciling", pending, "", ""), condition("Stalled", false, "", ""))
		}
		if isRunning && t.Where == "internal" {
			t.Kind, t.Pid, t.Stateful = s.Kind, os.Getpid(), ptr(s.Stateful)
			t.UptimeS = now.Sub(s.Started).Seconds()
			t.MessagesIn, t.MessagesOut = ptr(s.MessagesIn), ptr(s.MessagesOut)
			t.Failures, t.SendFailures = ptr(s.Failures), ptr(s.SendFailures)
			t.MailboxDepth, t.BusyS = ptr(s.Depth), ptr(s.Busy.Seconds())
			t.StateGeneration = ptr(s.StateGeneration)
		}
		if w := d.mon.tasks[name]; w != nil && isRunning {
			t.Metrics, t.Levels = w.status()
			if t.Where == "external" && !w.last.at.IsZero() { // as its process last reported
				t.MessagesIn, t.MessagesOut = ptr(w.last.in), ptr(w.last.out)
				t.Failures, t.MailboxDepth = ptr(w.last.failures), ptr(w.last.depth)
			}
		}
		if isRunning {
			if q, err := d.tr.Lookup(name); err == nil {
				if qs, err := q.Stats(); err == nil {
					t.Queue = &control.QueueStatus{Messages: qs.Messages, Bytes: qs.Bytes, Capacity: qs.Capacity, Fill: qs.Fill}
				}
			}
		}
		tasks = append(tasks, t)
	}
	metrics, levels := d.mon.self.status()
	return control.StatusReply{
		Daemon: control.DaemonStatus{
			Pid: os.Getpid(), Started: d.started.UTC().Format(time.RFC3339),
			UptimeS: now.Sub(d.started).Seconds(), ConfigDir: d.o.configDir,
			ConfigHash: d.desired.SourceHash, ConfigError: d.configErr,
			StateDir: d.o.stateDir, TransitDir: d.tr.Dir(), ControlQueue: d.o.controlQueue,
			DeadLetters: d.in.DeadLetters(),
			Metrics:     metrics,
			Levels:      levels,
		},
		Tasks: tasks,
	}
}

var _ reconcile.Target = (*daemon)(nil)
