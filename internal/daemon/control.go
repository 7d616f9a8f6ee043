package daemon

import (
	"fmt"
	"os"
	"time"

	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

// handleControl answers one message of the control queue:
//
//	{".multimodule": {"control": [{"type": T, "reply_to": Q, "id": ID, "expires": UNIX}]}}
//
// with T one of status, reconcile (dry_run), clear (task), cleanly_exit
// (exit_externals). Each operation with a reply_to gets
// {"type": T, "id": ID, "ok": bool, "error"?: ..., ...}. It reports
// whether the daemon should exit.
func (d *daemon) handleControl(m runtime.Message) (exit bool) {
	ctl, _ := m[runtime.ControlKey].(map[string]any)
	ops, ok := ctl["control"].([]any)
	if !ok {
		d.ch.Error.Error("control queue: not a control message (want {\".multimodule\": {\"control\": [...]}})", "message", m)
		return false
	}
	for _, x := range ops {
		op, _ := x.(map[string]any)
		replyTo, _ := op["reply_to"].(string)
		typ, _ := op["type"].(string)
		reply := map[string]any{"type": typ, "ok": true}
		if id, ok := op["id"]; ok {
			reply["id"] = id
		}
		// A request must say until when it stands: one left in the queue
		// while no daemon ran must never act on a daemon started later.
		exp, ok := op["expires"].(float64)
		if !ok {
			d.reply(replyTo, map[string]any{"type": typ, "id": reply["id"], "ok": false,
				"error": "a control request needs expires (unix seconds): refused"})
			continue
		}
		if float64(time.Now().UnixMicro())/1e6 > exp {
			d.ch.Log.Info("control request expired before the daemon saw it: ignored", "request", op)
			continue
		}
		var err error
		switch typ {
		case "status":
			reply["status"] = d.status()
		case "reconcile":
			reply["results"], err = d.reconcileNow(op["dry_run"] == true)
		case "clear":
			err = d.clear(op)
		case "cleanly_exit":
			d.exitExternals, _ = op["exit_externals"].(bool)
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

// reply answers a control request. Replies go only to an existing queue
// that no daemon serves (a reply must not become a task's input), and
// wait only briefly for room: the daemon's own work comes first.
func (d *daemon) reply(to string, msg map[string]any) {
	if to == "" {
		if msg["ok"] == false {
			d.ch.Error.Error("control request failed", "error", msg["error"])
		}
		return
	}
	defer d.tasks.tr.Forget(to) // reply queues are used once
	var err error
	if d.tasks.tr.Served(to) || to == d.o.controlQueue+".doorbell" {
		err = fmt.Errorf("reply_to %s is a served queue: refused", to)
	} else {
		var q *transit.Queue
		if q, err = d.tasks.tr.Lookup(to); err == nil {
			err = q.SendWithin(msg, 200*time.Millisecond)
		}
	}
	if err != nil {
		d.ch.Error.Error("control reply not delivered", "reply_to", to, "error", err)
	}
}

// reconcileNow reloads the config dir and applies it (or, dry, says what
// applying it would do). Removals are applied at once: an operator asked.
func (d *daemon) reconcileNow(dry bool) ([]any, error) {
	out := []any{}
	if dry {
		cfg, err := load(d.schema, d.o.configDir, d.tasks.resolve)
		if err != nil {
			return nil, fmt.Errorf("config does not load:\n%v", schema.Format(err))
		}
		for _, a := range d.ctl.PlanFor(cfg) {
			out = append(out, map[string]any{"task": a.Task(), "action": a.String()})
		}
		return out, nil
	}
	results, err := d.reload(reconcile.Forced)
	if err != nil {
		return nil, err
	}
	for _, r := range results {
		e := map[string]any{"task": r.Action.Task(), "action": r.Action.String()}
		if r.Err != nil {
			e["error"] = r.Err.Error()
		}
		out = append(out, e)
	}
	return out, nil
}

// clear gives a held task another chance.
func (d *daemon) clear(op map[string]any) error {
	task, _ := op["task"].(string)
	_, err := d.ctl.Clear(task)
	return err
}

// status is what `mmctl status` shows: every task that is wanted, runs
// or is held, with its conditions.
func (d *daemon) status() map[string]any {
	now := time.Now()
	running := map[string]runtime.TaskStatus{}
	for _, s := range d.tasks.host.Status() {
		running[s.Name] = s
	}
	tasks := []any{}
	for _, ts := range d.ctl.Tasks() {
		name := ts.Name
		spec, wanted, obs := ts.Spec, ts.Wanted, ts.Running
		s, isRunning := running[name]
		t := map[string]any{"name": name, "where": "internal"}
		if wanted && spec.External {
			t["where"] = "external"
		}
		if obs != nil && !obs.External {
			t["where"] = "internal"
		}
		if p, ok := d.tasks.ext.sup.Lookup(name); ok && obs != nil && obs.External {
			t["where"], t["pid"] = "external", float64(p.Pid)
			t["uptime_s"] = now.Sub(p.Started).Seconds()
			isRunning = p.Alive()
		}
		if wanted {
			t["spec_kind"], t["spec_hash"], t["external"], t["disabled"] = spec.Kind, spec.Hash, spec.External, spec.Disabled
		}
		if obs != nil {
			t["applied_hash"], t["applied_kind"], t["applied_external"] = obs.Hash, obs.Kind, obs.External
		}
		t["generation"], t["observed_generation"] = float64(ts.Generation), float64(ts.ObservedGeneration)
		t["failures_in_a_row"] = float64(ts.Failures)
		if ts.LastError != "" {
			t["last_error"] = ts.LastError
		}
		switch {
		case ts.Hold != nil:
			t["status"] = "held"
			t["held_reason"], t["hold_message"] = ts.Hold.Why, ts.Hold.Message
		case isRunning && ts.Stopping:
			t["status"] = "stopping"
		case isRunning:
			t["status"] = "running"
		case wanted && spec.Disabled:
			t["status"] = "disabled"
		default:
			t["status"] = "stopped"
		}
		conds := []any{}
		for _, c := range ts.Conditions(isRunning) {
			conds = append(conds, condition(c))
		}
		t["conditions"] = conds
		if isRunning && t["where"] == "internal" {
			t["kind"], t["pid"], t["stateful"] = s.Kind, float64(os.Getpid()), s.Stateful
			t["uptime_s"] = now.Sub(s.Started).Seconds()
			t["messages_in"], t["messages_out"] = float64(s.MessagesIn), float64(s.MessagesOut)
			t["failures"], t["send_failures"] = float64(s.Failures), float64(s.SendFailures)
			t["mailbox_depth"], t["busy_s"] = float64(s.Depth), s.Busy.Seconds()
			t["state_generation"] = float64(s.StateGeneration)
		}
		if isRunning && d.mon.tracker.Tracked(name) {
			metrics, levels := d.mon.tracker.Status(name)
			t["metrics"], t["levels"] = anyMap(metrics), anyMap(levels)
			if c, ok := d.mon.tracker.Totals(name); ok && t["where"] == "external" { // as its process last reported
				t["messages_in"], t["messages_out"] = float64(c.In), float64(c.Out)
				t["failures"], t["mailbox_depth"] = float64(c.Failures), float64(c.Depth)
			}
		}
		if isRunning {
			if q, err := d.tasks.tr.Lookup(name); err == nil {
				if qs, err := q.Stats(); err == nil {
					t["queue"] = map[string]any{"messages": float64(qs.Messages), "bytes": float64(qs.Bytes),
						"capacity": float64(qs.Capacity), "fill": qs.Fill}
				}
			}
		}
		tasks = append(tasks, t)
	}
	metrics, levels := anyMap(d.mon.tracker.DaemonValues()), map[string]any{}
	return map[string]any{
		"daemon": map[string]any{
			"pid": float64(os.Getpid()), "started": d.started.UTC().Format(time.RFC3339),
			"uptime_s": now.Sub(d.started).Seconds(), "config_dir": d.o.configDir,
			"config_hash": d.ctl.Desired().SourceHash, "config_error": d.configErr,
			"state_dir": d.o.stateDir, "transit_dir": d.tasks.tr.Dir(), "control_queue": d.o.controlQueue,
			"dead_letters": float64(d.tasks.in.DeadLetters()),
			"metrics":      metrics,
			"levels":       levels,
		},
		"tasks": tasks,
	}
}

// condition is one of a task's conditions as status shows it.
func condition(c reconcile.Condition) map[string]any {
	s := "False"
	if c.Status {
		s = "True"
	}
	m := map[string]any{"type": c.Type, "status": s}
	if c.Reason != "" {
		m["reason"] = c.Reason
	}
	if c.Message != "" {
		m["message"] = c.Message
	}
	return m
}

func anyMap[V any](m map[string]V) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
