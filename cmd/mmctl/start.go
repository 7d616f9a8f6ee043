package main

import (
	"github.com/multimodule/multimodule/internal/control"
	"github.com/spf13/cobra"
)

func newStartCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "start TASK",
		Short: "Start a task stopped with mmctl stop",
		Args:  args(1),
		RunE: func(_ *cobra.Command, a []string) error {
			return g.oneOff(control.StartTask, a[0], "starting")
		},
	}
}
