package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/transit"
)

type sendOptions struct {
	*globalOptions
	queue, json string
	create      bool
}

func newSendCmd(g *globalOptions) *cobra.Command {
	o := &sendOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "send QUEUE JSON",
		Short: "Queue a message (a JSON object; - reads it from stdin)",
		Long: `Queue a message (a JSON object; - reads it from stdin) on a queue that exists: one a
daemon serves or one that has a key file in the transit dir. A name that is neither (a typo,
most likely) is refused unless --create, which creates the queue (and the transit dir).`,
		Args: args(2),
		RunE: func(_ *cobra.Command, a []string) error {
			o.queue, o.json = a[0], a[1]
			return o.run()
		},
	}
	cmd.Flags().BoolVar(&o.create, "create", false, "create the queue if it does not exist")
	return cmd
}

func (o *sendOptions) run() error {
	text := []byte(o.json)
	if o.json == "-" {
		var err error
		if text, err = io.ReadAll(o.stdin); err != nil {
			return err
		}
	}
	// The daemon's own parser: what passes here is what it will accept.
	msg, err := transit.DecodeJSON(text)
	if err != nil {
		return fmt.Errorf("not sent: %w", err)
	}
	open := o.existingTransit
	if o.create {
		open = o.transit
	}
	tr, err := open()
	if err != nil {
		return fmt.Errorf("not sent: %w", err)
	}
	if !transit.ValidName(o.queue) {
		return fmt.Errorf("not sent: %w %q", transit.ErrBadName, o.queue)
	}
	if !o.create && !tr.Served(o.queue) && !tr.Exists(o.queue) && !o.isTask(tr) {
		return fmt.Errorf("not sent: no such queue: %s in %s: nobody serves it and no key file names it (--create creates it)", o.queue, tr.Dir())
	}
	return tr.Send(o.queue, msg)
}

// isTask asks the daemon, if one serves the control queue, whether the
// queue is one of its tasks': a task's queue is made by its first sender
// from outside, so it may not exist yet.
func (o *sendOptions) isTask(tr *transit.Transit) bool {
	if !tr.Served(o.controlQueue) {
		return false
	}
	st, err := o.status()
	if err != nil {
		return false
	}
	for _, t := range st.Tasks {
		if t.Name == o.queue {
			return true
		}
	}
	return false
}
