package multimodule

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
)

// A chain inside the daemon (Router -> H1 -> H2 -> Sink) under SIGKILLs of
// the daemon at random points: every message is handled at least once.
// A message leaves the Router's queue only when the whole chain has
// handled it (Sink's report went to the queue Seen, which outlives the
// daemon).
func TestSIGKILLDuringAnInProcessChainLosesNothing(t *testing.T) {
	t.Parallel()
	const n, kills = 1000, 20
	e := newExtEnv(t, `
tasks: Router: config: routes: [{match: chain: true, forwards: [{qname: "H1"}]}]
tasks: H1: {kind: "Relay", config: to: "H2"}
tasks: H2: {kind: "Relay", config: to: "Sink"}
tasks: Sink: {kind: "Counter", intervals: save_state: 0.05}
`)
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			if err := e.tr.Send("Router", map[string]any{"chain": true, "i": float64(i), "spin_ms": 1.0}); err != nil {
				sent <- fmt.Errorf("message %d: %w", i, err)
				return
			}
			if i%50 == 0 {
				time.Sleep(20 * time.Millisecond) // spread the traffic over the kills
			}
		}
		sent <- nil
	}()
	seen := map[float64]int{}
	count := func() {
		e.drain()
		for _, m := range e.got {
			seen[m["i"].(float64)]++
		}
		e.got = e.got[:0]
	}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for k := range kills {
		d := e.daemon()
		before := len(seen)
		// Let it start and handle some, then kill it at a random point.
		testenv.WaitFor(t, 20*time.Second, fmt.Sprintf("progress before kill %d", k), func() bool {
			count()
			return len(seen) > before || len(seen) == n
		})
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond) // a random point, not a wait for a state
		d.cmd.Process.Signal(syscall.SIGKILL)
		d.wait(t)
	}
	d := e.daemon()
	testenv.WaitFor(t, 60*time.Second, "every message handled", func() bool {
		count()
		return len(seen) == n
	})
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	t.Logf("%d messages, %d SIGKILLs of the daemon: all handled, %d handled more than once", n, kills, dups)
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(t)
}
