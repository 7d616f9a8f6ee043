package main

import (
	"fmt"
	"io"
	"os"
	"time"

	mm "github.com/multimodule/multimodule"
)

// Example1 counts: every tick it adds one to its persisted ct and emits
// {ct, outstr}. A message {"new_ct": N} makes the next emitted count N.
type Example1 struct {
	outstr string
}

// TickTimer is Example1's timer; `intervals: tick: SECONDS` changes it.
const TickTimer = "tick"

func (*Example1) Stateful() {}

func (e *Example1) SetConfig(ctx mm.Context, config map[string]any) error {
	outstr, ok := config["outstr"].(string)
	if _, set := config["outstr"]; set && !ok {
		return fmt.Errorf("outstr must be a string, got %T", config["outstr"])
	}
	e.outstr = outstr
	ctx.Recur(TickTimer, time.Second, e.tick)
	return nil
}

func (e *Example1) tick(ctx mm.Context) {
	st := ctx.State()
	ct, _ := st["ct"].(float64)
	ct++
	st["ct"] = ct
	ctx.Emit(mm.Message{"ct": ct, "outstr": e.outstr})
}

func (e *Example1) Message(ctx mm.Context, msg mm.Message) error {
	v, ok := msg["new_ct"]
	if !ok {
		return nil
	}
	n, ok := v.(float64)
	if !ok {
		return fmt.Errorf("new_ct must be a number, got %T", v)
	}
	ctx.State()["ct"] = n - 1
	return nil
}

// Example2 prints every message whose ct is true (not 0, "", false or
// missing) to its writer, stderr by default.
type Example2 struct {
	Out io.Writer
}

// NewExample2 prints to stderr.
func NewExample2() *Example2 { return &Example2{Out: os.Stderr} }

func (e *Example2) Message(_ mm.Context, msg mm.Message) error {
	if !truthy(msg["ct"]) {
		return nil
	}
	_, err := fmt.Fprintf(e.Out, "Example2: received a message: %v (%v)\n", msg["ct"], msg["outstr"])
	return err
}

// truthy follows the original's Perl truth: zero, "", "0" and null are false.
func truthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case float64:
		return v != 0
	case int:
		return v != 0
	case string:
		return v != "" && v != "0"
	}
	return true
}
