package runtime

import (
	"errors"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

func TestReceiverHoldsUntilHandledAndInterceptsInOrder(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t) // its Inbound is never started: the Receiver alone serves the queue
	g := gate{open: make(chan struct{}), rec: &recorder{}}
	env.start(t, "Slow", g, nil, nil)
	q, err := env.tr.Queue("Slow")
	if err != nil {
		t.Fatal(err)
	}
	var intercepted []any
	rx := NewReceiver(env.Host, q, "Slow", ReceiverOptions{
		Intercept: func(m Message) bool {
			if v, ok := m["ctl"]; ok {
				intercepted = append(intercepted, v)
				return true
			}
			return false
		},
		OnError: env.errs.add,
	})
	out, _ := env.outside.Queue("Slow")
	for _, m := range []Message{{"i": 0.0}, {"ctl": "x"}, {"i": 1.0}} {
		if err := out.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if _, err := rx.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rx.Next(); !errors.Is(err, transit.ErrEmpty) {
		t.Fatalf("a fourth Next: %v, want ErrEmpty", err)
	}
	if len(intercepted) != 1 || intercepted[0] != "x" || rx.Pending() != 3 {
		t.Fatalf("intercepted %v, pending %d", intercepted, rx.Pending())
	}
	// Handed over, not handled: all three stay in the kernel queue.
	rx.Settle()
	if st, err := q.Stats(); err != nil || st.Messages != 3 {
		t.Fatalf("kernel queue while the task holds them: %+v, %v", st, err)
	}
	close(g.open)
	testenv.WaitFor(t, 10*time.Second, "both handled and the queue settled", func() bool {
		rx.Settle()
		st, _ := q.Stats()
		return g.rec.count() == 2 && st.Messages == 0 && rx.Pending() == 0
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
	if len(env.errs.errs) > 0 {
		t.Fatalf("errors: %v", env.errs.errs)
	}
}
