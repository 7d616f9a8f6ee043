package main

import (
	"errors"
	"fmt"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/spf13/cobra"
)

type applyOptions struct {
	*globalOptions
	dryRun bool
}

func newApplyCmd(g *globalOptions) *cobra.Command {
	o := &applyOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Have the daemon reload its config dir now and report each task's result",
		Args:  args(0),
		RunE:  func(*cobra.Command, []string) error { return o.run() },
	}
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "only show what would be done")
	return cmd
}

func (o *applyOptions) run() error {
	reply, err := o.request(control.Op{Type: control.Reconcile, DryRun: o.dryRun})
	if err != nil {
		return err
	}
	if len(reply.Results) == 0 {
		fmt.Fprintln(o.stdout, "no changes")
		return nil
	}
	failed := 0
	for _, r := range reply.Results {
		switch {
		case o.dryRun:
			fmt.Fprintln(o.stdout, r.Action)
		case r.Error != "":
			failed++
			fmt.Fprintf(o.stdout, "%s: FAILED: %s\n", r.Action, r.Error)
		default:
			fmt.Fprintf(o.stdout, "%s: ok\n", r.Action)
		}
	}
	if failed > 0 {
		return errors.New("some changes failed; the daemon retries them with backoff")
	}
	return nil
}
