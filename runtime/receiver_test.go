package runtime

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

func TestReceiverHoldsUntilHandledAndTakesInOrder(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t) // its Inbound is never started: the Receiver alone serves the queue
	g := gate{open: make(chan struct{}), rec: &recorder{}}
	env.start(t, "Slow", g, nil, nil)
	q, err := env.tr.Queue("Slow")
	if err != nil {
		t.Fatal(err)
	}
	// Take sees each taken message with the task's mailbox holding what
	// came before it, and not what comes after.
	var taken []string
	takes := func(m Message) bool { _, ok := m["ctl"]; return ok }
	take := func(m Message) {
		d, _ := env.Depth("Slow")
		taken = append(taken, fmt.Sprintf("%v@%d", m["ctl"], d))
	}
	rx := NewReceiver(env.Host, q, "Slow", ReceiverOptions{Takes: takes, Take: take, OnError: env.errs.add})
	out, _ := env.outside.Queue("Slow")
	for _, m := range []Message{{"i": 0.0}, {"ctl": "x"}, {"i": 1.0}} {
		if err := out.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	// One queue message holding both kinds.
	if err := out.SendBatch([]map[string]any{{"i": 2.0}, {"ctl": "y"}, {"i": 3.0}, {"ctl": "z"}}); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := rx.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rx.Next(); !errors.Is(err, transit.ErrEmpty) {
		t.Fatalf("a fifth Next: %v, want ErrEmpty", err)
	}
	// Slow's gate holds its first message in its handler: depth counts it.
	if fmt.Sprint(taken) != "[x@1 y@3 z@4]" || rx.Pending() != 4 {
		t.Fatalf("taken %v, pending %d; want [x@1 y@3 z@4], 4", taken, rx.Pending())
	}
	// Handed over, not handled: all four stay in the kernel queue.
	rx.Settle()
	if st, err := q.Stats(); err != nil || st.Messages != 4 {
		t.Fatalf("kernel queue while the task holds them: %+v, %v", st, err)
	}
	close(g.open)
	testenv.WaitFor(t, 10*time.Second, "all handled and the queue settled", func() bool {
		rx.Settle()
		st, _ := q.Stats()
		return g.rec.count() == 4 && st.Messages == 0 && rx.Pending() == 0
	})
	// What a receiver lets go of unhandled stays queued for the next one.
	if err := out.Send(Message{"i": 2.0}); err != nil {
		t.Fatal(err)
	}
	if _, err := rx.Next(); err != nil {
		t.Fatal(err)
	}
	if err := rx.Release(false); err != nil {
		t.Fatal(err)
	}
	if st, err := q.Stats(); err != nil || st.Messages != 1 {
		t.Fatalf("after Release(false): %+v, %v", st, err)
	}
	if _, err := NewReceiver(env.Host, q, "Nobody", ReceiverOptions{}).Next(); !errors.Is(err, ErrNoSuchQueue) {
		t.Fatalf("Next for a task not on the host: %v", err)
	}
	// A delivery with nothing for the task (all taken, or a wake) is
	// settled as it is, whether or not the task is here (the catch-up's
	// drain takes without asking).
	gone, _ := env.tr.Queue("Gone")
	goneOut, _ := env.outside.Queue("Gone")
	if err := goneOut.Send(Message{"ctl": "w"}); err != nil {
		t.Fatal(err)
	}
	rxGone := NewReceiver(env.Host, gone, "Gone", ReceiverOptions{Takes: takes, Take: func(Message) {}, OnError: env.errs.add})
	if _, err := rxGone.take(); err != nil {
		t.Fatal(err)
	}
	rxGone.Settle()
	if st, err := gone.Stats(); err != nil || st.Messages != 0 {
		t.Fatalf("a delivery with nothing for the task stayed queued: %+v, %v", st, err)
	}
	if len(env.errs.errs) > 0 {
		t.Fatalf("errors: %v", env.errs.errs)
	}
}

// A delivery the task could not be handed in part stays queued and comes
// again whole: nothing after the failure is handed over or taken, so the
// next time it comes it is in order and taken once.
func TestADeliveryThatFailsToHandOverStopsThere(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	q, _ := env.tr.Queue("Late")
	out, _ := env.outside.Queue("Late")
	if err := out.SendBatch([]map[string]any{{"i": 0.0}, {"ctl": "x"}, {"i": 1.0}}); err != nil {
		t.Fatal(err)
	}
	takes := 0
	var errs errList
	opts := ReceiverOptions{Takes: func(m Message) bool { _, ok := m["ctl"]; return ok }, Take: func(Message) { takes++ }, OnError: errs.add}
	// Late is not on the host yet: the first hand-over fails.
	if _, err := NewReceiver(env.Host, q, "Late", opts).take(); err != nil {
		t.Fatal(err)
	}
	if takes != 0 || len(errs.errs) != 1 {
		t.Fatalf("after a failed hand-over: %d takes, errors %v; want none taken and one error", takes, errs.errs)
	}
	rec := &recorder{}
	env.start(t, "Late", rec, nil, nil)
	rx := NewReceiver(env.Host, q, "Late", opts)
	if _, err := rx.take(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "both handled and settled", func() bool {
		rx.Settle()
		st, _ := q.Stats()
		return rec.count() == 2 && st.Messages == 0
	})
	var got []any
	for _, m := range rec.snapshot() {
		got = append(got, m["i"])
	}
	if fmt.Sprint(got) != "[0 1]" || takes != 1 {
		t.Fatalf("handled i %v, %d takes; want 0 then 1, one take", got, takes)
	}
}
