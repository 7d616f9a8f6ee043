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

// Runner is one framework under the three workloads. Each call returns
// when every message has been handled.
type Runner interface {
	// OneToOne delivers n messages from one sender to one receiver.
	OneToOne(n int)
	// PingPong bounces one message between two actors n times.
	PingPong(n int)
	// FanOut sends n messages spread evenly over actors receivers.
	FanOut(n, actors int)
	Close()
}

// Msgs are the small maps every framework carries.
func Msgs() []map[string]any {
	msgs := make([]map[string]any, 1024)
	for i := range msgs {
		msgs[i] = map[string]any{"ct": float64(i), "outstr": "howdy", "source": "Example1"}
	}
	return msgs
}
