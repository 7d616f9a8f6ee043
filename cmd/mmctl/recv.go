package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/transit"
)

type recvOptions struct {
	*globalOptions
	queue   string
	count   int
	timeout time.Duration
}

func newRecvCmd(g *globalOptions) *cobra.Command {
	o := &recvOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "recv QUEUE",
		Short: "Take messages off a queue and print them as JSON lines (a batch is printed whole)",
		Args:  args(1),
		RunE: func(_ *cobra.Command, a []string) error {
			o.queue = a[0]
			return o.run()
		},
	}
	cmd.Flags().IntVarP(&o.count, "count", "n", 1, "how many messages to take")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 0, "give up after this long (0: wait as long as it takes)")
	return cmd
}

func (o *recvOptions) run() error {
	if o.count < 1 {
		return usageError{errors.New("-n must be at least 1")}
	}
	tr, err := o.transit()
	if err != nil {
		return err
	}
	q, err := tr.Lookup(o.queue) // a typo must not create a queue
	if err != nil {
		return fmt.Errorf("%w (in %s)", err, tr.Dir())
	}
	enc := json.NewEncoder(o.stdout)
	enc.SetEscapeHTML(false)
	var deadline time.Time
	if o.timeout > 0 {
		deadline = time.Now().Add(o.timeout)
	}
	// Poll without blocking in the kernel: a receive that gave up waiting
	// must not take a message it will never print.
	got, backoff := 0, time.Millisecond
	for got < o.count {
		d, err := q.Receive(false)
		if d.Dead > 0 {
			fmt.Fprintf(o.stderr, "mmctl: %d undecodable message(s) moved to %s\n", d.Dead, transit.DeadLetterQueue)
		}
		if err != nil && !errors.Is(err, transit.ErrEmpty) {
			return err
		}
		// A batch comes off the queue whole: print all of it rather than
		// lose what is past -n.
		for _, m := range d.Msgs {
			if err := enc.Encode(m); err != nil {
				return err
			}
			got++
		}
		if got > o.count {
			fmt.Fprintf(o.stderr, "mmctl: printed %d messages: the last ones arrived in one batch with the %dth\n", got, o.count)
		}
		if len(d.Msgs) > 0 || d.Dead > 0 {
			backoff = time.Millisecond
			continue
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v: received %d of %d messages from %s", o.timeout, got, o.count, o.queue)
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 50*time.Millisecond)
	}
	return nil
}
