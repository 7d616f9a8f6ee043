package daemon

import (
	"encoding/json"
	"fmt"
	"os"
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
		d.ch.Error.Error("control queue: not a control message", "error", err, "message", transit.Excerpt(m))
		return false
	}
	if len(ops) > maxOpsPerMessage {
		d.ch.Error.Error("control queue: too many operations in one message: only the first are done",
			"operations", len(ops), "done", maxOpsPerMessage)
		ops = ops[:maxOpsPerMessage]
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
			d.ch.Log.Info("control request expired before the daemon saw it: ignored", "request", transit.Excerpt(x))
			continue
		}
		switch op.Type {
		case control.Status:
			st := d.status()
			reply.Status = &st
		case control.Reconcile:
			// Answered when the load it needs ends: loading runs beside
			// the owner and may take seconds.
			d.requestLoad(loadRequest{kind: reconcile.Forced, apply: !op.DryRun,
				waiters: []waiter{{replyTo: op.ReplyTo, reply: reply, dry: op.DryRun}}})
			continue
		case control.Clear:
			err = d.clear(op.Task)
		case control.RestartTask, control.StopTask, control.StartTask:
			_, err = d.ctl.Do(op.Task, reconcile.OneOff(op.Type))
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

// reply answers a control request from the owner. Replies go only to an
// existing queue that no daemon serves (a reply must not become a task's
// input), and wait only briefly for room: the daemon's own work comes
// first.
func (d *daemon) reply(to string, r control.Reply) {
	if to == "" {
		if !r.OK {
			d.ch.Error.Error("control request failed", "error", r.Error)
		}
		return
	}
	if err := sendReply(d.tasks.tr, d.o.controlQueue, to, r, d.isTask, 200*time.Millisecond); err != nil {
		d.ch.Error.Error("control reply not delivered", "reply_to", to, "error", err)
	}
}

// sendReply sends r to the queue to, unless it is served or a task's
// (isTask), waiting at most wait for room. It is safe on any goroutine if
// isTask is.
func sendReply(tr *transit.Transit, controlQueue, to string, r control.Reply, isTask func(string) bool, wait time.Duration) error {
	defer tr.Forget(to) // reply queues are used once
	msg, err := r.Message()
	if err != nil {
		return err
	}
	if tr.Served(to) || to == controlQueue+".doorbell" || isTask(to) {
		return fmt.Errorf("reply_to %s is a task's or a served queue: refused", to)
	}
	q, err := tr.Lookup(to)
	if err != nil {
		return err
	}
	return q.SendWithin(msg, wait)
}

// maxOpsPerMessage bounds the work one control message can ask for: the
// owner goroutine does it all before it looks at anything else.
const maxOpsPerMessage = 16

// isTask reports whether name is a task's queue (configured, running or
// held, wherever it runs): a reply there would become the task's input.
func (d *daemon) isTask(name string) bool {
	if _, ok := d.ctl.Desired().Tasks[name]; ok {
		return true
	}
	_, ok := d.ctl.Observed()[name]
	return ok
}

// actions renders a plan for the wire.
func actions(plan []reconcile.Action) []control.ActionResult {
	out := []control.ActionResult{}
	for _, a := range plan {
		out = append(out, control.ActionResult{Task: a.Task(), Action: a.String()})
	}
	return out
}

// clear gives a held task another chance.
func (d *daemon) clear(task string) error {
	_, err := d.ctl.Clear(task)
	return err
}

// condition is one of a task's conditions for the wire.
func condition(c reconcile.Condition) control.Condition {
	s := "False"
	if c.Status {
		s = "True"
	}
	return control.Condition{Type: c.Type, Status: s, Reason: c.Reason, Message: c.Message}
}

// ptr is v's address, for the status fields that are left out when they
// do not apply.
func ptr[T any](v T) *T { return &v }

// status is what `mmctl status` shows: every task that is wanted, runs or
// is held, with its conditions, and the plan the daemon works through.
func (d *daemon) status() control.StatusReply {
	now := time.Now()
	running := map[string]runtime.TaskStatus{}
	for _, s := range d.tasks.host.Status() {
		running[s.Name] = s
	}
	tasks := []control.TaskStatus{}
	for _, ts := range d.ctl.Tasks() {
		name, spec, wanted, obs := ts.Name, ts.Spec, ts.Wanted, ts.Running
		s, isRunning := running[name]
		t := control.TaskStatus{Name: name, Where: "internal"}
		if wanted && spec.External {
			t.Where = "external"
		}
		if obs != nil && !obs.External {
			t.Where = "internal"
		}
		if p, ok := d.tasks.ext.sup.Lookup(name); ok && obs != nil && obs.External {
			t.Where, t.Pid = "external", p.Pid
			since := p.Started
			if at, err := p.StartedAt(); err == nil {
				since = at // adopted processes keep their age
			}
			t.UptimeS = now.Sub(since).Seconds()
			isRunning = p.Alive()
		}
		if wanted {
			t.SpecKind, t.SpecHash, t.External, t.Disabled = spec.Kind, spec.Hash, ptr(spec.External), ptr(spec.Disabled)
		}
		if obs != nil {
			t.AppliedHash, t.AppliedKind, t.AppliedExternal = obs.Hash, obs.Kind, ptr(obs.External)
			if ts.Applied != nil {
				t.Applied, _ = json.Marshal(ts.Applied) // a spec is plain JSON data
			}
		}
		t.Running = isRunning
		t.Generation, t.ObservedGeneration = ptr(ts.Generation), ptr(ts.ObservedGeneration)
		t.FailuresInARow, t.LastError, t.Restarts = ptr(ts.Failures), ts.LastError, ptr(ts.Restarts)
		if o := ts.OneOff; o != nil {
			state := "under way"
			if o.Done {
				state = "done"
			}
			t.Action = fmt.Sprintf("%s at %s (%s)", o.Action, o.At.UTC().Format(time.RFC3339), state)
		}
		switch {
		case ts.Hold != nil:
			t.Status = "held"
			t.HeldReason, t.HoldMessage = ts.Hold.Why, ts.Hold.Message
		case ts.Stopping: // the host may already have let go of it while it drains
			t.Status = "stopping"
		case isRunning && d.mon.stalls[name] != "":
			t.Status = "stalled"
		case isRunning:
			t.Status = "running"
		case wanted && spec.Disabled:
			t.Status = "disabled"
		default:
			t.Status = "stopped"
		}
		for _, c := range ts.Conditions(isRunning) {
			t.Conditions = append(t.Conditions, condition(c))
		}
		if why := d.mon.stalls[name]; why != "" && isRunning {
			t.Conditions = append(t.Conditions, control.Condition{Type: "Responding", Status: "False", Reason: "Stalled", Message: why})
		}
		if isRunning && t.Where == "internal" {
			t.Kind, t.Pid, t.Stateful = s.Kind, os.Getpid(), ptr(s.Stateful)
			t.UptimeS = now.Sub(s.Started).Seconds()
			t.MessagesIn, t.MessagesOut = ptr(s.MessagesIn), ptr(s.MessagesOut)
			t.Failures, t.SendFailures = ptr(s.Failures), ptr(s.SendFailures)
			t.MailboxDepth, t.BusyS = ptr(s.Depth), ptr(s.Busy.Seconds())
			t.StateGeneration = ptr(s.StateGeneration)
		}
		if isRunning && d.mon.tracker.Tracked(name) {
			t.Metrics, t.Levels = d.mon.tracker.Status(name)
			if c, ok := d.mon.tracker.Totals(name); ok && t.Where == "external" { // as its process last reported
				t.MessagesIn, t.MessagesOut = ptr(c.In), ptr(c.Out)
				t.Failures, t.MailboxDepth = ptr(c.Failures), ptr(c.Depth)
			}
		}
		if isRunning {
			if q, err := d.tasks.tr.Lookup(name); err == nil {
				if qs, err := q.Stats(); err == nil {
					t.Queue = &control.QueueStatus{Messages: qs.Messages, Bytes: qs.Bytes, Capacity: qs.Capacity, Fill: qs.Fill}
				}
			}
		}
		tasks = append(tasks, t)
	}
	return control.StatusReply{
		Daemon: control.DaemonStatus{
			Pid: os.Getpid(), Started: d.started.UTC().Format(time.RFC3339),
			UptimeS: now.Sub(d.started).Seconds(), ConfigDir: d.o.configDir,
			ConfigHash: d.ctl.Desired().SourceHash, ConfigError: d.cfg.err,
			StateDir: d.o.stateDir, TransitDir: d.tasks.tr.Dir(), ControlQueue: d.o.controlQueue,
			DeadLetters: d.tasks.in.DeadLetters(),
			Metrics:     withQueueCounts(d.mon.tracker.DaemonValues(), d.tasks.tr),
		},
		Tasks: tasks,
		Plan:  actions(d.ctl.Plan()),
	}
}
