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
	cmd.AddCommand(newQueuesRmCmd(g))
	return cmd
}

func newQueuesRmCmd(g *globalOptions) *cobra.Command {
	force, all := false, false
	cmd := &cobra.Command{
		Use:   "rm NAME... | rm --all",
		Short: "Remove queues with the messages in them (not one a daemon serves, unless --force)",
		Long: `Remove queues with the messages in them: the kernel queue and its key file. A queue a
running daemon or external task serves is kept unless --force. --all removes every queue of the
transit dir (make clean uses it before it removes the dir: a kernel queue whose key file is gone
stays in the kernel, out of reach of every tool but ipcrm).`,
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) == 0 && !all {
				return usageError{errors.New("queues rm takes one or more queue names, or --all")}
			}
			if len(a) > 0 && all {
				return usageError{errors.New("queues rm takes queue names or --all, not both")}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, names []string) error {
			tr, err := g.existingTransit()
			if err != nil {
				return err
			}
			if all {
				if names, err = tr.Names(); err != nil {
					return err
				}
			}
			var errs []error
			for _, n := range names {
				if tr.Served(n) && !force {
					errs = append(errs, fmt.Errorf("queue %s is served by a running daemon or external task: not removed (--force removes it anyway)", n))
					continue
				}
				if _, err := tr.Lookup(n); err != nil {
					errs = append(errs, err)
					continue
				}
				if err := tr.Remove(n); err != nil {
					errs = append(errs, fmt.Errorf("queue %s: %w", n, err))
					continue
				}
				fmt.Fprintf(g.stdout, "removed %s\n", n)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove a queue even while it is served")
	cmd.Flags().BoolVar(&all, "all", false, "remove every queue of the transit dir")
	return cmd
}

func (o *queuesOptions) run() error {
	if o.output != "table" && o.output != "json" {
		return usageError{fmt.Errorf("-o %q: want table or json", o.output)}
	}
	tr, err := o.existingTransit()
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
