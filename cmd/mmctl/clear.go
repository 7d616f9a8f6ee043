package main

import (
	"fmt"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/spf13/cobra"
)

type clearOptions struct {
	*globalOptions
	task string
}

func newClearCmd(g *globalOptions) *cobra.Command {
	o := &clearOptions{globalOptions: g}
	return &cobra.Command{
		Use:   "clear TASK",
		Short: "Give a held task another chance",
		Args:  args(1),
		RunE: func(_ *cobra.Command, a []string) error {
			o.task = a[0]
			return o.run()
		},
	}
}

func (o *clearOptions) run() error {
	if _, err := o.request(control.Op{Type: control.Clear, Task: o.task}); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "%s cleared\n", o.task)
	return nil
}
