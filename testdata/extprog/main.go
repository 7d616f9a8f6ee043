// Command extprog is a program outside the multimodule module: it imports
// the module, registers its own task kinds in namespace acme and calls
// Main, as a user's own daemon does. The tests build and run it.
package main

import (
	"fmt"
	"os"
	"time"

	mm "github.com/multimodule/multimodule"
)

// Ticker counts up from its saved state and emits every count.
type Ticker struct{}

func (Ticker) Stateful() {}

func (Ticker) SetConfig(ctx mm.Context, _ map[string]any) error {
	ctx.Recur("tick", time.Second, func(ctx mm.Context) {
		n, _ := ctx.State()["n"].(float64)
		n++
		ctx.State()["n"] = n
		ctx.Emit(mm.Message{"n": n})
	})
	return nil
}

func (Ticker) Message(mm.Context, mm.Message) error { return nil }

// Sink prints every count it receives.
type Sink struct{}

func (Sink) Message(_ mm.Context, msg mm.Message) error {
	_, err := fmt.Fprintf(os.Stderr, "sink: %v\n", msg["n"])
	return err
}

func init() {
	mm.Register("acme.Ticker", func() mm.Task { return Ticker{} })
	mm.Register("acme.Sink", func() mm.Task { return Sink{} })
}

func main() { mm.Main() }

// Counter counts the messages it gets in its state and reports each one,
// with its count and the pid of the process that handled it, to the queue
// named in the message's "to" (default Seen).
type Counter struct{}

func (Counter) Stateful() {}

func (Counter) Message(ctx mm.Context, msg mm.Message) error {
	n, _ := ctx.State()["count"].(float64)
	n++
	ctx.State()["count"] = n
	return ctx.Send("Seen", mm.Message{"i": msg["i"], "count": n, "pid": float64(os.Getpid())})
}

// Crasher exits its process while starting when its config says crash.
type Crasher struct{}

func (Crasher) Stateful() {}

func (Crasher) SetConfig(_ mm.Context, cfg map[string]any) error {
	if cfg["crash"] == true {
		os.Exit(3)
	}
	return nil
}

func (Crasher) Message(mm.Context, mm.Message) error { return nil }

func init() {
	mm.Register("acme.Counter", func() mm.Task { return Counter{} })
	mm.Register("acme.Crasher", func() mm.Task { return Crasher{} })
}

// Absorber counts messages; when the count reaches a message's "n" it
// sends {"done": count} to the queue Done.
type Absorber struct{}

func (Absorber) Stateful() {}

func (Absorber) Message(ctx mm.Context, msg mm.Message) error {
	n, _ := ctx.State()["count"].(float64)
	n++
	ctx.State()["count"] = n
	if want, _ := msg["n"].(float64); n == want {
		return ctx.Send("Done", mm.Message{"done": n})
	}
	return nil
}

func init() { mm.Register("acme.Absorber", func() mm.Task { return Absorber{} }) }
