package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/transit"
)

type transitInitOptions struct {
	*globalOptions
	ipcTransit bool
}

// newTransitCmd groups what concerns the transit dir itself.
func newTransitCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "transit", Short: "Prepare a transit dir", Args: args(0)}
	o := &transitInitOptions{globalOptions: g}
	initCmd := &cobra.Command{
		Use:   "init [--ipc-transit] [DIR]",
		Short: "Create a transit dir (default: -T); --ipc-transit marks it shared with Perl IPC::Transit",
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) > 1 {
				return usageError{fmt.Errorf("init takes at most one DIR, got %d", len(a))}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, a []string) error {
			dir := o.transitDir
			if len(a) == 1 {
				dir = a[0]
			}
			return o.run(dir)
		},
	}
	initCmd.Flags().BoolVar(&o.ipcTransit, "ipc-transit", false,
		"write IPC::Transit's formats in DIR, so that its strans, rtrans, qtrans and programs share it")
	cmd.AddCommand(initCmd)
	return cmd
}

func (o *transitInitOptions) run(dir string) error {
	if dir == "" {
		return usageError{errors.New("no transit dir")}
	}
	if o.ipcTransit {
		if err := transit.MarkIPCTransit(dir); err != nil {
			return err
		}
	}
	// Opening checks what marking did not: that the dir is ours and
	// private, and that its format is one we speak.
	tr, err := transit.Open(transit.Options{Dir: dir})
	if err != nil {
		return err
	}
	format := "MultiModule's own"
	if tr.IPCTransit() {
		format = "shared with IPC::Transit (" + transit.FormatFile + ": " + transit.FormatIPCTransit + ")"
	}
	fmt.Fprintf(o.stdout, "transit dir %s: %s\n", tr.Dir(), format)
	return nil
}
