package main

import (
	"fmt"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/spf13/cobra"
)

type shutdownOptions struct {
	*globalOptions
	exitExternals bool
}

func newShutdownCmd(g *globalOptions) *cobra.Command {
	o := &shutdownOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "shutdown",
		Short: "Ask the daemon to drain, save every state and exit",
		Args:  args(0),
		RunE:  func(*cobra.Command, []string) error { return o.run() },
	}
	cmd.Flags().BoolVar(&o.exitExternals, "exit-externals", false, "stop external tasks too (by default they keep running)")
	return cmd
}

func (o *shutdownOptions) run() error {
	if _, err := o.request(control.Op{Type: control.CleanlyExit, ExitExternals: o.exitExternals}); err != nil {
		return err
	}
	fmt.Fprintln(o.stdout, "daemon is shutting down")
	return nil
}
