// Command extprog is a program outside the multimodule module: it imports
// the module, registers its own task kinds in namespace acme and calls
// Main, as a user's own daemon does. The tests build and run it.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"
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
// to the queue Seen, with its task name, its count, the pid of the process that handled
// it, its config's tag, and the message's src and seq.
// With config fail: true every message fails; a message with spin_ms
// burns that much CPU first.
type Counter struct {
	tag  any
	fail bool
}

func (*Counter) Stateful() {}

func (c *Counter) SetConfig(_ mm.Context, cfg map[string]any) error {
	c.tag = cfg["tag"]
	c.fail = cfg["fail"] == true
	return nil
}

func (c *Counter) Message(ctx mm.Context, msg mm.Message) error {
	if c.fail {
		return errors.New("told to fail")
	}
	if ms, ok := msg["spin_ms"].(float64); ok { // a handler that burns CPU
		for end := time.Now().Add(time.Duration(ms) * time.Millisecond); time.Now().Before(end); {
		}
	}
	n, _ := ctx.State()["count"].(float64)
	n++
	ctx.State()["count"] = n
	if via, ok := msg["via"].(string); ok { // handed on, in this process if via is stateless
		if err := ctx.Send(via, mm.Message{"i": msg["i"]}); err != nil {
			return err
		}
	}
	return ctx.Send("Seen", mm.Message{"task": ctx.Name(), "i": msg["i"], "count": n, "pid": float64(os.Getpid()),
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

// Hog misbehaves on request: {"leak_mb": N} keeps N more MiB resident,
// {"spin_s": S} spins a core for S seconds, {"open": N} opens N more
// files, {"alert": TEXT} raises an alert, {"block_s": S} keeps the
// handler for S seconds.
type Hog struct {
	leaked [][]byte
	files  []*os.File
}

func (*Hog) Stateful() {}

func (h *Hog) Message(ctx mm.Context, msg mm.Message) error {
	if mb, ok := msg["leak_mb"].(float64); ok {
		for range int(mb) {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1 // resident, not just reserved
			}
			h.leaked = append(h.leaked, b)
		}
	}
	if s, ok := msg["spin_s"].(float64); ok {
		go func() {
			for end := time.Now().Add(time.Duration(s * float64(time.Second))); time.Now().Before(end); {
			}
		}()
	}
	if n, ok := msg["open"].(float64); ok {
		for range int(n) {
			f, err := os.Open(os.DevNull)
			if err != nil {
				return err
			}
			h.files = append(h.files, f)
		}
	}
	if a, ok := msg["alert"].(string); ok {
		ctx.Alert(a, "pid", float64(os.Getpid()))
	}
	if s, ok := msg["block_s"].(float64); ok { // a handler that does not return
		time.Sleep(time.Duration(s * float64(time.Second)))
	}
	return nil
}

// Gate holds each message until the file its config names is gone.
type Gate struct{ path string }

func (g *Gate) SetConfig(_ mm.Context, cfg map[string]any) error {
	g.path, _ = cfg["gate"].(string)
	return nil
}

func (g *Gate) Message(mm.Context, mm.Message) error {
	for {
		if _, err := os.Stat(g.path); err != nil {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func init() {
	mm.Register("acme.Hog", func() mm.Task { return &Hog{} })
	mm.Register("acme.Gate", func() mm.Task { return &Gate{} })
}

// Beacon (stateless) sends {"beat": N, "pid": PID} to Seen every
// every_ms, and answers each message with {"echo": i, "pid": PID}: the
// pid says which process ran the timer or handled the message.
type Beacon struct{ beat float64 }

func (b *Beacon) SetConfig(ctx mm.Context, cfg map[string]any) error {
	every, _ := cfg["every_ms"].(float64)
	ctx.Recur("beat", time.Duration(max(1, every))*time.Millisecond, func(ctx mm.Context) {
		b.beat++
		ctx.Send("Seen", mm.Message{"beat": b.beat, "pid": float64(os.Getpid())})
	})
	return nil
}

func (*Beacon) Message(ctx mm.Context, msg mm.Message) error {
	return ctx.Send("Seen", mm.Message{"echo": msg["i"], "pid": float64(os.Getpid())})
}

func init() { mm.Register("acme.Beacon", func() mm.Task { return &Beacon{} }) }

// Relay hands every message on to the task its config names (to), in
// this process if that task runs here.
type Relay struct{ to string }

func (r *Relay) SetConfig(_ mm.Context, cfg map[string]any) error {
	r.to, _ = cfg["to"].(string)
	return nil
}

func (r *Relay) Message(ctx mm.Context, msg mm.Message) error { return ctx.Send(r.to, msg) }

func init() { mm.Register("acme.Relay", func() mm.Task { return &Relay{} }) }

// Deaf, in an external process (-m), ignores SIGTERM and starts a child
// (sleep) in its process group: only SIGKILL of the group ends them. In
// the daemon it is an ordinary task (the daemon must still hear signals).
type Deaf struct{ child *exec.Cmd }

func (*Deaf) Stateful() {}

func (d *Deaf) SetConfig(mm.Context, map[string]any) error {
	if d.child != nil || !slices.Contains(os.Args, "-m") {
		return nil
	}
	signal.Ignore(syscall.SIGTERM)
	d.child = exec.Command("sleep", "600")
	return d.child.Start()
}

func (*Deaf) Message(mm.Context, mm.Message) error { return nil }

func init() { mm.Register("acme.Deaf", func() mm.Task { return &Deaf{} }) }
