package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/spf13/cobra"
)

type statusOptions struct {
	*globalOptions
	output string
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	o := &statusOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon and its tasks",
		Args:  args(0),
		RunE:  func(*cobra.Command, []string) error { return o.run() },
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "table or json")
	return cmd
}

func (o *statusOptions) run() error {
	if o.output != "table" && o.output != "json" {
		return usageError{fmt.Errorf("-o %q: want table or json", o.output)}
	}
	reply, err := o.request(control.Op{Type: control.Status})
	if err != nil {
		return err
	}
	if reply.Status == nil {
		return errors.New("the daemon's status reply has no status")
	}
	st := reply.Status
	if o.output == "json" {
		enc := json.NewEncoder(o.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(st)
	}
	d := st.Daemon
	fmt.Fprintf(o.stdout, "daemon pid %d, up %s, config %s, state %s, transit %s, dead letters %d\n",
		d.Pid, secs(d.UptimeS), d.ConfigDir, d.StateDir, d.TransitDir, d.DeadLetters)
	if d.ConfigError != "" {
		fmt.Fprintf(o.stdout, "config error (the tasks run on the last good config):\n%s\n", d.ConfigError)
	}
	w := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TASK\tKIND\tWHERE\tSTATUS\tREADY\tGEN\tUPTIME\tCPU\tMEM\tIN\tOUT\tFAILURES\tMAILBOX\tQUEUED\tLEVELS")
	var notes []string
	for _, t := range st.Tasks {
		ready := "?"
		if c, ok := t.Condition("Ready"); ok {
			ready = c.Status
		}
		for _, c := range t.Conditions {
			if c.Status == "True" && c.Message != "" && c.Type != "Ready" {
				notes = append(notes, fmt.Sprintf("%s %s (%s): %s", t.Name, c.Type, c.Reason, c.Message))
			}
		}
		gen := fmt.Sprintf("%s/%s", dash(t.ObservedGeneration), dash(t.Generation))
		kind := cmp.Or(t.Kind, t.SpecKind)
		if t.Status != "running" {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\n", t.Name, kind, t.Where, t.Status, ready, gen)
			continue
		}
		queued := "-"
		if t.Queue != nil {
			queued = strconv.FormatUint(t.Queue.Messages, 10)
		}
		failures := "-"
		if t.Failures != nil {
			n := *t.Failures
			if t.SendFailures != nil {
				n += *t.SendFailures
			}
			failures = strconv.FormatUint(n, 10)
		}
		cpu, mem := "-", "-"
		if v, ok := t.Metrics["cpu"]; ok {
			cpu = fmt.Sprintf("%.2f", v)
		}
		if v, ok := t.Metrics["memory"]; ok {
			mem = fmt.Sprintf("%.0fMiB", v/(1<<20))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, kind, t.Where, t.Status,
			ready, gen, secs(t.UptimeS), cpu, mem, dash(t.MessagesIn), dash(t.MessagesOut), failures,
			dash(t.MailboxDepth), queued, levels(t.Levels))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(o.stdout, n)
	}
	return nil
}

// levels lists the metrics not at ok, as metric=level.
func levels(m map[string]string) string {
	if len(m) == 0 {
		return "ok"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

// dash is *v, or "-" for a field that does not apply.
func dash[T any](v *T) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprint(*v)
}

func secs(f float64) string {
	return time.Duration(f * float64(time.Second)).Round(time.Second).String()
}
