package monitor

import "github.com/prometheus/client_golang/prometheus"

// collector serves a tracker's latest snapshot to Prometheus.
type collector struct {
	t *Tracker
	// task and daemon hold one gauge per metric, by metric name.
	task, daemon map[string]*prometheus.Desc
	level, held  *prometheus.Desc
	up           *prometheus.Desc
	in, out      *prometheus.Desc
	failures     *prometheus.Desc
	sampled      *prometheus.Desc
}

// NewCollector returns a collector of t's latest sample of every task
// and of the daemon. It reads only the snapshot Observe publishes, so a
// scrape never waits for, nor races with, the tracker's owner.
func NewCollector(t *Tracker) prometheus.Collector {
	c := &collector{t: t, task: map[string]*prometheus.Desc{}, daemon: map[string]*prometheus.Desc{},
		level: prometheus.NewDesc("multimodule_task_level",
			"the task's level for a metric: 0 ok, 1 warn, 2 severe, 3 failsafe", []string{"task", "metric"}, nil),
		held: prometheus.NewDesc("multimodule_task_held",
			"1 while the task is held (failsafe or retries exhausted) until mmctl clear", []string{"task", "reason"}, nil),
		up: prometheus.NewDesc("multimodule_task_up", "1 for a running task", []string{"task", "where"}, nil),
		in: prometheus.NewDesc("multimodule_task_messages_in_total",
			"messages handled since the task (or its process) started", []string{"task", "where"}, nil),
		out: prometheus.NewDesc("multimodule_task_messages_out_total",
			"messages sent and emitted since the task (or its process) started", []string{"task", "where"}, nil),
		failures: prometheus.NewDesc("multimodule_task_failures_total",
			"message handler errors and panics since the task (or its process) started", []string{"task", "where"}, nil),
		sampled: prometheus.NewDesc("multimodule_last_sample_timestamp_seconds",
			"when the tasks were last sampled", nil, nil),
	}
	for _, m := range Metrics {
		c.task[m.Name] = prometheus.NewDesc("multimodule_task_"+m.Prom, m.Help, []string{"task", "where"}, nil)
		c.daemon[m.Name] = prometheus.NewDesc("multimodule_daemon_"+m.Prom, daemonHelp(m), nil, nil)
	}
	return c
}

// daemonHelp is the HELP of the daemon's own figure of m: the task
// metrics' texts speak of a task or an external's process.
func daemonHelp(m Metric) string {
	switch m.Name {
	case CPU:
		return "CPU the daemon process used, in cores"
	case Memory:
		return "resident memory of the daemon process"
	case ReadBytes:
		return "bytes the daemon process read from storage per second"
	case WriteBytes:
		return "bytes the daemon process wrote to storage per second"
	case FDs:
		return "open file descriptors of the daemon process"
	case Threads:
		return "OS threads of the daemon process"
	}
	return "the daemon process: " + m.Help
}

// Describe sends nothing: the series depend on the tasks that run, so the
// collector is unchecked.
func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	snap := c.t.Snapshot()
	if snap.At.IsZero() {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.sampled, prometheus.GaugeValue, float64(snap.At.UnixNano())/1e9)
	for name, v := range snap.Daemon {
		ch <- prometheus.MustNewConstMetric(c.daemon[name], prometheus.GaugeValue, v)
	}
	for _, t := range snap.Tasks {
		if t.Held != "" {
			ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, 1, t.Task, t.Held)
		}
		if !t.Running {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, t.Task, t.Where)
		for name, v := range t.Values {
			ch <- prometheus.MustNewConstMetric(c.task[name], prometheus.GaugeValue, v, t.Task, t.Where)
		}
		for name, l := range t.Levels {
			ch <- prometheus.MustNewConstMetric(c.level, prometheus.GaugeValue, float64(l), t.Task, name)
		}
		if !t.Totals.At.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.in, prometheus.CounterValue, float64(t.Totals.In), t.Task, t.Where)
			ch <- prometheus.MustNewConstMetric(c.out, prometheus.CounterValue, float64(t.Totals.Out), t.Task, t.Where)
			ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(t.Totals.Failures), t.Task, t.Where)
		}
	}
}
