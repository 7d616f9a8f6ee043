package runtime

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
)

// forwarder sends a copy of every message it gets to each of its
// targets, as the Router does (a Forwarder: its copies count). It stops at
// the first send that fails unless each is set (as the Router does not).
type forwarder struct {
	to   []string
	each bool
}

func (forwarder) ForwardsMessages() {}

func (f forwarder) Message(ctx Context, m Message) error {
	var errs []error
	for _, t := range f.to {
		c := make(Message, len(m))
		for k, v := range m {
			if meta, ok := v.(map[string]any); ok && k == MetaKey { // a copy of its own, as the Router's deep copy
				mc := make(map[string]any, len(meta))
				for mk, mv := range meta {
					mc[mk] = mv
				}
				v = mc
			}
			c[k] = v
		}
		if err := ctx.Send(t, c); err != nil {
			if !f.each {
				return err
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// passer hands on the very message it handles to its target, and a copy
// to its witness (if any).
type passer struct{ to, witness string }

func (p passer) Message(ctx Context, m Message) error {
	if p.witness != "" {
		if err := ctx.Send(p.witness, Message{"seen": true}); err != nil {
			return err
		}
	}
	return ctx.Send(p.to, m)
}

// deadLetters records what a host dead-letters.
type deadLetters struct {
	mu      sync.Mutex
	reasons []string
}

func (d *deadLetters) add(_, reason string, _ Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reasons = append(d.reasons, reason)
	return nil
}

func (d *deadLetters) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.reasons...)
}

// A message taken from a kernel queue leaves it only when what it set off
// in the process (here two more hops) has been handled: a crash before
// that finds it still queued.
func TestADeliveryStaysQueuedUntilItsInProcessHopsAreHandled(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	sink := gate{open: make(chan struct{}), rec: &recorder{}}
	env.start(t, "Sink", sink, nil, nil)
	env.start(t, "Mid", forwarder{to: []string{"Sink"}}, nil, nil)
	env.start(t, "Head", forwarder{to: []string{"Mid"}}, nil, nil)
	if err := env.in.ServeTask("Head"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	q, _ := env.outside.Queue("Head")
	if err := q.Send(Message{"i": 1.0}); err != nil {
		t.Fatal(err)
	}
	// Head and Mid have handled it; Sink holds it.
	testenv.WaitFor(t, 10*time.Second, "the message at Sink", func() bool {
		d, _ := env.Depth("Sink")
		return d == 1
	})
	for range 3 { // the drainer has had every chance to settle
		env.in.drainAll(map[string]bool{}, false, false)
		if st, err := q.Stats(); err != nil || st.Messages != 1 {
			t.Fatalf("Head's queue before the last hop is handled: %+v, %v", st, err)
		}
	}
	close(sink.open)
	testenv.WaitFor(t, 10*time.Second, "Head's queue settled", func() bool {
		st, _ := q.Stats()
		return sink.rec.count() == 1 && st.Messages == 0
	})
}

// A message whose copies double at every hop is stopped by the copy
// budget: one dead letter says why, and no more than the budget is made.
func TestCopyBudgetStopsADoublingMessage(t *testing.T) {
	t.Parallel()
	dl := &deadLetters{}
	env := newInboundEnv(t)
	env.opts.DeadLetter = dl.add
	rec := &recorder{}
	env.start(t, "Count", rec, nil, nil)
	// Twice itself and once Count, each time: 2^n copies.
	env.start(t, "Double", forwarder{to: []string{"Double", "Double", "Count"}}, nil, nil)
	if err := env.in.ServeTask("Double"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	q, _ := env.outside.Queue("Double")
	if err := q.Send(Message{"x": strings.Repeat("y", 1000)}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the lineage spent and settled", func() bool {
		st, _ := q.Stats()
		d, _ := env.Depth("Double")
		return len(dl.list()) > 0 && st.Messages == 0 && d == 0
	})
	if got := dl.list(); len(got) != 1 || !strings.Contains(got[0], "copy budget") {
		t.Fatalf("dead letters %q, want one for the copy budget", got)
	}
	if n := rec.count(); n == 0 || n > CopyBudget {
		t.Fatalf("Count got %d copies, want some and at most %d", n, CopyBudget)
	}
}

// A message handed on from process to process counts its hops in its
// metadata (in a copy: the task may still read the map it handed on), and
// past the hop budget it is dead-lettered instead.
func TestHopBudgetCountsHandOnsAcrossProcesses(t *testing.T) {
	t.Parallel()
	dl := &deadLetters{}
	env := newInboundEnv(t)
	env.opts.DeadLetter = dl.add
	env.start(t, "Pass", passer{to: "Elsewhere"}, nil, nil)
	if err := env.in.ServeTask("Pass"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	q, _ := env.outside.Queue("Pass")
	elsewhere, _ := env.outside.Queue("Elsewhere")
	t.Cleanup(func() { env.outside.Remove("Elsewhere") })
	if err := q.Send(Message{"n": 1.0, MetaKey: map[string]any{hopsKey: 10.0}}); err != nil {
		t.Fatal(err)
	}
	var got Message
	testenv.WaitFor(t, 10*time.Second, "the message elsewhere", func() bool {
		d, err := elsewhere.Receive(false)
		if err == nil && len(d.Msgs) > 0 {
			got = d.Msgs[0]
		}
		return got != nil
	})
	if h := hopsOf(got); h != 11 || got["n"] != 1.0 {
		t.Fatalf("arrived as %v (hops %d), want n 1 after 11 hops", got, h)
	}
	if err := q.Send(Message{"n": 2.0, MetaKey: map[string]any{hopsKey: float64(HopBudget)}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the dead letter, the queue settled", func() bool {
		st, _ := q.Stats()
		return len(dl.list()) > 0 && st.Messages == 0
	})
	if got := dl.list(); len(got) != 1 || !strings.Contains(got[0], "hop budget") {
		t.Fatalf("dead letters %q, want one for the hop budget", got)
	}
}

// Every lineage has a budget of members, copies or not: a cycle of tasks
// answering each other with new messages cannot hold a delivery forever.
func TestMemberBudget(t *testing.T) {
	t.Parallel()
	l := newLineage(nil)
	l.members.Store(MemberBudget - 1) // as if that many had come before
	if err := l.add(false); err != nil {
		t.Fatalf("the last member within the budget refused: %v", err)
	}
	if err := l.add(false); !errors.Is(err, ErrMemberBudget) {
		t.Fatalf("member past the budget: %v", err)
	}
}

// flood sends n numbered messages to "Slow" when it gets any message.
// It counts its sends in tried (if set) and stops at the first error.
type flood struct {
	n     int
	tried *atomic.Int64
}

func (f flood) Message(ctx Context, _ Message) error {
	for i := range f.n {
		if f.tried != nil {
			f.tried.Add(1)
		}
		if err := ctx.Send("Slow", Message{"i": float64(i)}); err != nil {
			return err
		}
	}
	return nil
}

// A mailbox past its bound pushes back on the task's queue instead of
// growing; what went there arrives later, in order.
func TestAFullMailboxPushesBackOnTheQueue(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	const n = MailboxBound + 100
	slow := gate{open: make(chan struct{}), rec: &recorder{}}
	if err := env.Start(TaskSpec{Name: "Slow", Kind: "test.Slow", New: func() Task { return slow }, CatchUp: true}); err != nil {
		t.Fatal(err)
	}
	env.start(t, "Flood", flood{n: n}, nil, nil)
	if err := env.in.ServeTask("Slow"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	q, _ := env.outside.Queue("Slow")
	testenv.WaitFor(t, 10*time.Second, "Slow caught up with its (empty) queue", func() bool { return !env.catchingUp("Slow") })
	if err := env.Send("Flood", Message{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the rest in Slow's queue", func() bool {
		st, _ := q.Stats()
		return st.Messages > 0
	})
	if d, _ := env.Depth("Slow"); d > MailboxBound+1 {
		t.Fatalf("Slow's mailbox grew to %d, bound %d", d, MailboxBound)
	}
	close(slow.open)
	testenv.WaitFor(t, 30*time.Second, "every message handled", func() bool { return slow.rec.count() == n })
	for i, m := range slow.rec.snapshot() {
		if m["i"] != float64(i) {
			t.Fatalf("message %d is %v: out of order", i, m["i"])
		}
	}
}
