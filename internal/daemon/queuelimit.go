package daemon

import (
	"log/slog"
	"sync/atomic"

	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

// queueLimit wires transit's bound on the queues the daemon creates on
// demand by sending (daemon: max_queues) to the daemon: the bound from
// the config, and an alert when a send is first refused by it. The
// transit is opened before the channels exist, so the alert logger is set
// later; no task sends before then.
type queueLimit struct {
	alert atomic.Pointer[slog.Logger]
}

// transitOptions are the daemon's transit options with the bound and
// its alert.
func (l *queueLimit) transitOptions(dir string, cfg *schema.Config) transit.Options {
	return transit.Options{Dir: dir, MaxQueues: cfg.Daemon.MaxQueues, OnQueueLimit: l.reached}
}

func (l *queueLimit) reached(queue string, limit int) {
	if a := l.alert.Load(); a != nil {
		a.Warn("too many queues created on demand: sends to new queue names fail",
			"task", "MultiModule", "metric", "queues_created", "value", limit, "threshold", limit,
			"level", "severe", "queue", queue)
	}
}

// applyMaxQueues takes a reloaded config's bound.
func applyMaxQueues(tr *transit.Transit, cfg *schema.Config) { tr.SetMaxQueues(cfg.Daemon.MaxQueues) }

// withQueueCounts adds to the daemon's status metrics how many queues
// it created on demand and the bound on them.
func withQueueCounts(m map[string]float64, tr *transit.Transit) map[string]float64 {
	if m == nil {
		m = map[string]float64{}
	}
	m["queues_created"] = float64(tr.QueuesMade())
	m["max_queues"] = float64(tr.MaxQueues())
	return m
}
