package main

import (
	"encoding/json"
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
	for _, n := range names {
		q, err := tr.Lookup(n)
		if err != nil {
			continue // removed meanwhile
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
		return enc.Encode(stats)
	}
	w := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tMESSAGES\tBYTES\tCAPACITY\tFULL")
	for _, s := range stats {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%.0f%%\n", s.Name, s.Messages, s.Bytes, s.Capacity, 100*s.Fill)
	}
	return w.Flush()
}
