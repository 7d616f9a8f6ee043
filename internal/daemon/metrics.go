package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/multimodule/multimodule/monitor"
)

// promCollector serves the latest sample of every task to Prometheus.
type promCollector struct {
	mon *monitoring
	// task and daemon hold one gauge per metric, by metric name.
	task, daemon map[string]*prometheus.Desc
	level, held  *prometheus.Desc
	up           *prometheus.Desc
	in, out      *prometheus.Desc
	failures     *prometheus.Desc
	sampled      *prometheus.Desc
}

func newPromCollector(mon *monitoring) *promCollector {
	c := &promCollector{mon: mon, task: map[string]*prometheus.Desc{}, daemon: map[string]*prometheus.Desc{},
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
	for _, m := range monitor.Metrics {
		c.task[m.Name] = prometheus.NewDesc("multimodule_task_"+m.Prom, m.Help, []string{"task", "where"}, nil)
		c.daemon[m.Name] = prometheus.NewDesc("multimodule_daemon_"+m.Prom, m.Help+" (the daemon process)", nil, nil)
	}
	return c
}

// Describe sends nothing: the series depend on the tasks that run, so the
// collector is unchecked.
func (c *promCollector) Describe(chan<- *prometheus.Desc) {}

func (c *promCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.mon.snap.Load()
	if snap.at.IsZero() {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.sampled, prometheus.GaugeValue, float64(snap.at.UnixNano())/1e9)
	for name, v := range snap.daemon.values {
		ch <- prometheus.MustNewConstMetric(c.daemon[name], prometheus.GaugeValue, v)
	}
	for _, t := range snap.tasks {
		if t.held != "" {
			ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, 1, t.name, t.held)
		}
		if !t.running {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, t.name, t.where)
		for name, v := range t.values {
			ch <- prometheus.MustNewConstMetric(c.task[name], prometheus.GaugeValue, v, t.name, t.where)
		}
		for name, l := range t.levels {
			ch <- prometheus.MustNewConstMetric(c.level, prometheus.GaugeValue, float64(l), t.name, name)
		}
		if !t.totals.at.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.in, prometheus.CounterValue, float64(t.totals.in), t.name, t.where)
			ch <- prometheus.MustNewConstMetric(c.out, prometheus.CounterValue, float64(t.totals.out), t.name, t.where)
			ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(t.totals.failures), t.name, t.where)
		}
	}
}

// serveMetrics serves /metrics on addr in the Prometheus format; the
// returned func stops it.
func (m *monitoring) serveMetrics(addr string) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newPromCollector(m), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{m.ch.Error}}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.ch.Error.Error("serving metrics", "error", err)
		}
	}()
	m.ch.Log.Info("metrics served", "address", "http://"+ln.Addr().String()+"/metrics")
	return func() { srv.Close() }, nil
}

// slogPrinter reports the metrics handler's errors on the error channel.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("metrics", "error", fmt.Sprint(v...)) }
