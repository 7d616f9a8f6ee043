package main

import (
	"cmp"
	"errors"
	"fmt"

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
	observed, held, err := o.observed()
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
	}
	if changes > 0 {
		return exitError{code: 1}
	}
	return nil
}

// observed asks the daemon what runs. Without a daemon serving the control
// queue, nothing runs.
func (o *diffOptions) observed() (map[string]reconcile.Observed, map[string]string, error) {
	tr, err := o.transit()
	if err != nil {
		return nil, nil, err
	}
	if !tr.Served(o.controlQueue) {
		observed, held := observedFrom(nil)
		return observed, held, nil
	}
	reply, err := o.request(control.Op{Type: control.Status})
	if err != nil {
		return nil, nil, err
	}
	if reply.Status == nil {
		return nil, nil, errors.New("the daemon's status reply has no status")
	}
	observed, held := observedFrom(reply.Status.Tasks)
	return observed, held, nil
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
