package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

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
	reply, err := o.request(map[string]any{"type": "status"})
	if err != nil {
		return err
	}
	st, _ := reply["status"].(map[string]any)
	if o.output == "json" {
		enc := json.NewEncoder(o.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(st)
	}
	d, _ := st["daemon"].(map[string]any)
	fmt.Fprintf(o.stdout, "daemon pid %v, up %s, config %v, state %v, transit %v, dead letters %v\n",
		d["pid"], secs(d["uptime_s"]), d["config_dir"], d["state_dir"], d["transit_dir"], d["dead_letters"])
	if e, _ := d["config_error"].(string); e != "" {
		fmt.Fprintf(o.stdout, "config error (the tasks run on the last good config):\n%s\n", e)
	}
	w := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TASK\tKIND\tWHERE\tSTATUS\tREADY\tGEN\tUPTIME\tCPU\tMEM\tIN\tOUT\tFAILURES\tMAILBOX\tQUEUED\tLEVELS")
	tasks, _ := st["tasks"].([]any)
	var notes []string
	for _, x := range tasks {
		t, _ := x.(map[string]any)
		ready := "?"
		conds, _ := t["conditions"].([]any)
		for _, c := range conds {
			c, _ := c.(map[string]any)
			if c["type"] == "Ready" {
				ready, _ = c["status"].(string)
			}
			if c["status"] == "True" && c["message"] != nil && c["type"] != "Ready" {
				notes = append(notes, fmt.Sprintf("%v %v (%v): %v", t["name"], c["type"], c["reason"], c["message"]))
			}
		}
		gen := fmt.Sprintf("%v/%v", t["observed_generation"], t["generation"])
		kind := t["kind"]
		if kind == nil {
			kind = t["spec_kind"]
		}
		if t["status"] != "running" {
			fmt.Fprintf(w, "%v\t%v\t%v\t%v\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\n", t["name"], kind, t["where"], t["status"], ready, gen)
			continue
		}
		queued := any("-")
		if q, ok := t["queue"].(map[string]any); ok {
			queued = q["messages"]
		}
		failures := any("-")
		if t["failures"] != nil {
			failures = sum(t["failures"], t["send_failures"])
		}
		metrics, _ := t["metrics"].(map[string]any)
		cpu, mem := "-", "-"
		if v, ok := metrics["cpu"].(float64); ok {
			cpu = fmt.Sprintf("%.2f", v)
		}
		if v, ok := metrics["memory"].(float64); ok {
			mem = fmt.Sprintf("%.0fMiB", v/(1<<20))
		}
		fmt.Fprintf(w, "%v\t%v\t%v\t%v\t%s\t%s\t%s\t%s\t%s\t%v\t%v\t%v\t%v\t%v\t%s\n", t["name"], kind, t["where"], t["status"],
			ready, gen, secs(t["uptime_s"]), cpu, mem, dash(t["messages_in"]), dash(t["messages_out"]), failures,
			dash(t["mailbox_depth"]), queued, levels(t["levels"]))
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
func levels(v any) string {
	m, _ := v.(map[string]any)
	if len(m) == 0 {
		return "ok"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = fmt.Sprintf("%s=%v", k, m[k])
	}
	return strings.Join(keys, ",")
}

func dash(v any) any {
	if v == nil {
		return "-"
	}
	return v
}

func secs(v any) string {
	f, _ := v.(float64)
	return time.Duration(f * float64(time.Second)).Round(time.Second).String()
}

func sum(vs ...any) float64 {
	var s float64
	for _, v := range vs {
		f, _ := v.(float64)
		s += f
	}
	return s
}
