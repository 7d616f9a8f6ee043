// Package peers runs the same three workloads on multimodule's in-process
// path and on other Go actor frameworks, side by side in one run:
//
//   - one-to-one: one sender, one receiver, small messages, throughput;
//   - ping-pong: two actors bounce one message, time per round trip;
//   - fan-out: one sender spreads messages over 1,000 actors, throughput.
//
// It is its own module so that the project does not depend on its peers.
// Every framework carries the same small map (multimodule's message type),
// allocated up front: the figures are delivery, not allocation.
package peers

import "github.com/multimodule/multimodule/bench/peers/workload"

// Runner and Msgs live in package workload, which imports no framework:
// hollywood's benchmarks link it without protoactor-go.
type Runner = workload.Runner

// Msgs are the small maps every framework carries.
func Msgs() []map[string]any { return workload.Msgs() }
