// Package runtime hosts tasks: one goroutine and one mailbox per task, named
// timers, persistent state, failure isolation and orderly shutdown.
//
// Task authors do not import this package: the root package
// github.com/multimodule/multimodule re-exports the types below (the name
// "runtime" would clash with the standard library in user code).
package runtime

import "time"

// Message is a JSON object. A message handed to Send or Emit belongs to the
// receiver from then on: the sender must not read or modify it afterwards,
// as with any value sent on a Go channel.
type Message = map[string]any

// Task handles messages. Messages, timers and config changes for one task
// are delivered one at a time on that task's own goroutine, so a task needs
// no locks for its own fields or its state. A returned error or a panic is
// caught, reported on the error channel and counted as a message failure; it
// never stops the task or the daemon.
type Task interface {
	Message(ctx Context, msg Message) error
}

// Configurable tasks receive their config (the task's `config:` in CUE)
// before the first message and again on every change.
type Configurable interface {
	SetConfig(ctx Context, config map[string]any) error
}

// Stateful is a marker: the map returned by Context.State is persisted,
// checksummed and restored across restarts. After a restore the state is
// what encoding/json gives back (numbers are float64).
type Stateful interface {
	Stateful()
}

// Stopper tasks hold something outside the process's memory (a child
// process, an open file) that must be released when the task stops, or a
// last word to put in their state. Stop runs once, on the task's goroutine,
// after its last message and timer and before its state is saved for the
// last time (so what it writes to State is kept), and also when the task
// does not start (its first SetConfig failed). Send and Emit may fail by
// then.
type Stopper interface {
	Stop(ctx Context)
}

// Forwarder marks a task whose every Send hands on the message it is
// handling (the Router: its forwards are copies, transformed): what it
// sends counts the hops of what it handles. For other tasks only a Send
// of the very message being handled does (see HopBudget).
type Forwarder interface {
	ForwardsMessages()
}

// Context is a task's handle on the daemon. It is only valid on the task's
// own goroutine (inside Message, SetConfig and timer work).
type Context interface {
	// Name is the task's name (not its kind).
	Name() string
	// Emit sets msg["source"] to the task's name (moving an existing source
	// to "previous_source") and sends msg to the Router.
	Emit(msg Message)
	// Send delivers msg to the task or queue qname.
	Send(qname string, msg Message) error
	// Recur runs work every interval on the task's goroutine, under a name.
	// The task's config `intervals[name]` (seconds) overrides every. A
	// second Recur with the same name replaces the first.
	Recur(name string, every time.Duration, work func(Context))
	// StopRecur stops the named timer; unknown names are ignored.
	StopRecur(name string)
	// State is the task's persisted state (Stateful tasks); for other tasks
	// it is an in-memory map that is not saved.
	State() map[string]any
	Log(msg string, kv ...any)
	Debug(msg string, kv ...any)
	Alert(msg string, kv ...any)
	Error(msg string, kv ...any)
}

// Factory makes a new instance of a task kind.
type Factory func() Task

// StampSource applies Emit's source rules to msg and returns it (a nil msg
// becomes a new map). Exported so test harnesses behave like the daemon.
func StampSource(msg Message, name string) Message {
	if msg == nil {
		msg = Message{}
	}
	if src, ok := msg["source"]; ok {
		msg["previous_source"] = src
	}
	msg["source"] = name
	return msg
}
