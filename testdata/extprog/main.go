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

// Counter counts the messages it gets in its state and reports each one
// to the queue Seen, with its count, the pid of the process that handled
// it, its config's tag, and the message's src and seq.
type Counter struct{ tag any }

func (*Counter) Stateful() {}

func (c *Counter) SetConfig(_ mm.Context, cfg map[string]any) error {
	c.tag = cfg["tag"]
	return nil
}

func (c *Counter) Message(ctx mm.Context, msg mm.Message) error {
	n, _ := ctx.State()["count"].(float64)
	n++
	ctx.State()["count"] = n
	return ctx.Send("Seen", mm.Message{"i": msg["i"], "count": n, "pid": float64(os.Getpid()),
		"tag": c.tag, "src": msg["src"], "seq": msg["seq"]})
}

// Pump (stateless, so it runs in every process) sends bursts of {src,
// seq} to Counter every 5ms when its config says on.
type Pump struct{ seq float64 }

func (p *Pump) SetConfig(ctx mm.Context, cfg map[string]any) error {
	if cfg["on"] != true {
		ctx.StopRecur("pump")
		return nil
	}
	src := float64(os.Getpid())
	burst, _ := cfg["burst"].(float64)
	ctx.Recur("pump", 5*time.Millisecond, func(ctx mm.Context) {
		for range max(1, int(burst)) {
			p.seq++
			ctx.Send("Counter", mm.Message{"src": src, "seq": p.seq})
		}
	})
	return nil
}

func (*Pump) Message(mm.Context, mm.Message) error { return nil }

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
	mm.Register("acme.Counter", func() mm.Task { return &Counter{} })
	mm.Register("acme.Pump", func() mm.Task { return &Pump{} })
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
