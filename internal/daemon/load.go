package daemon

import (
	"fmt"
	"strings"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/schema"
)

// DefaultLoadTimeout bounds one evaluation of the config dir (--load-timeout).
// CUE can be made to evaluate for minutes (a nested comprehension, a
// list of 400k numbers); past the bound the last good config keeps running.
const DefaultLoadTimeout = 10 * time.Second

// loadResult is the end of one evaluation of the config dir.
type loadResult struct {
	cfg *schema.Config
	err error
	// timedOut: the evaluation outlived the timeout and was abandoned (it
	// still runs; freed says when it ends).
	timedOut bool
}

// loadRequest is what a load is for: the controller's LoadKind, whether to
// apply the config (an `apply --dry-run` alone only plans), and the
// control requests answered when it ends.
type loadRequest struct {
	kind    reconcile.LoadKind
	apply   bool
	waiters []waiter
}

// merge folds o into r: the strongest kind (Forced > Confirming >
// Watched), apply if either applies, and every waiter.
func (r *loadRequest) merge(o loadRequest) {
	r.kind = max(r.kind, o.kind)
	r.apply = r.apply || o.apply
	r.waiters = append(r.waiters, o.waiters...)
}

// waiter is a control request (reconcile) whose reply waits for a load.
type waiter struct {
	replyTo string
	reply   control.Reply
	dry     bool
}

// loader runs the config dir's evaluation beside the owner, one at a time.
// A load asked for while one runs is merged into the next one, which
// starts when the running one ends; so an edit seen during a load is
// loaded right after it. All fields are the owner's.
type loader struct {
	timeout time.Duration
	// results delivers the end of the current load (or its timeout);
	// freed, after a timeout, the end of the abandoned evaluation. Each
	// holds one: at most one evaluation runs, so neither send blocks.
	results chan loadResult
	freed   chan struct{}
	// busy: an evaluation runs (perhaps abandoned); cur is what it is
	// for, next what is asked for meanwhile (nil: nothing).
	busy bool
	cur  loadRequest
	next *loadRequest
}

func newLoader(timeout time.Duration) *loader {
	if timeout <= 0 {
		timeout = DefaultLoadTimeout
	}
	return &loader{timeout: timeout, results: make(chan loadResult, 1), freed: make(chan struct{}, 1)}
}

// evaluate loads dir in a goroutine of its own; the result arrives on the
// returned channel, however late.
func (d *daemon) evaluate() <-chan loadResult {
	done := make(chan loadResult, 1)
	go func() {
		cfg, err := load(d.schema, d.o.configDir, d.cfg.resolve)
		done <- loadResult{cfg: cfg, err: err}
	}()
	return done
}

// timedOut is the error of a load that outlived the timeout.
func (l *loader) timedOut(dir string) error {
	return fmt.Errorf("%s: loading the config timed out after %v (a CUE evaluation that slow is likely a large list or a nested comprehension); "+
		"the evaluation is abandoned and no other load starts until it ends", dir, l.timeout)
}

// requestLoad asks for a load of the config dir: at once if none runs,
// otherwise right after the running one.
func (d *daemon) requestLoad(r loadRequest) {
	l := d.cfg.loads
	if l.next == nil {
		l.next = &loadRequest{}
	}
	l.next.merge(r)
	if !l.busy {
		d.startLoad()
	}
}

// startLoad starts the next load beside the owner.
func (d *daemon) startLoad() {
	l := d.cfg.loads
	if l.next == nil || l.busy {
		return
	}
	l.cur, l.next, l.busy = *l.next, nil, true
	done := d.evaluate()
	timeout, dir := l.timeout, d.o.configDir
	go func() {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case r := <-done:
			l.results <- r
			return
		case <-t.C:
			l.results <- loadResult{err: l.timedOut(dir), timedOut: true}
		}
		// CUE cannot be cancelled: the evaluation runs to its end, and
		// until then no other starts (at most one runs).
		<-done
		l.freed <- struct{}{}
	}()
}

// loaded takes the end of a load: applies it (or reports why not) and
// answers the control requests that waited for it.
func (d *daemon) loaded(r loadResult) {
	l := d.cfg.loads
	req := l.cur
	l.cur = loadRequest{}
	if !r.timedOut {
		l.busy = false
	}
	var results []reconcile.Result
	var err error
	switch {
	case r.err != nil:
		d.cfg.counts.errors.Add(1)
		msg := strings.TrimSpace(schema.Format(r.err))
		if r.timedOut {
			msg = r.err.Error()
		}
		if req.apply {
			d.cfg.err = msg
			d.ch.Error.Error("config not applied: the running tasks are unchanged", "config", d.o.configDir, "error", msg)
		}
		err = fmt.Errorf("config not applied:\n%s", msg)
	case req.apply:
		if d.cfg.err != "" {
			d.ch.Log.Info("config loads again", "config", d.o.configDir)
		}
		d.cfg.err = ""
		if d.cfg.counts.generation.Add(1) > 1 {
			d.cfg.counts.reloads.Add(1)
		}
		results = d.apply(r.cfg, req.kind)
	}
	for _, w := range req.waiters {
		rep := w.reply
		switch {
		case err != nil:
			rep.OK, rep.Error = false, err.Error()
		case w.dry:
			rep.Results = actions(d.ctl.PlanFor(r.cfg))
		default:
			rep.Results = append(actionResults(results), d.heldResults(results)...)
		}
		d.reply(w.replyTo, rep)
	}
	d.startLoad()
}

// freed notes that an abandoned evaluation ended: the next load may start.
func (d *daemon) freed() {
	d.cfg.loads.busy = false
	d.ch.Log.Info("an abandoned config evaluation ended", "config", d.o.configDir)
	d.startLoad()
}

// waiting takes every control request still waiting for a load (the
// shutdown refuses them).
func (l *loader) waiting() []waiter {
	ws := l.cur.waiters
	if l.next != nil {
		ws = append(ws, l.next.waiters...)
	}
	l.cur.waiters, l.next = nil, nil
	return ws
}

// actionResults renders what a load did for the wire.
func actionResults(results []reconcile.Result) []control.ActionResult {
	var out []control.ActionResult
	for _, r := range results {
		e := control.ActionResult{Task: r.Action.Task(), Action: r.Action.String()}
		if r.Err != nil {
			e.Error = r.Err.Error()
		}
		out = append(out, e)
	}
	return out
}

// heldResults reports, as failed, every task the apply could not touch
// because it is held, unless results already name it: an apply that
// leaves a failing change behind must not say "no changes".
func (d *daemon) heldResults(results []reconcile.Result) []control.ActionResult {
	done := map[string]bool{}
	for _, r := range results {
		done[r.Action.Task()] = true
	}
	var out []control.ActionResult
	for _, a := range d.ctl.Plan() {
		if h, ok := a.(reconcile.Held); ok && !done[h.Name] {
			out = append(out, control.ActionResult{Task: h.Name, Action: a.String(),
				Error: "held, not applied (mmctl clear " + h.Name + " or change its config): " + h.Reason})
		}
	}
	return out
}

// firstLoad is the load at start-up, bounded like every other: a daemon
// whose config does not load (in time) does not start.
func (d *daemon) firstLoad() (*schema.Config, error) {
	select {
	case r := <-d.evaluate():
		if r.err != nil {
			return nil, fmt.Errorf("config %s:\n%s", d.o.configDir, schema.Format(r.err))
		}
		return r.cfg, nil
	case <-time.After(d.cfg.loads.timeout):
		return nil, d.cfg.loads.timedOut(d.o.configDir)
	}
}
