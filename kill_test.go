package multimodule

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
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
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := range n {
			// While the daemon is down (a slow restart under load), the
			// Router's queue fills and a send gives up after its timeout:
			// a sender that must not lose it tries again.
			err := e.tr.Send("Router", map[string]any{"chain": true, "i": float64(i), "spin_ms": 1.0})
			for errors.Is(err, transit.ErrQueueFull) {
				select {
				case <-stop:
					return
				default:
				}
				err = e.tr.Send("Router", map[string]any{"chain": true, "i": float64(i), "spin_ms": 1.0})
			}
			if err != nil {
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
	// waitFor polls like testenv.WaitFor; on a timeout it says which
	// messages are missing and what the daemon reports, so a stall can be
	// told from a loss.
	waitFor := func(d *proc, total time.Duration, what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(total)
		for !cond() {
			if time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			var missing []int
			for i := range n {
				if seen[float64(i)] == 0 {
					missing = append(missing, i)
				}
			}
			if reply, err := control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.Status}, 2*time.Second); err != nil || reply.Status == nil {
				t.Logf("no status: %v", err)
			} else {
				for _, tk := range reply.Status.Tasks {
					t.Logf("%s: %s depth=%v queue=%+v", tk.Name, tk.Status, deref(tk.MailboxDepth), tk.Queue)
				}
			}
			d.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, into its log
			d.wait(t)
			select {
			case err := <-sent:
				t.Logf("the sender ended: %v", err)
			default:
			}
			t.Logf("daemon log:\n%s", d.output())
			t.Fatalf("timed out after %v waiting for %s: %d of %d handled, missing %v", total, what, len(seen), n, missing)
		}
	}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for k := range kills {
		d := e.daemon()
		before := len(seen)
		// Let it start and handle some, then kill it at a random point.
		waitFor(d, 20*time.Second, fmt.Sprintf("progress before kill %d", k), func() bool {
			count()
			return len(seen) > before || len(seen) == n
		})
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond) // a random point, not a wait for a state
		d.cmd.Process.Signal(syscall.SIGKILL)
		d.wait(t)
	}
	d := e.daemon()
	waitFor(d, 60*time.Second, "every message handled", func() bool {
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

// One message whose static_forwards sends two copies back to the Router
// at each of 24 hops would make 2^24 copies: the copy budget stops it,
// one dead letter says why, and the daemon's memory stays flat.
func TestADoublingStaticForwardsMessageIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := newExtEnv(t, "tasks: Router: config: routes: []\n")
	dlq, err := e.tr.Queue(transit.DeadLetterQueue)
	if err != nil {
		t.Fatal(err)
	}
	d := e.daemon()
	testenv.WaitFor(t, 10*time.Second, "the Router running", func() bool { return e.task("Router").Status == "running" })
	rss0 := procRSS(t, d.cmd.Process.Pid)
	hop := []any{map[string]any{"forward": map[string]any{"qname": "Router"}}, map[string]any{"forward": map[string]any{"qname": "Router"}}}
	hops := make([]any, 24)
	for i := range hops {
		hops[i] = hop
	}
	if err := e.tr.Send("Router", map[string]any{"static_forwards": hops, "pad": strings.Repeat("x", 1000)}); err != nil {
		t.Fatal(err)
	}
	var reason string
	testenv.WaitFor(t, 30*time.Second, "the dead letter", func() bool {
		dl, err := dlq.Receive(false)
		if err == nil && len(dl.Msgs) > 0 {
			reason, _ = dl.Msgs[0]["reason"].(string)
		}
		return reason != ""
	})
	if !strings.Contains(reason, "copy budget") {
		t.Fatalf("dead letter reason %q", reason)
	}
	testenv.WaitFor(t, 30*time.Second, "the Router idle and its queue settled", func() bool {
		tk := e.task("Router")
		return tk.MailboxDepth != nil && *tk.MailboxDepth == 0 && tk.Queue != nil && tk.Queue.Messages == 0
	})
	if rss := procRSS(t, d.cmd.Process.Pid); rss > rss0+64<<20 {
		t.Fatalf("daemon RSS grew from %.0f MiB to %.0f MiB", rss0/(1<<20), rss/(1<<20))
	}
	if dl, err := dlq.Receive(false); err == nil && len(dl.Msgs) > 0 {
		t.Fatalf("more than one dead letter: %v", dl.Msgs[0]["reason"])
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(t)
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
