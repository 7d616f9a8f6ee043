package main

import (
	"github.com/multimodule/multimodule/internal/control"
	"github.com/spf13/cobra"
)

func newRestartCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "restart TASK",
		Short: "Restart a running task: drain, save, start it again with the same spec (not a failure)",
		Args:  args(1),
		RunE: func(_ *cobra.Command, a []string) error {
			return g.oneOff(control.RestartTask, a[0], "restarting")
		},
	}
}
