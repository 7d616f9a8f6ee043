package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/multimodule/multimodule/schema"
)

// silentAfter is how many report intervals an external may stay silent
// before it is called stalled. An idle external reports only every 10th
// interval (runtime/external: report), so the bound leaves room for one
// such gap and a late delivery.
const silentAfter = 15

// stalled says why a running external does not work, or "" if it does:
// its process is stopped (SIGSTOP, a debugger: state T or t in /proc), or
// it has sent no report for silentAfter report intervals. A stopped
// process is alive to every other check (its pid and start time are
// right), and its messages just wait in its queue.
func (d *daemon) stalled(task string, pid int, state byte, started time.Time, now time.Time) string {
	if st := state; st == 'T' || st == 't' {
		return fmt.Sprintf("process %d is stopped (state %c: SIGSTOP or a debugger); its messages wait in its queue", pid, st)
	}
	every := schema.Seconds(d.tasks.ext.reportEvery)
	if every <= 0 {
		every = time.Second
	}
	last := started
	if c, ok := d.mon.reports.get(task); ok && c.At.After(last) {
		last = c.At
	}
	if silent := now.Sub(last); silent > silentAfter*every {
		return fmt.Sprintf("process %d has sent no report for %v (it reports every %v)", pid, silent.Round(time.Second), every)
	}
	return ""
}

// checkStalls alerts when a running external stalls and when it works
// again (level ok), once per transition; status shows the reason
// meanwhile. On the owner goroutine, once a sample.
func (d *daemon) checkStalls(now time.Time) {
	// The externals sampled are those that run and are not stopping.
	names := make([]string, 0, len(d.mon.states))
	for name := range d.mon.states {
		names = append(names, name)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	for _, name := range names {
		p, ok := d.tasks.ext.sup.Lookup(name)
		state := d.mon.states[name]
		if !ok { // gone: the supervisor reports its end
			continue
		}
		seen[name] = true
		why := d.stalled(name, p.Pid, state, p.Started, now)
		was := d.mon.stalls[name]
		switch {
		case why != "" && was == "":
			d.mon.stalls[name] = why
			d.ch.Alert.Log(context.Background(), slog.LevelError, "external task stalled", "task", name,
				"metric", "responding", "level", "severe", "reason", why, "queued", d.queued(name))
		case why == "" && was != "":
			delete(d.mon.stalls, name)
			d.ch.Alert.Log(context.Background(), slog.LevelInfo, "external task responding again", "task", name,
				"metric", "responding", "level", "ok")
		case why != "":
			d.mon.stalls[name] = why // the silence grows
		}
	}
	for name := range d.mon.stalls {
		if !seen[name] { // stopped, exited or moved in: no longer ours to watch
			delete(d.mon.stalls, name)
		}
	}
}

// queued is how many messages wait in a task's queue (-1 if unknown).
func (d *daemon) queued(task string) int {
	if q, err := d.tasks.tr.Lookup(task); err == nil {
		if qs, err := q.Stats(); err == nil {
			return int(qs.Messages)
		}
	}
	return -1
}
