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
func (m *monitoring) serveMetrics(addr string, tr *transit.Transit) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(monitor.NewCollector(m.tracker), collectors.NewGoCollector(),
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

// slogPrinter reports the metrics handler's errors on the error channel.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("metrics", "error", fmt.Sprint(v...)) }
