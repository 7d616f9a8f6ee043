package main

import (
	"errors"
	"fmt"

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
	reply, err := o.request(map[string]any{"type": "reconcile", "dry_run": o.dryRun})
	if err != nil {
		return err
	}
	results, _ := reply["results"].([]any)
	if len(results) == 0 {
		fmt.Fprintln(o.stdout, "no changes")
		return nil
	}
	failed := 0
	for _, x := range results {
		r, _ := x.(map[string]any)
		switch {
		case o.dryRun:
			fmt.Fprintf(o.stdout, "%v\n", r["action"])
		case r["error"] != nil:
			failed++
			fmt.Fprintf(o.stdout, "%v: FAILED: %v\n", r["action"], r["error"])
		default:
			fmt.Fprintf(o.stdout, "%v: ok\n", r["action"])
		}
	}
	if failed > 0 {
		return errors.New("some changes failed; the daemon retries them with backoff")
	}
	return nil
}
