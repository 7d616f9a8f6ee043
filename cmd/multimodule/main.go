// Command multimodule is the stock daemon: it runs the built-in tasks
// (builtin.Router). Build your own daemon to run your own task kinds: a main
// that imports your task packages and calls multimodule.Main, as
// examples/counter does.
package main

import mm "github.com/multimodule/multimodule"

func main() { mm.Main() }
