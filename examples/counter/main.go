// Command counter is the seed example and the pattern for your own daemon:
// a main that registers its task kinds and calls mm.Main.
//
// Example1 (stateful) emits {ct, outstr} every second, counting on from its
// saved state; the Router forwards Example1's messages to Example2, which
// prints them. Run it with `make run`; Ctrl-C and run again: the count goes
// on where it stopped.
package main

import mm "github.com/multimodule/multimodule"

func init() {
	mm.Register("examples.Example1", func() mm.Task { return &Example1{} })
	mm.Register("examples.Example2", func() mm.Task { return NewExample2() })
}

func main() { mm.Main() }
