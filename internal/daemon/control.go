package daemon

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
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
	defer d.tr.Forget(to) // reply queues are used once
	var err error
	if d.tr.Served(to) || to == d.o.controlQueue+".doorbell" {
		err = fmt.Errorf("reply_to %s is a served queue: refused", to)
	} else {
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
func (d *daemon) reconcileNow(dry bool) ([]any, error) {
	out := []any{}
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
			out = append(out, map[string]any{"task": a.Task(), "action": a.String()})
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
func condition(typ string, status bool, reason, message string) map[string]any {
	s := "False"
	if status {
		s = "True"
	}
	c := map[string]any{"type": typ, "status": s}
	if reason != "" {
		c["reason"] = reason
	}
	if message != "" {
		c["message"] = message
	}
	return c
}

// status is what `mmctl status` shows: every task that runs or is
// wanted, with its conditions.
func (d *daemon) status() map[string]any {
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

	tasks := []any{}
	for _, name := range sorted {
		spec, wanted := d.desired.Tasks[name]
		s, isRunning := running[name]
		obs, observed := d.observed[name]
		st := d.tasks[name]
		t := map[string]any{"name": name, "where": "internal"}
		if wanted && spec.External {
			t["where"] = "external"
		}
		if observed && !obs.External {
			t["where"] = "internal"
		}
		p := d.externals[name]
		if p != nil && observed && obs.External {
			t["where"], t["pid"] = "external", float64(p.Pid)
			t["uptime_s"] = now.Sub(p.started).Seconds()
			isRunning = p.alive()
		}
		if wanted {
			t["spec_kind"], t["spec_hash"], t["external"], t["disabled"] = spec.Kind, spec.Hash, spec.External, spec.Disabled
		}
		if observed {
			t["applied_hash"], t["applied_kind"], t["applied_external"] = obs.Hash, obs.Kind, obs.External
		}
		if st != nil {
			t["generation"], t["observed_generation"] = float64(st.generation), float64(st.observedGeneration)
			t["failures_in_a_row"] = float64(st.failures)
			if st.lastErr != "" {
				t["last_error"] = st.lastErr
			}
		}
		upToDate := isRunning && observed && wanted && obs.Hash == spec.Hash
		held := st != nil && st.held
		switch {
		case held:
			t["status"] = "held"
		case isRunning && p != nil && (p.failsafed || p.stopping):
			t["status"] = "stopping"
		case isRunning:
			t["status"] = "running"
		case wanted && spec.Disabled:
			t["status"] = "disabled"
		default:
			t["status"] = "stopped"
		}
		var conds []any
		switch {
		case wanted && spec.Disabled && !isRunning:
			conds = append(conds, condition("Ready", true, "Disabled", "stopped as the config says; state kept"))
		case upToDate:
			conds = append(conds, condition("Ready", true, "Applied", ""))
		default:
			conds = append(conds, condition("Ready", false, "", ""))
		}
		pending := wanted && !spec.Disabled && !upToDate || !wanted && isRunning
		switch {
		case held:
			conds = append(conds, condition("Reconciling", false, "", ""),
				condition("Stalled", true, st.holdWhy, st.lastErr))
		case pending && st != nil && st.lastErr != "":
			conds = append(conds, condition("Reconciling", true, "Retrying",
				fmt.Sprintf("attempt %d failed: %s; next at %s", st.failures, st.lastErr, st.nextTry.Format(time.RFC3339))),
				condition("Stalled", false, "", ""))
		default:
			conds = append(conds, condition("Reconciling", pending, "", ""), condition("Stalled", false, "", ""))
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
		if w := d.mon.tasks[name]; w != nil && isRunning {
			t["metrics"], t["levels"] = w.status()
			if t["where"] == "external" && !w.last.at.IsZero() { // as its process last reported
				t["messages_in"], t["messages_out"] = float64(w.last.in), float64(w.last.out)
				t["failures"], t["mailbox_depth"] = float64(w.last.failures), float64(w.last.depth)
			}
		}
		if isRunning {
			if q, err := d.tr.Lookup(name); err == nil {
				if qs, err := q.Stats(); err == nil {
					t["queue"] = map[string]any{"messages": float64(qs.Messages), "bytes": float64(qs.Bytes),
						"capacity": float64(qs.Capacity), "fill": qs.Fill}
				}
			}
		}
		tasks = append(tasks, t)
	}
	metrics, levels := d.mon.self.status()
	return map[string]any{
		"daemon": map[string]any{
			"pid": float64(os.Getpid()), "started": d.started.UTC().Format(time.RFC3339),
			"uptime_s": now.Sub(d.started).Seconds(), "config_dir": d.o.configDir,
			"config_hash": d.desired.SourceHash, "config_error": d.configErr,
			"state_dir": d.o.stateDir, "transit_dir": d.tr.Dir(), "control_queue": d.o.controlQueue,
			"dead_letters": float64(d.in.DeadLetters()),
			"metrics":      metrics,
			"levels":       levels,
		},
		"tasks": tasks,
	}
}

var _ reconcile.Target = (*daemon)(nil)
