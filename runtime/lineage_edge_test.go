package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// A delivery leaves its queue only when every message derived from it was
// handled or kept: Slow's mailbox is past MailboxBound, so Flood's sends go
// to Slow's kernel queue, which fills (msgmnb 16 KiB) and, after the send
// timeout, refuses. What it refuses is dead-lettered, and counted.
func TestARefusedDivertedSendIsDeadLettered(t *testing.T) {
	t.Parallel()
	dl := &deadLetters{}
	env := newInboundEnv(t)
	env.opts.DeadLetter = dl.add
	const n = MailboxBound + 3000
	slow := gate{open: make(chan struct{}), rec: &recorder{}}
	if err := env.Start(TaskSpec{Name: "Slow", Kind: "test.Slow", New: func() Task { return slow }, CatchUp: true}); err != nil {
		t.Fatal(err)
	}
	var tried atomic.Int64
	env.start(t, "Flood", flood{n: n, tried: &tried}, nil, nil)
	for _, s := range []string{"Slow", "Flood"} {
		if err := env.in.ServeTask(s); err != nil {
			t.Fatal(err)
		}
	}
	env.in.Start()
	testenv.WaitFor(t, 10*time.Second, "Slow caught up", func() bool { return !env.catchingUp("Slow") })
	fq, _ := env.outside.Queue("Flood")
	if err := fq.Send(Message{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "Flood's send refused", func() bool {
		for _, ts := range env.Status() {
			if ts.Name == "Flood" && ts.SendFailures > 0 {
				return true
			}
		}
		return false
	})
	close(slow.open)
	testenv.WaitFor(t, 30*time.Second, "Flood's delivery settled, every message it sent handled or kept", func() bool {
		st, _ := fq.Stats()
		return st.Messages == 0 && int64(slow.rec.count()+len(dl.list())) == tried.Load()
	})
	if got := dl.list(); len(got) == 0 || !strings.Contains(got[0], "not sent") {
		t.Fatalf("dead letters %q, want the refused send", got)
	}
}

// badStart's SetConfig waits for release, then fails: the task is abandoned.
type badStart struct{ release chan struct{} }

func (b badStart) SetConfig(Context, map[string]any) error {
	<-b.release
	return errTestBadStart
}
func (badStart) Message(Context, Message) error { return nil }

var errTestBadStart = &testErr{"bad start"}

type testErr struct{ s string }

func (e *testErr) Error() string { return e.s }

// A task that fails to start drops what was sent to it meanwhile: the
// deliveries those messages came from are handed over again (not leaked,
// which would block their queue for good), and reach its queue this time.
func TestWhatAnAbandonedTaskHadComesAgain(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	env.start(t, "Head", forwarder{to: []string{"Bad"}}, nil, nil)
	if err := env.in.ServeTask("Head"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	bad := badStart{release: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		started <- env.Start(TaskSpec{Name: "Bad", Kind: "test.Bad", New: func() Task { return bad }})
	}()
	testenv.WaitFor(t, 10*time.Second, "Bad published", func() bool { _, ok := env.Depth("Bad"); return ok })
	hq, _ := env.outside.Queue("Head")
	if err := hq.Send(Message{"i": 1.0}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "Head forwarded into Bad's mailbox", func() bool { d, _ := env.Depth("Bad"); return d == 1 })
	close(bad.release)
	if err := <-started; err == nil {
		t.Fatal("Bad started")
	}
	// Bad is gone: Head's forwards now go to Bad's kernel queue, which survives.
	if err := hq.Send(Message{"i": 2.0}); err != nil {
		t.Fatal(err)
	}
	bq, _ := env.outside.Queue("Bad")
	testenv.WaitFor(t, 20*time.Second, "Head's queue settled, both in Bad's queue", func() bool {
		st, _ := hq.Stats()
		return st.Messages == 0 && queued(bq) >= 2
	})
}

// twice hands the very message it handles to two tasks.
type twice struct{ a, b string }

func (tw twice) Message(ctx Context, m Message) error {
	if err := ctx.Send(tw.a, m); err != nil {
		return err
	}
	return ctx.Send(tw.b, m)
}

// Handing the same map on to two tasks (against the contract, but a
// mistake a task can make) never has the runtime write into it: hops are
// counted in copies.
func TestHandingOnTheSameMapTwiceDoesNotRace(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, t.TempDir())
	rec := &recorder{}
	th.start(t, "D", rec, nil, nil)
	th.start(t, "B", passer{to: "D"}, nil, nil)
	th.start(t, "C", passer{to: "D"}, nil, nil)
	th.start(t, "A", twice{a: "B", b: "C"}, nil, nil)
	for i := range 2000 {
		if err := th.Send("A", Message{"i": float64(i), MetaKey: map[string]any{"hops": 2.0}}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 20*time.Second, "all at D", func() bool { return rec.count() == 4000 })
}

// A send that meets a task as it stops goes to the task's queue.
func TestASendToAStoppingTaskGoesToItsQueue(t *testing.T) {
	t.Parallel()
	for round := range 20 {
		env := newInboundEnv(t)
		env.start(t, "T", &recorder{}, nil, nil)
		stop := make(chan struct{})
		errc := make(chan error, 1)
		var sent atomic.Int64
		go func() {
			for {
				select {
				case <-stop:
					errc <- nil
					return
				default:
				}
				if err := env.Send("T", Message{}); err != nil && errors.Is(err, ErrMailboxClosed) {
					errc <- err
					return
				}
				sent.Add(1)
			}
		}()
		testenv.WaitFor(t, 10*time.Second, "sends under way", func() bool { return sent.Load() > 100 })
		env.Stop(context.Background(), "T")
		close(stop)
		if err := <-errc; err != nil {
			t.Fatalf("round %d: a send to a stopping task with a queue to fall back on failed: %v", round, err)
		}
	}
}

// A stateful task that stops while its state cannot be saved: the
// deliveries whose effects it could not keep (on another, running task's
// queue) are handed over again, not leaked (which would block that queue
// for good).
//
// D's save timer never fires here: the deep message must be D's first
// change, which is saved at once and held until then. A timer save that
// came first (its first interval passed, as it does on a loaded machine)
// would end that window, and the deep one would leave its queue ahead of
// the next save, as designed (at most one save interval), and not come
// again.
func TestDeliveriesATaskCouldNotSaveComeAgainWhenItStops(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	env.start(t, "D", digger{}, nil, map[string]time.Duration{SaveStateTimer: time.Hour})
	env.start(t, "Head", forwarder{to: []string{"D"}}, nil, nil)
	if err := env.in.ServeTask("Head"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	hq, _ := env.outside.Queue("Head")
	if err := hq.Send(Message{"deep": 10001.0}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the severe alert", func() bool {
		return strings.Contains(env.err.String(), "state cannot be saved")
	})
	if err := hq.Send(Message{"i": 1.0}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "D handled both", func() bool {
		for _, s := range env.Status() {
			if s.Name == "D" {
				return s.MessagesIn == 2
			}
		}
		return false
	})
	env.Stop(context.Background(), "D") // its last save fails too
	// D is gone: Head's forwards go to D's queue, which survives.
	if err := hq.Send(Message{"i": 2.0}); err != nil {
		t.Fatal(err)
	}
	dq, _ := env.outside.Queue("D")
	var hs transit.Stats
	var inD int
	defer func() {
		if t.Failed() {
			t.Logf("Head's queue %+v, %d messages in D's; log:\n%s\n%s", hs, inD, env.err.String(), env.out.String())
			for _, s := range env.Status() {
				t.Logf("%+v", s)
			}
		}
	}()
	testenv.WaitFor(t, 20*time.Second, "Head's queue settled, D's messages in its queue", func() bool {
		hs, _ = hq.Stats()
		inD = queued(dq)
		return hs.Messages == 0 && inD >= 3
	})
}

// queued counts the messages in q (a queue message may be a batch of
// several), leaving them there.
func queued(q *transit.Queue) int {
	n := 0
	for i := 0; ; i++ {
		d, err := q.Peek(i)
		if err != nil {
			return n
		}
		n += len(d.Msgs)
	}
}

// A task catching up whose sender waits for room in its full queue holds
// the task's catch-up open; the inbound must not wait for it to end:
// room comes only as the task handles what it was handed, which may wait
// on another queue this inbound drains (here: a control queue stands for
// any other). Once the task handles again, everything arrives, in order,
// and nothing is dead-lettered.
func TestACatchUpHeldOpenStallsNoOtherQueue(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t, func(o *transit.Options) { o.SendTimeout = time.Minute })
	dl := &deadLetters{}
	env.opts.DeadLetter = dl.add
	const n = 1000 // far more than Slow's queue holds (msgmnb 16 KiB)
	slow := gate{open: make(chan struct{}), rec: &recorder{}}
	if err := env.Start(TaskSpec{Name: "Slow", Kind: "test.Slow", New: func() Task { return slow }, CatchUp: true}); err != nil {
		t.Fatal(err)
	}
	var tried atomic.Int64
	env.start(t, "Flood", flood{n: n, tried: &tried}, nil, nil)
	controls := make(chan Message, 1)
	if err := env.in.ServeFunc("Control", func(m Message) { controls <- m }); err != nil {
		t.Fatal(err)
	}
	if err := env.in.ServeTask("Slow"); err != nil {
		t.Fatal(err)
	}
	// Flood's sends go to Slow's queue (catching up) until it is full.
	if err := env.Send("Flood", Message{}); err != nil {
		t.Fatal(err)
	}
	q, _ := env.outside.Queue("Slow")
	testenv.WaitFor(t, 10*time.Second, "Flood waiting for room in Slow's queue", func() bool {
		st, _ := q.Stats()
		return st.Messages > 0 && st.Bytes+200 > st.Capacity && tried.Load() == int64(st.Messages)+1
	})
	env.in.Start()
	testenv.WaitFor(t, 10*time.Second, "Slow handed what its queue holds", func() bool {
		d, _ := env.Depth("Slow")
		st, _ := q.Stats()
		return d+1 >= st.Messages
	})
	if err := env.outside.Send("Control", Message{"op": "status"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-controls:
	case <-time.After(10 * time.Second):
		t.Fatal("the control queue went unserved while Slow's catch-up was held open")
	}
	close(slow.open)
	testenv.WaitFor(t, 30*time.Second, "every message handled, Slow caught up", func() bool {
		return slow.rec.count() == n && !env.catchingUp("Slow")
	})
	for i, m := range slow.rec.snapshot() {
		if m["i"] != float64(i) {
			t.Fatalf("message %d is %v: out of order", i, m["i"])
		}
	}
	if got := dl.list(); len(got) > 0 {
		t.Fatalf("dead letters: %q", got)
	}
}

// A Forwarder's sends to a task of this process that is catching up go to
// the task's queue. When that queue stays full, the Forwarder waits for
// room once, not once a batch: its other targets keep getting theirs, and
// what the full queue cannot take is dead-lettered at once until the task
// takes messages again (here: catches up, and gets them directly).
func TestAForwarderWaitsOnceForACatchingUpTaskWhoseQueueIsFull(t *testing.T) {
	t.Parallel()
	const wait = 2 * time.Second
	env := newInboundEnv(t, func(o *transit.Options) { o.SendTimeout = wait })
	// Nothing serves Stuck's queue yet, so its catch-up, on from its
	// start, goes on: what is sent to it goes to its queue, filled here.
	stuck := &recorder{}
	if err := env.Start(TaskSpec{Name: "Stuck", Kind: "test.Stuck", New: func() Task { return stuck }, CatchUp: true}); err != nil {
		t.Fatal(err)
	}
	other := &recorder{}
	env.start(t, "Other", other, nil, nil)
	// Two copies to Stuck a message: a batch sends it more than once.
	env.start(t, "Fwd", forwarder{to: []string{"Other", "Stuck", "Stuck"}}, nil, nil)
	sq := testenv.FillQueue(t, env.outside, "Stuck")
	filled, _ := sq.Stats()
	const rounds = 6
	start := time.Now()
	for i := range rounds {
		if err := env.Send("Fwd", Message{"i": float64(i)}); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 30*time.Second, "Other got the round's message", func() bool { return other.count() == i+1 })
	}
	// Before, each round waited out the bound.
	if took := time.Since(start); took > 3*wait {
		t.Errorf("%d rounds took %v: the full queue made the Forwarder wait again and again (the bound is %v)", rounds, took, wait)
	}
	dlq, err := env.outside.Queue(transit.DeadLetterQueue)
	if err != nil {
		t.Fatal(err)
	}
	dead := 0
	testenv.WaitFor(t, 10*time.Second, "every message for Stuck dead-lettered", func() bool {
		for {
			d, err := dlq.Receive(false)
			if err != nil || len(d.Msgs) == 0 {
				return dead >= 2*rounds
			}
			dead += len(d.Msgs)
		}
	})
	if dead != 2*rounds {
		t.Errorf("%d dead letters, want %d", dead, 2*rounds)
	}
	if strings.Count(env.err.String()+env.out.String(), "queue takes messages again") != 0 {
		t.Errorf("the queue was said to take messages again while full:\n%s", env.err.String())
	}
	// Served, Stuck catches up with its queue and then gets what is sent
	// to it directly: the Forwarder forgets it found the queue full.
	if err := env.in.ServeTask("Stuck"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	testenv.WaitFor(t, 20*time.Second, "Stuck caught up", func() bool { return !env.catchingUp("Stuck") })
	if err := env.Send("Fwd", Message{"i": float64(rounds)}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "Stuck got the last round directly, and the full mark forgotten", func() bool {
		return stuck.count() == int(filled.Messages)+2 &&
			strings.Contains(env.err.String()+env.out.String(), "queue takes messages again")
	})
}

// A Forwarder that sends a full queue more than a kernel message holds in
// one batch waits for room once: the first kernel message that cannot be
// queued marks the queue full for the rest of the batch, not only its end.
func TestAForwarderWaitsOnceWithinABatch(t *testing.T) {
	t.Parallel()
	const wait = 2 * time.Second
	env := newInboundEnv(t, func(o *transit.Options) { o.SendTimeout = wait })
	if err := env.Start(TaskSpec{Name: "Stuck", Kind: "test.Stuck", New: func() Task { return &recorder{} }, CatchUp: true}); err != nil {
		t.Fatal(err)
	}
	other := &recorder{}
	env.start(t, "Other", other, nil, nil)
	// 300 copies of a small message are about three kernel messages; the
	// Forwarder goes on after a failed send, as the Router does.
	to := []string{"Other"}
	for range 300 {
		to = append(to, "Stuck")
	}
	env.start(t, "Fwd", forwarder{to: to, each: true}, nil, nil)
	testenv.FillQueue(t, env.outside, "Stuck")
	start := time.Now()
	if err := env.Send("Fwd", Message{"i": 1.0}); err != nil {
		t.Fatal(err)
	}
	handledBy(t, env, "Fwd", 1)
	// Before, each kernel message's worth waited out the bound.
	if took := time.Since(start); took > 2*wait {
		t.Errorf("the batch took %v: it waited for the full queue more than once (the bound is %v)", took, wait)
	}
	if n := strings.Count(env.err.String()+env.out.String(), "queue full"); n != 1 {
		t.Errorf("%d queue-full alerts, want 1:\n%s", n, env.err.String())
	}
	if other.count() != 1 {
		t.Errorf("Other got %d messages, want 1", other.count())
	}
}

// handledBy waits until task name has handled n messages.
func handledBy(t *testing.T, env *inboundEnv, name string, n uint64) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("%s handled %d", name, n), func() bool {
		for _, ts := range env.Status() {
			if ts.Name == name && ts.MessagesIn == n {
				return true
			}
		}
		return false
	})
}

// Messages too large for a kernel message go alone (spilled), outside the
// batch: a Forwarder finds a full queue with them too, once, and a spilled
// message the queue takes clears the mark.
func TestAForwardersSpilledMessagesFollowTheFullQueueRule(t *testing.T) {
	t.Parallel()
	const wait = time.Second
	env := newInboundEnv(t, func(o *transit.Options) { o.SendTimeout = wait })
	env.start(t, "Fwd", forwarder{to: []string{"Far", "Far", "Far"}, each: true}, nil, nil)
	far := testenv.FillQueue(t, env.outside, "Far")
	large := Message{"p": strings.Repeat("x", 20000)}
	start := time.Now()
	if err := env.Send("Fwd", large); err != nil {
		t.Fatal(err)
	}
	handledBy(t, env, "Fwd", 1)
	if took, n := time.Since(start), strings.Count(env.err.String(), "queue full"); took > 2*wait || n != 1 {
		t.Errorf("3 spilled copies to a full queue: %v, %d alerts; want one wait (%v) and one alert", took, n, wait)
	}
	for { // its reader catches up
		if d, err := far.Receive(false); err != nil || len(d.Msgs) == 0 {
			break
		}
	}
	if err := env.Send("Fwd", large); err != nil {
		t.Fatal(err)
	}
	handledBy(t, env, "Fwd", 2)
	if st, _ := far.Stats(); st.Messages != 3 {
		t.Errorf("Far holds %d messages, want the 3 spilled", st.Messages)
	}
	if !strings.Contains(env.err.String()+env.out.String(), "queue takes messages again") {
		t.Errorf("Far took the spilled messages but is still marked full")
	}
}

// many sends n small messages to Far, going on after failures; no
// Forwarder.
type many struct{ n int }

func (m many) Message(ctx Context, _ Message) error {
	for i := range m.n {
		_ = ctx.Send("Far", Message{"i": float64(i)})
	}
	return nil
}

// One kernel message's worth that a task's batch could not queue is one
// alert, not two (one for what the batch held, one for the message that
// made it flush); every message is counted as a failure, none as sent.
func TestAFailedFlushInABatchAlertsOnce(t *testing.T) {
	t.Parallel()
	const wait = 200 * time.Millisecond
	env := newInboundEnv(t, func(o *transit.Options) { o.SendTimeout = wait })
	env.start(t, "Many", many{n: 300}, nil, nil)
	testenv.FillQueue(t, env.outside, "Far")
	if err := env.Send("Many", Message{}); err != nil {
		t.Fatal(err)
	}
	handledBy(t, env, "Many", 1)
	var ts TaskStatus
	for _, s := range env.Status() {
		if s.Name == "Many" {
			ts = s
		}
	}
	flushes := strings.Count(env.err.String(), "queue full: messages not sent")
	if single := strings.Count(env.err.String(), "queue full: message not sent"); single != 0 || flushes < 2 {
		t.Errorf("%d alerts for failed flushes and %d for single messages; want one a flush (at least 2) and none", flushes, single)
	}
	if ts.SendFailures != 300 || ts.MessagesOut != 0 {
		t.Errorf("send failures %d, sent %d; want 300 and 0", ts.SendFailures, ts.MessagesOut)
	}
}
