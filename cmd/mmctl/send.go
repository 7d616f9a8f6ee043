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
}

func newSendCmd(g *globalOptions) *cobra.Command {
	o := &sendOptions{globalOptions: g}
	return &cobra.Command{
		Use:   "send QUEUE JSON",
		Short: "Queue a message (a JSON object; - reads it from stdin)",
		Args:  args(2),
		RunE: func(_ *cobra.Command, a []string) error {
			o.queue, o.json = a[0], a[1]
			return o.run()
		},
	}
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
	tr, err := o.transit()
	if err != nil {
		return err
	}
	return tr.Send(o.queue, msg)
}
