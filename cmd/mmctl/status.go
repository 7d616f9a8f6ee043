package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/spf13/cobra"
)

type statusOptions struct {
	*globalOptions
	output   string
	watch    bool
	interval time.Duration
	width    int
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	o := &statusOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "status [TASK]",
		Short: "Show the daemon and its tasks, or one task whole",
		Long: `Show the daemon and its tasks: NAME, WHERE, PID, READY, STATUS (Running, Held: why,
Stalled: why, Disabled, ...), RESTARTS (unasked exits in the last 10 minutes), AGE, CPU
(cores), MEM, IN/OUT (messages), LEVEL (the worst monitoring level and its metric).
The table fits 100 columns; -o wide adds KIND, GEN, FAILURES, MAILBOX, QUEUED and every
level. "status TASK" shows one task whole: conditions with reasons, every metric with
its level, its queue, its last error.

Exit status: 0 when all is well; 1 when the daemon's config dir does not load (the tasks
run on the last good config), when any task shown is held or stalled, or on an error
(no daemon, no such task); 2 on a usage error. --watch redraws every --interval until
interrupted and then exits 0.`,
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) > 1 {
				return usageError{fmt.Errorf("status takes at most one task, got %d arguments", len(a))}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, a []string) error {
			task := ""
			if len(a) == 1 {
				task = a[0]
			}
			return o.run(task)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "table", "table, wide or json")
	f.BoolVarP(&o.watch, "watch", "w", false, "redraw every --interval until interrupted")
	f.DurationVar(&o.interval, "interval", 2*time.Second, "how often --watch redraws")
	f.IntVar(&o.width, "width", 100, "the table's width (the table mode shortens STATUS, NAME and LEVEL to fit)")
	return cmd
}

func (o *statusOptions) run(task string) error {
	switch {
	case o.output != "table" && o.output != "wide" && o.output != "json":
		return usageError{fmt.Errorf("-o %q: want table, wide or json", o.output)}
	case o.watch && o.interval <= 0:
		return usageError{fmt.Errorf("--interval must be positive, got %v", o.interval)}
	case o.width < 40:
		return usageError{fmt.Errorf("--width %d: want at least 40", o.width)}
	}
	if o.watch {
		return o.watchLoop(task)
	}
	st, err := o.status()
	if err != nil {
		return err
	}
	problems, err := o.render(o.stdout, st, task)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return exitError{code: 1, err: errors.New(strings.Join(problems, "; "))}
	}
	return nil
}

// watchLoop redraws until SIGINT or SIGTERM. On a terminal each frame
// replaces the last; into a pipe frames follow one another, each headed
// by its time, so that a log of them reads in order.
func (o *statusOptions) watchLoop(task string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tty := isTerminal(o.stdout)
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		var frame strings.Builder
		st, err := o.status()
		if err == nil {
			_, err = o.render(&frame, st, task)
		}
		if err != nil {
			fmt.Fprintf(&frame, "mmctl: %v\n", err) // the daemon may come back: keep watching
		}
		if tty {
			fmt.Fprint(o.stdout, "\x1b[H\x1b[2J")
		}
		fmt.Fprintf(o.stdout, "%s (every %v, Ctrl-C ends)\n%s", time.Now().Format(time.TimeOnly), o.interval, frame.String())
		if !tty {
			fmt.Fprintln(o.stdout)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// render writes the status and returns what makes it exit 1.
func (o *statusOptions) render(w io.Writer, st *control.StatusReply, task string) (problems []string, err error) {
	if task != "" {
		return o.renderTask(w, st, task)
	}
	if o.output == "json" {
		return statusProblems(st, st.Tasks), encodeJSON(w, st)
	}
	d := st.Daemon
	fmt.Fprintf(w, "daemon pid %d, up %s, %d tasks, dead letters %d\n", d.Pid, age(d.UptimeS), len(st.Tasks), d.DeadLetters)
	if o.output == "table" {
		fmt.Fprintf(w, "config %s\n", cutLeft(d.ConfigDir, o.width-len("config ")))
	} else {
		fmt.Fprintf(w, "config %s\n", d.ConfigDir)
		fmt.Fprintf(w, "state %s, transit %s, control queue %s\n", d.StateDir, d.TransitDir, d.ControlQueue)
	}
	if d.ConfigError != "" {
		fmt.Fprintf(w, "config error (the tasks run on the last good config):\n%s\n", d.ConfigError)
	}
	tb := &table{header: []string{"NAME", "WHERE", "PID", "READY", "STATUS", "RESTARTS", "AGE", "CPU", "MEM", "IN/OUT", "LEVEL"}}
	if o.output == "wide" {
		tb.header = append(tb.header, "KIND", "GEN", "FAILURES", "MAILBOX", "QUEUED", "LEVELS")
	}
	for _, t := range st.Tasks {
		row := []string{t.Name, t.Where, "-", ready(t), statusText(t), dash(t.Restarts), "-", "-", "-", "-", worstLevel(t.Levels)}
		if t.Running {
			row[2], row[6] = strconv.Itoa(t.Pid), age(t.UptimeS)
			if v, ok := t.Metrics["cpu"]; ok {
				row[7] = fmt.Sprintf("%.2f", v)
			}
			if v, ok := t.Metrics["memory"]; ok {
				row[8] = bytesIEC(v)
			}
			if t.MessagesIn != nil || t.MessagesOut != nil {
				row[9] = count(t.MessagesIn) + "/" + count(t.MessagesOut)
			}
		}
		if o.output == "wide" {
			queued := "-"
			if t.Queue != nil {
				queued = strconv.FormatUint(t.Queue.Messages, 10)
			}
			failures := "-"
			if t.Failures != nil {
				failures = strconv.FormatUint(*t.Failures+deref(t.SendFailures), 10)
			}
			row = append(row, cmp.Or(t.SpecKind, t.AppliedKind, "-"),
				dash(t.ObservedGeneration)+"/"+dash(t.Generation), failures, dash(t.MailboxDepth), queued, levels(t.Levels))
		}
		tb.rows = append(tb.rows, row)
	}
	width := o.width
	if o.output == "wide" {
		width = 0 // wide never shortens
	}
	// NAME and LEVEL give way, in turns, before STATUS; why a task is held
	// or stalled follows the table in full, one line each.
	tb.write(w, width, []shrink{{0, 16}, {10, 10}, {0, 12}, {10, 8}, {0, 10}, {4, 8}})
	for _, t := range st.Tasks {
		if why := statusWhy(t); why != "" {
			line := t.Name + ": " + why
			if o.output != "wide" {
				line = cut(line, o.width)
			}
			fmt.Fprintln(w, line)
		}
	}
	return statusProblems(st, st.Tasks), nil
}

// renderTask shows one task whole.
func (o *statusOptions) renderTask(w io.Writer, st *control.StatusReply, name string) ([]string, error) {
	var t *control.TaskStatus
	var names []string
	for i := range st.Tasks {
		names = append(names, st.Tasks[i].Name)
		if st.Tasks[i].Name == name {
			t = &st.Tasks[i]
		}
	}
	if t == nil {
		return nil, fmt.Errorf("the daemon has no task %q (it has %s)", name, strings.Join(names, ", "))
	}
	problems := statusProblems(&control.StatusReply{}, []control.TaskStatus{*t})
	if o.output == "json" {
		return problems, encodeJSON(w, t)
	}
	kv := func(k, format string, a ...any) { fmt.Fprintf(w, "%-12s %s\n", k+":", fmt.Sprintf(format, a...)) }
	kv("Name", "%s", t.Name)
	kind := cmp.Or(t.SpecKind, t.AppliedKind, "-")
	if t.Kind != "" && t.Kind != kind {
		kind += " (" + t.Kind + ")"
	}
	kv("Kind", "%s", kind)
	where := t.Where
	if t.Running {
		where += fmt.Sprintf(", pid %d, up %s", t.Pid, age(t.UptimeS))
	} else {
		where += ", not running"
	}
	kv("Where", "%s", where)
	kv("Status", "%s", statusText(*t))
	if why := statusWhy(*t); why != "" {
		kv("Why", "%s", why)
	}
	kv("Generation", "%s applied of %s", dash(t.ObservedGeneration), dash(t.Generation))
	kv("Restarts", "%s in the last 10 minutes; %s failures in a row", dash(t.Restarts), dash(t.FailuresInARow))
	if t.LastError != "" {
		kv("Last error", "%s", t.LastError)
	}
	if t.Action != "" {
		kv("Last action", "mmctl %s", t.Action)
	}
	if t.Running {
		kv("Messages", "in %s, out %s, failures %s, send failures %s, mailbox %s",
			dash(t.MessagesIn), dash(t.MessagesOut), dash(t.Failures), dash(t.SendFailures), dash(t.MailboxDepth))
	}
	if q := t.Queue; q != nil {
		kv("Queue", "%d messages, %d of %d bytes (%.0f%% full)", q.Messages, q.Bytes, q.Capacity, 100*q.Fill)
	}
	fmt.Fprintln(w, "Conditions:")
	ct := &table{header: []string{"  TYPE", "STATUS", "REASON", "MESSAGE"}}
	for _, c := range t.Conditions {
		ct.rows = append(ct.rows, []string{"  " + c.Type, c.Status, cmp.Or(c.Reason, "-"), cmp.Or(c.Message, "-")})
	}
	ct.write(w, 0, nil)
	if len(t.Metrics) > 0 {
		fmt.Fprintln(w, "Metrics:")
		mt := &table{header: []string{"  METRIC", "VALUE", "LEVEL"}}
		for _, k := range sortedKeys(t.Metrics) {
			mt.rows = append(mt.rows, []string{"  " + k, strconv.FormatFloat(t.Metrics[k], 'g', 4, 64), cmp.Or(t.Levels[k], "ok")})
		}
		mt.write(w, 0, nil)
	}
	return problems, nil
}

// statusProblems is what makes status exit 1: a config dir that does not
// load, held or stalled tasks.
func statusProblems(st *control.StatusReply, tasks []control.TaskStatus) []string {
	var out []string
	if st.Daemon.ConfigError != "" {
		out = append(out, "the config dir does not load")
	}
	var held, stalled []string
	for _, t := range tasks {
		switch {
		case t.Status == "held" && t.HeldReason == control.HeldStopped:
			// an operator's mmctl stop: not a problem
		case t.Status == "held":
			held = append(held, t.Name)
		case t.Status == "stalled":
			stalled = append(stalled, t.Name)
		}
	}
	if len(held) > 0 {
		out = append(out, fmt.Sprintf("held: %s (mmctl status TASK says why)", strings.Join(held, ", ")))
	}
	if len(stalled) > 0 {
		out = append(out, "stalled: "+strings.Join(stalled, ", "))
	}
	return out
}

// statusText is the STATUS column, short: Running, Retrying, Held:
// failsafe, Held: retries, Stalled, Disabled, Stopping, Stopped. What the
// task actually does shows in PID, AGE and the columns after it (a held
// task may still run its last good spec), and statusWhy says why.
func statusText(t control.TaskStatus) string {
	underWay := strings.HasSuffix(t.Action, "(under way)")
	switch {
	case t.Status == "held" && t.HeldReason == control.HeldStopped:
		if t.Running {
			return "Stopping (mmctl)"
		}
		return "Stopped (mmctl)"
	case underWay && strings.HasPrefix(t.Action, "restart") && t.Status != "held":
		return "Restarting"
	}
	switch t.Status {
	case "held":
		if t.HeldReason == control.HeldFailsafe {
			return "Held: failsafe"
		}
		return "Held: retries"
	case "stalled":
		return "Stalled"
	case "running", "stopped":
		if c, ok := t.Condition("Reconciling"); ok && c.Status == "True" && c.Reason == "Retrying" {
			return "Retrying"
		}
	}
	return strings.ToUpper(t.Status[:min(1, len(t.Status))]) + t.Status[min(1, len(t.Status)):]
}

// statusWhy says, in one line, why a task is held, stalled or retrying,
// and what it does meanwhile; "" for a task that is well.
func statusWhy(t control.TaskStatus) string {
	doing := "not running"
	if t.Running {
		doing = "still running its last applied spec"
	}
	switch statusText(t) {
	case "Held: failsafe", "Held: retries":
		return fmt.Sprintf("held, %s: %s (mmctl clear %s releases it)", doing,
			control.HoldLabel(t.HeldReason, cmp.Or(t.HoldMessage, t.LastError)), t.Name)
	case "Stalled":
		why := "not responding"
		if c, ok := t.Condition("Responding"); ok && c.Message != "" {
			why = c.Message
		}
		return "stalled: " + why
	case "Retrying":
		if c, ok := t.Condition("Reconciling"); ok {
			return "retrying, " + doing + ": " + c.Message
		}
	}
	return ""
}

func ready(t control.TaskStatus) string {
	if c, ok := t.Condition("Ready"); ok && c.Status == "True" {
		return "yes"
	}
	return "no"
}

// levelRank orders the monitoring levels.
var levelRank = map[string]int{"ok": 0, "warn": 1, "severe": 2, "failsafe": 3}

// worstLevel is the LEVEL column: the worst level and its metric, and how
// many more metrics are not ok.
func worstLevel(m map[string]string) string {
	worst, metric, others := "ok", "", 0
	for _, k := range sortedKeys(m) {
		if m[k] == "ok" {
			continue
		}
		if metric != "" {
			others++
		}
		if levelRank[m[k]] > levelRank[worst] || metric == "" {
			worst, metric = m[k], k
		}
	}
	if metric == "" {
		return "ok"
	}
	s := worst + ":" + metric
	if others > 0 {
		s += fmt.Sprintf("+%d", others)
	}
	return s
}

// levels lists the metrics not at ok, as metric=level.
func levels(m map[string]string) string {
	if len(m) == 0 {
		return "ok"
	}
	keys := sortedKeys(m)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// dash is *v, or "-" for a field that does not apply.
func dash[T any](v *T) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprint(*v)
}

func deref[T any](v *T) T {
	var zero T
	if v == nil {
		return zero
	}
	return *v
}

// count is a message count, short: 999, 1.2k, 12k, 3.4M.
func count(v *uint64) string {
	if v == nil {
		return "-"
	}
	n := float64(*v)
	switch {
	case n < 1000:
		return strconv.FormatUint(*v, 10)
	case n < 10_000:
		return fmt.Sprintf("%.1fk", n/1e3)
	case n < 1e6:
		return fmt.Sprintf("%.0fk", n/1e3)
	case n < 1e7:
		return fmt.Sprintf("%.1fM", n/1e6)
	case n < 1e9:
		return fmt.Sprintf("%.0fM", n/1e6)
	}
	return fmt.Sprintf("%.1fG", n/1e9)
}

// bytesIEC is a size, short: 512B, 12Ki, 300Mi, 1.2Gi.
func bytesIEC(v float64) string {
	units := []string{"B", "Ki", "Mi", "Gi", "Ti"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v < 10 && i > 0 {
		return fmt.Sprintf("%.1f%s", v, units[i])
	}
	return fmt.Sprintf("%.0f%s", v, units[i])
}

// age is a duration in seconds, short as kubectl shows it: 45s, 12m,
// 3h5m, 4d2h.
func age(secs float64) string {
	d := time.Duration(secs * float64(time.Second))
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 10*time.Minute:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func encodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
