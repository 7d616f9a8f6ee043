// Package multimodule is the task author's API: write tasks that talk only
// through messages, register them, and run them under the daemon.
//
//	import mm "github.com/multimodule/multimodule"
//
//	type Counter struct{}
//
//	func (*Counter) Stateful() {}
//	func (*Counter) Message(ctx mm.Context, msg mm.Message) error {
//		ct, _ := ctx.State()["ct"].(float64)
//		ctx.State()["ct"] = ct + 1
//		ctx.Emit(mm.Message{"ct": ct + 1})
//		return nil
//	}
//
//	func init() { mm.Register("acme.Counter", func() mm.Task { return &Counter{} }) }
//	func main() { mm.Main() }
//
// Messages, timers and config changes for one task are delivered one at a
// time on that task's own goroutine, so task code needs no locks. A
// returned error or a panic in a handler is caught, logged on the error
// channel, counted as a message failure, and never takes down the daemon.
// A message passed to Send or Emit belongs to the receiver from then on.
//
// The package mmtest runs a task without a daemon for unit tests.
package multimodule

import (
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/tasks/exec"
	"github.com/multimodule/multimodule/tasks/followtail"
	"github.com/multimodule/multimodule/tasks/httpclient"
	"github.com/multimodule/multimodule/tasks/router"
	"github.com/multimodule/multimodule/tasks/runner"
	"github.com/multimodule/multimodule/tasks/scheduler"
)

// Message is a JSON object.
type Message = runtime.Message

// Task handles messages. See the package documentation for the rules.
type Task = runtime.Task

// Configurable tasks get their config (the task's `config:` in CUE) before
// the first message and again on every change.
type Configurable = runtime.Configurable

// Stateful marks a task whose Context.State is persisted, checksummed and
// restored across restarts (as JSON: numbers come back as float64).
type Stateful = runtime.Stateful

// Stopper tasks release what they hold outside memory (a child process, a
// file) when they stop; see runtime.Stopper.
type Stopper = runtime.Stopper

// Context is a task's handle on the daemon; see runtime.Context for each
// method's contract.
type Context = runtime.Context

// registry holds every task kind this binary can run. It is the only
// package-level mutable state: kinds are registered from init functions.
var registry = runtime.NewRegistry()

// builtins are the kinds every daemon has, with their config schemas.
var builtins = []struct {
	new    runtime.Factory
	schema schema.Builtin
	// about is the one line multimodule --list-kinds shows.
	about string
}{
	{router.New, schema.Builtin{Kind: router.Kind, CUE: router.ConfigSchema, Check: router.CheckConfig, Explain: router.ExplainConfig, Stateless: true},
		"routes messages by their content to other tasks' queues"},
	{exec.New, schema.Builtin{Kind: exec.Kind, CUE: exec.ConfigSchema, Check: exec.CheckConfig}, exec.Description},
	{followtail.New, schema.Builtin{Kind: followtail.Kind, CUE: followtail.ConfigSchema, Check: followtail.CheckConfig}, followtail.Description},
	{scheduler.New, schema.Builtin{Kind: scheduler.Kind, CUE: scheduler.ConfigSchema, Check: scheduler.CheckConfig}, scheduler.Description},
	{httpclient.New, schema.Builtin{Kind: httpclient.Kind, CUE: httpclient.ConfigSchema, Check: httpclient.CheckConfig, Stateless: true}, httpclient.Description},
	{runner.New, schema.Builtin{Kind: runner.Kind, CUE: runner.ConfigSchema, Check: runner.CheckConfig, Stateless: true}, runner.Description},
}

func init() {
	for _, b := range builtins {
		registry.Register(b.schema.Kind, b.new)
	}
}

// Register makes a task kind available to the daemon. Call it from init();
// kind is "namespace.Name" (the namespace is what -p selects). It panics on
// a malformed or duplicate kind.
func Register(kind string, factory func() Task) {
	registry.Register(kind, factory)
}

// NewSchema returns the config schema with the built-in tasks' config
// definitions, as the daemon and mmctl use it.
func NewSchema() (*schema.Schema, error) {
	defs := make([]schema.Builtin, len(builtins))
	for i, b := range builtins {
		defs[i] = b.schema
	}
	return schema.New(defs...)
}
