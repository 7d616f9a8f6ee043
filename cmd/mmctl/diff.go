package main

import (
	"fmt"

	"github.com/spf13/cobra"

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
	plan := reconcile.Diff(cfg.Tasks, observed, held)
	changes := 0
	for _, a := range plan {
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
	observed := map[string]reconcile.Observed{}
	held := map[string]string{}
	tr, err := o.transit()
	if err != nil {
		return nil, nil, err
	}
	if !tr.Served(o.controlQueue) {
		return observed, held, nil
	}
	reply, err := o.request(map[string]any{"type": "status"})
	if err != nil {
		return nil, nil, err
	}
	st, _ := reply["status"].(map[string]any)
	tasks, _ := st["tasks"].([]any)
	for _, x := range tasks {
		t, _ := x.(map[string]any)
		name, _ := t["name"].(string)
		if hash, ok := t["applied_hash"].(string); ok {
			kind, _ := t["applied_kind"].(string)
			ext, _ := t["applied_external"].(bool)
			observed[name] = reconcile.Observed{Name: name, Kind: kind, Hash: hash, External: ext}
		}
		if t["status"] == "held" {
			why, _ := t["held_reason"].(string)
			msg, _ := t["hold_message"].(string)
			held[name] = reconcile.Hold{Why: why, Message: msg}.Label()
		}
	}
	return observed, held, nil
}
