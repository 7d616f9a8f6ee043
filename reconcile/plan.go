// Package reconcile is the controller: it turns the desired tasks (a
// loaded config) and the observed ones (what runs) into a plan of typed
// actions, and carries them out through a Target with per-task retries,
// backoff and holds.
//
// Reconciling is level-based and keyed by task name: the plan depends only
// on the two states, never on how they came about, so applying the same
// config twice does nothing the second time.
package reconcile

import (
	"errors"
	"fmt"
	"sort"

	"github.com/multimodule/multimodule/schema"
)

// Observed is what runs under one name.
type Observed struct {
	Name string
	// Kind is the kind as the config named it when the task was started.
	Kind string
	// Hash is the spec hash the task last applied.
	Hash string
	// External is where it runs.
	External bool
}

// Action is one step of a plan.
type Action interface {
	// Task is the name the action is about.
	Task() string
	// String renders the action as `mmctl diff` shows it.
	String() string
}

// Start starts a task that does not run.
type Start struct{ Spec schema.TaskSpec }

// Stop stops a task that is no longer wanted (removed, or disabled; its
// state is kept either way).
type Stop struct {
	Name   string
	Reason string
}

// Reconfigure hands a running task its changed spec; its state is kept.
type Reconfigure struct{ Spec schema.TaskSpec }

// Restart stops and starts a task whose change cannot be applied in place.
type Restart struct {
	Spec   schema.TaskSpec
	Reason string
}

// Migrate moves a task between the daemon and its own process, with its
// state and its queue.
type Migrate struct {
	Spec schema.TaskSpec
	From string // internal or external
}

func (a Migrate) Task() string { return a.Spec.Name }
func (a Migrate) String() string {
	return fmt.Sprintf("> migrate %s %s->%s", a.Spec.Name, a.From, where(a.Spec.External))
}

// Held is a change that waits because the task is held (its retries ran
// out, or a failsafe stopped it) until `mmctl clear` or a config change.
type Held struct {
	Name   string
	Reason string
}

func (a Held) Task() string   { return a.Name }
func (a Held) String() string { return fmt.Sprintf("! held %s (%s)", a.Name, a.Reason) }

func (a Start) Task() string       { return a.Spec.Name }
func (a Stop) Task() string        { return a.Name }
func (a Reconfigure) Task() string { return a.Spec.Name }
func (a Restart) Task() string     { return a.Spec.Name }

func where(external bool) string {
	if external {
		return "external"
	}
	return "internal"
}

func (a Start) String() string {
	return fmt.Sprintf("+ start %s (%s)", a.Spec.Name, where(a.Spec.External))
}
func (a Stop) String() string { return fmt.Sprintf("- stop %s (%s)", a.Name, a.Reason) }
func (a Reconfigure) String() string {
	return fmt.Sprintf("~ reconfigure %s", a.Spec.Name)
}
func (a Restart) String() string { return fmt.Sprintf("-/+ restart %s (%s)", a.Spec.Name, a.Reason) }

// Plan lists what turns observed into desired, ordered by kind of action
// (stops, restarts, migrations, reconfigures, starts) and then by name.
func Plan(desired map[string]schema.TaskSpec, observed map[string]Observed) []Action {
	var stops, restarts, migrates, reconfs, starts []Action
	for name, o := range observed {
		d, ok := desired[name]
		switch {
		case !ok:
			stops = append(stops, Stop{Name: name, Reason: "removed from the config"})
		case d.Disabled:
			stops = append(stops, Stop{Name: name, Reason: "disabled"})
		case d.Kind != o.Kind:
			restarts = append(restarts, Restart{Spec: d, Reason: "kind changed"})
		case d.External != o.External:
			migrates = append(migrates, Migrate{Spec: d, From: where(o.External)})
		case d.Hash != o.Hash:
			reconfs = append(reconfs, Reconfigure{Spec: d})
		}
	}
	for name, d := range desired {
		if _, running := observed[name]; !running && !d.Disabled {
			starts = append(starts, Start{Spec: d})
		}
	}
	var plan []Action
	for _, group := range [][]Action{stops, restarts, migrates, reconfs, starts} {
		sort.Slice(group, func(i, j int) bool { return group[i].Task() < group[j].Task() })
		plan = append(plan, group...)
	}
	return plan
}

// Result is the outcome of one action.
type Result struct {
	Action Action
	Err    error
}

// Errors joins the failures of a plan's results, each naming its action.
func Errors(results []Result) error {
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Action, r.Err))
		}
	}
	return errors.Join(errs...)
}
