package monitor

import "math"

// Metric names, as they appear in a task's limits, alerts, status and
// (prefixed) in Prometheus.
const (
	CPU         = "cpu"          // cores: process CPU time, or an internal task's handler busy time, per second
	Memory      = "memory"       // bytes resident (externals)
	ReadBytes   = "read_bytes"   // bytes read from storage per second (externals)
	WriteBytes  = "write_bytes"  // bytes written to storage per second (externals)
	FDs         = "fds"          // open file descriptors (externals)
	Threads     = "threads"      // OS threads (externals)
	QueueFill   = "queue_fill"   // the task's System V queue: bytes used / capacity
	Mailbox     = "mailbox"      // messages taken from the queue and waiting for the handler
	Restarts    = "restarts"     // restarts in the last RestartWindow
	Failures    = "failures"     // message handler errors and panics per second
	MessagesIn  = "messages_in"  // messages handled per second
	MessagesOut = "messages_out" // messages sent and emitted per second
)

// Metric describes one metric.
type Metric struct {
	Name string
	// Prom is the Prometheus name after the multimodule_task_ prefix.
	Prom string
	Help string
}

// Metrics lists every metric, in the order they are shown.
var Metrics = []Metric{
	{Name: CPU, Prom: "cpu_cores", Help: "CPU used, in cores (an internal task: its handler's busy time per second)"},
	{Name: Memory, Prom: "memory_bytes", Help: "resident memory of an external task's process"},
	{Name: ReadBytes, Prom: "read_bytes_per_second", Help: "bytes an external task's process read from storage per second"},
	{Name: WriteBytes, Prom: "write_bytes_per_second", Help: "bytes an external task's process wrote to storage per second"},
	{Name: FDs, Prom: "open_fds", Help: "open file descriptors of an external task's process"},
	{Name: Threads, Prom: "threads", Help: "OS threads of an external task's process"},
	{Name: QueueFill, Prom: "queue_fill_ratio", Help: "the task's System V queue: bytes used / capacity"},
	{Name: Mailbox, Prom: "mailbox_messages", Help: "messages taken from the queue, waiting for the handler"},
	{Name: Restarts, Prom: "restarts_recent", Help: "restarts in the last 10 minutes"},
	{Name: Failures, Prom: "failures_per_second", Help: "message handler errors and panics per second"},
	{Name: MessagesIn, Prom: "messages_in_per_second", Help: "messages handled per second"},
	{Name: MessagesOut, Prom: "messages_out_per_second", Help: "messages sent and emitted per second"},
}

// Default mailbox limits, relative to runtime.MailboxBound (16,384), which
// monitor does not import (checked by a test in internal/daemon).
const (
	MailboxWarn   = 4096
	MailboxSevere = 12288
)

// Defaults are the limits of a task that sets none (the original's):
// memory is a fraction of the box's, here turned into bytes (unset when
// the box's memory is unknown, 0). queue_fill has no failsafe: a task
// whose queue fills must not stop taking from it (the schema forbids one).
func Defaults(boxMemory float64) map[string]Thresholds {
	nan := math.NaN()
	memory := Unset
	if boxMemory > 0 {
		memory = Thresholds{0.1 * boxMemory, 0.15 * boxMemory, 0.3 * boxMemory}
	}
	return map[string]Thresholds{
		CPU:       {1.4, 1.6, 1.9},
		Memory:    memory,
		FDs:       {100, 150, 200},
		Threads:   {100, 150, 200},
		QueueFill: {0.6, 0.8, nan},
		// A daemon task's mailbox sends its senders to the task's queue
		// past runtime.MailboxBound (16,384): a quarter of that is a task
		// falling behind, three quarters one about to push back. No
		// failsafe: stopping a task because it is behind only adds to it.
		Mailbox:  {MailboxWarn, MailboxSevere, nan},
		Restarts: {3, 5, nan},
		Failures: {1, 10, nan},
	}
}
