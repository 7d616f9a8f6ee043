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
	"github.com/multimodule/multimodule/tasks/router"
	"github.com/multimodule/multimodule/transit"
)

// serveMetrics serves /metrics on addr in the Prometheus format; the
// returned func stops it.
func (m *monitoring) serveMetrics(addr string, tr *transit.Transit, loads *loadCounts) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(monitor.NewCollector(m.tracker), collectors.NewGoCollector(), readyCollector{loads},
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "multimodule_config_load_errors_total",
			Help: "loads of the config dir that failed or timed out (the last good config kept running)"},
			func() float64 { return float64(loads.errors.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "multimodule_reloads_total",
			Help: "configs applied after the first (a changed config dir, or mmctl apply)"},
			func() float64 { return float64(loads.reloads.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "multimodule_config_generation",
			Help: "how many configs the daemon has applied since it started"},
			func() float64 { return float64(loads.generation.Load()) }),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "multimodule_unrouted_total",
			Help: "messages the daemon's Router matched no route for"},
			func() float64 { return float64(router.UnroutedTotal()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "multimodule_dead_letters_total",
			Help: "messages the daemon kept as dead letters (queue MultiModule_dead_letter or its file)"},
			func() float64 { return float64(tr.DeadLetters()) }))
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

// readyCollector serves multimodule_task_ready: 1 for a task that runs the
// spec its config asks for (Ready True in mmctl status), 0 otherwise.
type readyCollector struct{ loads *loadCounts }

var readyDesc = prometheus.NewDesc("multimodule_task_ready",
	"1 while the task runs the spec its config asks for (or is disabled as it says): Ready True in mmctl status", []string{"task"}, nil)

// Describe sends nothing: the series are the configured tasks.
func (readyCollector) Describe(chan<- *prometheus.Desc) {}

func (c readyCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.loads.ready.Load()
	if r == nil {
		return
	}
	for task, ok := range *r {
		v := 0.0
		if ok {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, v, task)
	}
}

// slogPrinter reports the metrics handler's errors on the error channel.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("metrics", "error", fmt.Sprint(v...)) }
