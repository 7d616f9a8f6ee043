package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/transit"
)

type recvOptions struct {
	*globalOptions
	queue   string
	count   int
	timeout time.Duration
	follow  bool
	meta    bool
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
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "keep taking and printing messages until interrupted (-n and --timeout do not apply)")
	cmd.Flags().BoolVar(&o.meta, "meta", false, "print the transport's metadata too ("+runtime.MetaKey+", "+runtime.OOBMarker+")")
	return cmd
}

func (o *recvOptions) run() error {
	if o.count < 1 {
		return usageError{errors.New("-n must be at least 1")}
	}
	tr, err := o.existingTransit()
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
	if o.timeout > 0 && !o.follow {
		deadline = time.Now().Add(o.timeout)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Poll without blocking in the kernel: a receive that gave up waiting
	// must not take a message it will never print.
	got, backoff := 0, time.Millisecond
	for got < o.count || o.follow {
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
			if !o.meta {
				delete(m, runtime.MetaKey)
				delete(m, runtime.OOBMarker)
			}
			if err := enc.Encode(m); err != nil {
				return err
			}
			got++
		}
		if got > o.count && !o.follow {
			fmt.Fprintf(o.stderr, "mmctl: printed %d messages: the last ones arrived in one batch with the %dth\n", got, o.count)
		}
		if len(d.Msgs) > 0 || d.Dead > 0 {
			backoff = time.Millisecond
			continue
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v: received %d of %d messages from %s", o.timeout, got, o.count, o.queue)
		}
		select {
		case <-ctx.Done():
			if o.follow {
				return nil // -f ends when asked to
			}
			return fmt.Errorf("interrupted: received %d of %d messages from %s", got, o.count, o.queue)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
	return nil
}
