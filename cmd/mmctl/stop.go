package main

import (
	"github.com/multimodule/multimodule/internal/control"
	"github.com/spf13/cobra"
)

func newStopCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "stop TASK",
		Short: "Stop a running task and keep it stopped (across daemon restarts) until mmctl start, clear or a change of its config",
		Args:  args(1),
		RunE: func(_ *cobra.Command, a []string) error {
			return g.oneOff(control.StopTask, a[0], "stopping; it stays stopped until mmctl start")
		},
	}
}
