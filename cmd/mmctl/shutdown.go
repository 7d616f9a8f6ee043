package main

import (
	"fmt"

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
	reply, err := o.request(map[string]any{"type": "cleanly_exit", "exit_externals": o.exitExternals})
	if err != nil {
		return err
	}
	fmt.Fprintln(o.stdout, "daemon is shutting down")
	if note, ok := reply["note"].(string); ok {
		fmt.Fprintln(o.stdout, note)
	}
	return nil
}
