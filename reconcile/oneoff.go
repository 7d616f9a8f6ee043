package reconcile

import (
	"errors"
	"fmt"
	"time"
)

// OneOff is an operator's one-off action on one task (mmctl restart,
// stop, start). It changes nothing in the config: the config still says
// what should run, and a change of the task's config ends a stop.
type OneOff string

// The one-off actions.
const (
	// OneOffRestart stops a running task (drain, save) and starts it again
	// with the same spec. It is not a failure.
	OneOffRestart OneOff = "restart"
	// OneOffStop stops a running task and keeps it stopped, across
	// restarts of the daemon too, until start, clear or a change of its
	// config: a hold of its own (HoldStopped), so that status and the plan
	// show it as such.
	OneOffStop OneOff = "stop"
	// OneOffStart ends a OneOffStop.
	OneOffStart OneOff = "start"
)

// HoldStopped: an operator stopped the task (mmctl stop).
const HoldStopped = "Stopped"

// ErrOneOff is wrapped by the refusals of Do: the action does not apply
// to the task as it is.
var ErrOneOff = errors.New("cannot do that now")

// LastOneOff is the last one-off action asked of a task, for status.
type LastOneOff struct {
	Action OneOff
	At     time.Time
	// Done: the task runs again (restart) or stopped (stop) or started
	// (start); false while it is under way.
	Done bool
}

// Do carries out a one-off action on a task. It refuses (ErrOneOff) what
// does not apply: restarting or stopping a task that does not run,
// starting one that an operator did not stop.
func (c *Controller) Do(name string, a OneOff) ([]Result, error) {
	c.changes++
	st := c.tasks[name]
	if st == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoTask, name)
	}
	_, wanted := c.desired.Tasks[name]
	switch a {
	case OneOffRestart, OneOffStop:
		switch {
		case st.stopping:
			return nil, fmt.Errorf("%w: %s: task %s is stopping already", ErrOneOff, a, name)
		case st.running == nil:
			return nil, fmt.Errorf("%w: %s: task %s does not run", ErrOneOff, a, name)
		case !wanted:
			return nil, fmt.Errorf("%w: %s: task %s is no longer in the config: it is being removed", ErrOneOff, a, name)
		}
		if a == OneOffStop {
			c.holdTask(name, st, HoldStopped, "stopped by mmctl stop")
		}
		st.oneOff = &LastOneOff{Action: a, At: c.clock.Now()}
		c.logs.Log.Info("one-off action", "task", name, "action", string(a))
		c.stop(st, name, false)
		return []Result{{Action: oneOffAction{name: name, what: a}}}, nil
	case OneOffStart:
		if st.hold == nil || st.hold.Why != HoldStopped {
			if st.hold != nil {
				return nil, fmt.Errorf("%w: start: task %s is held (%s), not stopped: mmctl clear releases it", ErrOneOff, name, st.hold.Label())
			}
			return nil, fmt.Errorf("%w: start: task %s was not stopped with mmctl stop", ErrOneOff, name)
		}
		st.hold = nil
		st.retry.reset()
		c.saveHolds()
		st.oneOff = &LastOneOff{Action: a, At: c.clock.Now()}
		c.logs.Log.Info("one-off action", "task", name, "action", string(a))
		return c.reconcile(true), nil
	}
	return nil, fmt.Errorf("%w: unknown action %q (want restart, stop or start)", ErrOneOff, a)
}

// oneOffAction is a one-off action as a plan shows it.
type oneOffAction struct {
	name string
	what OneOff
}

func (a oneOffAction) Task() string   { return a.name }
func (a oneOffAction) String() string { return fmt.Sprintf("%s %s (mmctl %s)", a.what, a.name, a.what) }
