package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/transit"
)

type queuesOptions struct {
	*globalOptions
	output string
}

func newQueuesCmd(g *globalOptions) *cobra.Command {
	o := &queuesOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "queues",
		Short: "List the queues of the transit dir with their fill",
		Args:  args(0),
		RunE:  func(*cobra.Command, []string) error { return o.run() },
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "table or json")
	return cmd
}

func (o *queuesOptions) run() error {
	if o.output != "table" && o.output != "json" {
		return usageError{fmt.Errorf("-o %q: want table or json", o.output)}
	}
	tr, err := o.transit()
	if err != nil {
		return err
	}
	names, err := tr.Names()
	if err != nil {
		return err
	}
	stats := []transit.Stats{}
	var unreadable []error
	for _, n := range names {
		q, err := tr.Lookup(n)
		if errors.Is(err, transit.ErrNoQueue) {
			continue // removed meanwhile
		}
		if err != nil {
			// A damaged key file (or a queue that is not ours) is
			// reported, not skipped: IPC::Transit's tools die on one.
			unreadable = append(unreadable, err)
			continue
		}
		st, err := q.Stats()
		if err != nil {
			return err
		}
		stats = append(stats, st)
	}
	if o.output == "json" {
		enc := json.NewEncoder(o.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(stats); err != nil {
			return err
		}
		return unreadableErr(unreadable)
	}
	w := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tMESSAGES\tBYTES\tCAPACITY\tFULL")
	for _, s := range stats {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%.0f%%\n", s.Name, s.Messages, s.Bytes, s.Capacity, 100*s.Fill)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return unreadableErr(unreadable)
}

// unreadableErr makes the exit status say that some queues were not
// listed.
func unreadableErr(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d queue(s) not listed:\n%w", len(errs), errors.Join(errs...))
}
