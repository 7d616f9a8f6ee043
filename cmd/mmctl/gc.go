package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/multimodule/multimodule/runtime/external"
	"github.com/multimodule/multimodule/transit"
	"github.com/spf13/cobra"
)

type gcOptions struct {
	*globalOptions
	yes bool
}

func newGCCmd(g *globalOptions) *cobra.Command {
	o := &gcOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "List (and with --yes remove) the queues and state files of tasks no longer in the config",
		Long: `List the queues and state files of tasks the running daemon no longer knows: not in its
config, not running, not held. A queue counts only if it is nobody's (no daemon or external
serves it) and has a state file or an external task's file, so that it surely was a task's;
other queues nobody serves are listed as such and kept (mmctl queues rm removes them).
State files: STATE/tasks/NAME.db (and quarantined copies) and STATE/external/NAME.json and
NAME.log. Nothing is removed without --yes; a removed stateful task's state is gone for good.`,
		Args: args(0),
		RunE: func(*cobra.Command, []string) error { return o.run() },
	}
	cmd.Flags().BoolVar(&o.yes, "yes", false, "remove what is listed")
	return cmd
}

func (o *gcOptions) run() error {
	st, err := o.status()
	if err != nil {
		return fmt.Errorf("gc asks the running daemon what its tasks are: %w", err)
	}
	tr, err := o.existingTransit()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, t := range st.Tasks {
		known[t.Name] = true
	}
	// The daemon's own queues are never a task's.
	cq := st.Daemon.ControlQueue
	for _, n := range []string{cq, cq + ".doorbell", cq + ".oob", transit.DeadLetterQueue} {
		known[n] = true
	}
	state := st.Daemon.StateDir
	files := map[string][]string{} // orphaned task -> its state files
	add := func(pattern string, name func(string) string) {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			if n := name(filepath.Base(p)); n != "" && !known[n] {
				files[n] = append(files[n], p)
			}
		}
	}
	add(filepath.Join(state, "tasks", "*.db*"), func(b string) string { n, _, _ := strings.Cut(b, ".db"); return n })
	add(filepath.Join(external.Dir(state), "*.json"), func(b string) string { return strings.TrimSuffix(b, ".json") })
	add(filepath.Join(external.Dir(state), "*.log"), func(b string) string { return strings.TrimSuffix(b, ".log") })

	names, err := tr.Names()
	if err != nil {
		return err
	}
	var queues, strangers []string
	for _, n := range names {
		if known[n] || tr.Served(n) || strings.HasSuffix(n, ".doorbell") {
			continue
		}
		if files[n] != nil {
			queues = append(queues, n)
		} else {
			strangers = append(strangers, n)
		}
	}
	var paths []string
	for _, ps := range files {
		paths = append(paths, ps...)
	}
	sort.Strings(paths)
	if len(queues)+len(paths) == 0 {
		fmt.Fprintln(o.stdout, "nothing to remove")
	}
	for _, q := range queues {
		fmt.Fprintf(o.stdout, "queue %s\n", q)
	}
	for _, p := range paths {
		fmt.Fprintf(o.stdout, "file  %s\n", p)
	}
	for _, q := range strangers {
		fmt.Fprintf(o.stdout, "kept: queue %s: nobody serves it, but nothing says it was a task's (mmctl queues rm %s)\n", q, q)
	}
	if !o.yes {
		if len(queues)+len(paths) > 0 {
			fmt.Fprintln(o.stdout, "(nothing removed: --yes removes the queues and files above)")
		}
		return nil
	}
	var errs []error
	for _, q := range queues {
		if err := tr.Remove(q); err != nil {
			errs = append(errs, fmt.Errorf("queue %s: %w", q, err))
		}
	}
	for _, p := range paths {
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "removed %d queues and %d files\n", len(queues), len(paths))
	return nil
}
