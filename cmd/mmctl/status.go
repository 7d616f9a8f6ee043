package main

import (
	"encoding/json"
	"fmt"
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
		fmt.Fprintf(o.stdout, "config error (the running tasks are unchanged):\n%s\n", e)
	}
	w := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TASK\tKIND\tWHERE\tSTATUS\tUPTIME\tIN\tOUT\tFAILURES\tMAILBOX\tQUEUED")
	tasks, _ := st["tasks"].([]any)
	for _, x := range tasks {
		t, _ := x.(map[string]any)
		if t["status"] != "running" {
			fmt.Fprintf(w, "%v\t\t\t%v\t\t\t\t\t\t%v\n", t["name"], t["status"], t["error"])
			continue
		}
		queued := any("-")
		if q, ok := t["queue"].(map[string]any); ok {
			queued = q["messages"]
		}
		fmt.Fprintf(w, "%v\t%v\t%v\t%v\t%s\t%v\t%v\t%v\t%v\t%v\n", t["name"], t["kind"], t["where"], t["status"],
			secs(t["uptime_s"]), t["messages_in"], t["messages_out"], sum(t["failures"], t["send_failures"]),
			t["mailbox_depth"], queued)
	}
	return w.Flush()
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
