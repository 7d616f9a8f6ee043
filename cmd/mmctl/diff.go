package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/schema"
)

type diffOptions struct {
	*globalOptions
	configDir string
}

func newDiffCmd(g *globalOptions) *cobra.Command {
	o := &diffOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "diff",
		Short: "Show what applying a config dir to the running daemon would do (exit 0: nothing, 1: changes, 2: error)",
		Args:  args(0),
		RunE:  func(*cobra.Command, []string) error { return o.run() },
	}
	cmd.Flags().StringVarP(&o.configDir, "config", "c", ".", "config dir (or one file)")
	return cmd
}

func (o *diffOptions) run() error {
	cfg, err := loadConfig(o.configDir)
	if err != nil {
		fmt.Fprint(o.stderr, schema.Format(err))
		return exitError{code: 2}
	}
	observed, held, applied, err := o.observed()
	if err != nil {
		return exitError{code: 2, err: err}
	}
	plan := reconcile.Plan(cfg.Tasks, observed)
	changes := 0
	for _, a := range plan {
		if reason, ok := held[a.Task()]; ok {
			a = reconcile.Held{Name: a.Task(), Reason: reason}
		}
		fmt.Fprintln(o.stdout, a.String())
		changes++
		if spec, ok := changedSpec(a); ok && applied[a.Task()] != nil {
			d, err := specDiff(a.Task(), applied[a.Task()], spec)
			if err != nil {
				return exitError{code: 2, err: err}
			}
			fmt.Fprint(o.stdout, d)
		}
	}
	if changes > 0 {
		return exitError{code: 1}
	}
	return nil
}

// observed asks the daemon what runs. Without a daemon serving the control
// queue, nothing runs.
// applied is the spec each task runs with, where the daemon knows it.
func (o *diffOptions) observed() (observed map[string]reconcile.Observed, held map[string]string, applied map[string]json.RawMessage, err error) {
	tr, err := o.existingTransit()
	if errors.Is(err, errNoTransitDir) {
		observed, held := observedFrom(nil) // no transit dir: no daemon, and nothing created
		return observed, held, nil, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if !tr.Served(o.controlQueue) {
		observed, held := observedFrom(nil)
		return observed, held, nil, nil
	}
	reply, err := o.request(control.Op{Type: control.Status})
	if err != nil {
		return nil, nil, nil, err
	}
	if reply.Status == nil {
		return nil, nil, nil, errors.New("the daemon's status reply has no status")
	}
	observed, held = observedFrom(reply.Status.Tasks)
	applied = map[string]json.RawMessage{}
	for _, t := range reply.Status.Tasks {
		if len(t.Applied) > 0 {
			applied[t.Name] = t.Applied
		}
	}
	return observed, held, applied, nil
}

// changedSpec is the new spec of an action that changes a running task in
// place or by a restart.
func changedSpec(a reconcile.Action) (schema.TaskSpec, bool) {
	switch a := a.(type) {
	case reconcile.Reconfigure:
		return a.Spec, true
	case reconcile.Restart:
		return a.Spec, true
	case reconcile.Migrate:
		return a.Spec, true
	}
	return schema.TaskSpec{}, false
}

// specDiff is a unified diff of a task's spec, from what runs to what the
// config says, as indented JSON (keys sorted), each line indented under
// its action.
func specDiff(name string, applied json.RawMessage, want schema.TaskSpec) (string, error) {
	b, err := json.Marshal(want)
	if err != nil {
		return "", fmt.Errorf("task %s: %w", name, err)
	}
	from, err := canonicalJSON(applied)
	if err != nil {
		return "", fmt.Errorf("task %s: the daemon's applied spec: %w", name, err)
	}
	to, err := canonicalJSON(b)
	if err != nil {
		return "", fmt.Errorf("task %s: %w", name, err)
	}
	d := unifiedDiff("running/"+name, "config/"+name, from, to, 2)
	return indent(d, "    "), nil
}

// canonicalJSON is b indented with its keys sorted, so that equal specs
// read the same line by line.
func canonicalJSON(b []byte) ([]string, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return strings.Split(string(out), "\n"), nil
}

func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}

// observedFrom is what runs, as the daemon's status says, and why each
// held task is held, as the daemon's own plan labels it.
func observedFrom(tasks []control.TaskStatus) (observed map[string]reconcile.Observed, held map[string]string) {
	observed, held = map[string]reconcile.Observed{}, map[string]string{}
	for _, t := range tasks {
		if t.AppliedHash != "" {
			observed[t.Name] = reconcile.Observed{Name: t.Name, Kind: t.AppliedKind, Hash: t.AppliedHash,
				External: t.AppliedExternal != nil && *t.AppliedExternal}
		}
		if t.Status == "held" {
			// A daemon without hold_message said it in last_error.
			held[t.Name] = control.HoldLabel(t.HeldReason, cmp.Or(t.HoldMessage, t.LastError))
		}
	}
	return observed, held
}
