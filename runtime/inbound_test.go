package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
	"golang.org/x/sys/unix"
)

type inboundEnv struct {
	*testHost
	tr      *transit.Transit
	in      *Inbound
	outside *transit.Transit // another process's view of the same dir
	errs    *errList
}

type errList struct {
	mu   sync.Mutex
	errs []error
}

func (e *errList) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err)
}

// newInboundEnv serves a host's tasks from a fresh transit dir; opts
// adjust the host's transit.
func newInboundEnv(t *testing.T, opts ...func(*transit.Options)) *inboundEnv {
	t.Helper()
	dir := testenv.TransitDir(t)
	o := transit.Options{Dir: dir}
	for _, f := range opts {
		f(&o)
	}
	tr, err := transit.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	outside, err := transit.Open(transit.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	th := &testHost{out: &testenv.Buffer{}, err: &testenv.Buffer{}, dir: t.TempDir()}
	th.Host, err = NewHost(Options{StateDir: th.dir, OOB: "debug:2", Stdout: th.out, Stderr: th.err, Remote: tr})
	if err != nil {
		t.Fatal(err)
	}
	env := &inboundEnv{testHost: th, tr: tr, outside: outside, errs: &errList{}}
	env.in, err = NewInbound(th.Host, tr, "test.doorbell", env.errs.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.in.Stop()
		th.shutdown(t)
		env.errs.mu.Lock()
		defer env.errs.mu.Unlock()
		for _, e := range env.errs.errs {
			t.Errorf("inbound error: %v", e)
		}
	})
	return env
}

func TestInboundDeliversToTasksIncludingWhatWaited(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	// Sent before anyone serves the queue: it waits in the kernel.
	if err := env.outside.Send("Sink", map[string]any{"n": 0.0}); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	env.start(t, "Sink", rec, nil, nil)
	if err := env.in.ServeTask("Sink"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	for i := 1; i < 50; i++ {
		if err := env.outside.Send("Sink", map[string]any{"n": float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 5*time.Second, "50 messages", func() bool { return rec.count() == 50 })
	for i, m := range rec.snapshot() {
		if m["n"] != float64(i) {
			t.Fatalf("message %d is %v: order broken", i, m["n"])
		}
	}
}

func TestInboundSendsToQueuesItDoesNotServe(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	env.start(t, "Fwd", chain{"elsewhere"}, nil, nil)
	env.Send("Fwd", Message{"x": 1.0})
	q, _ := env.outside.Queue("elsewhere")
	var got []map[string]any
	testenv.WaitFor(t, 5*time.Second, "the message on the outside queue", func() bool {
		d, err := q.Receive(false)
		got = append(got, d.Msgs...)
		return err == nil && len(got) == 1
	})
	if got[0]["x"] != 1.0 {
		t.Fatalf("got %v", got)
	}
}

// gate blocks every message until opened.
type gate struct {
	open chan struct{}
	rec  *recorder
}

func (g gate) Message(ctx Context, m Message) error {
	<-g.open
	return g.rec.Message(ctx, m)
}

func TestInboundLeavesMessagesInTheKernelUntilHandled(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	g := gate{open: make(chan struct{}), rec: &recorder{}}
	env.start(t, "Slow", g, nil, nil)
	env.in.ServeTask("Slow")
	env.in.Start()
	const n = 100
	q, _ := env.outside.Queue("Slow")
	for i := range n {
		if err := q.Send(map[string]any{"i": float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "every message handed to the task", func() bool {
		return env.Status()[0].Depth == n
	})
	// Handed over but not handled: a crash now must lose nothing, so every
	// one of them is still in the kernel queue.
	if st, err := q.Stats(); err != nil || st.Messages != n {
		t.Fatalf("kernel queue while the task holds the messages: %+v, %v", st, err)
	}
	close(g.open)
	testenv.WaitFor(t, 10*time.Second, "every message handled and off the queue", func() bool {
		st, _ := q.Stats()
		return g.rec.count() == n && st.Messages == 0
	})
	for i, m := range g.rec.snapshot() {
		if m["i"] != float64(i) {
			t.Fatalf("message %d is %v: order broken", i, m["i"])
		}
	}
}

func TestInboundServeFuncAndDeadLetters(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	var mu sync.Mutex
	var got []Message
	env.in.ServeFunc("ctl", func(m Message) {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	})
	env.in.Start()
	ctl, _ := env.outside.Queue("ctl")
	ctl.SendRaw([]byte("not json"))
	env.outside.Send("ctl", map[string]any{"ok": true})
	testenv.WaitFor(t, 5*time.Second, "the good message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1
	})
	testenv.WaitFor(t, 5*time.Second, "the dead letter counted", func() bool { return env.in.DeadLetters() == 1 })
}

// threads reads this process's OS thread count.
func threads(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// Not parallel: it counts the process's threads.
func TestInboundServesAThousandQueuesWithoutAThreadEach(t *testing.T) {
	env := newInboundEnv(t)
	const n = 1000
	recs := make([]*recorder, n)
	specs := make([]TaskSpec, n)
	for i := range specs {
		rec := &recorder{}
		recs[i] = rec
		specs[i] = TaskSpec{Name: fmt.Sprintf("T%04d", i), New: func() Task { return rec }}
	}
	for _, err := range env.StartAll(specs) {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range specs {
		if err := env.in.ServeTask(s.Name); err != nil {
			t.Fatal(err)
		}
	}
	before := threads(t)
	env.in.Start()
	for _, s := range specs {
		if err := env.outside.Send(s.Name, map[string]any{"to": s.Name}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 20*time.Second, "a message at every task", func() bool {
		for _, r := range recs {
			if r.count() != 1 {
				return false
			}
		}
		return true
	})
	if after := threads(t); after > before+8 {
		t.Fatalf("serving %d queues took %d OS threads more (from %d to %d)", n, after-before, before, after)
	}
	if errs := env.errs; len(errs.errs) > 0 {
		t.Fatal(errors.Join(errs.errs...))
	}
}

func TestInboundUnserveThenStopLosesNothing(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	rec := &recorder{}
	env.start(t, "Cyc", rec, nil, nil)
	env.in.ServeTask("Cyc")
	env.in.Start()
	const n = 20000
	sent := make(chan error, 1)
	go func() {
		q, err := env.outside.Queue("Cyc")
		if err != nil {
			sent <- err
			return
		}
		batch := make([]map[string]any, 0, 50)
		for i := range n {
			batch = append(batch, map[string]any{"i": float64(i)})
			if len(batch) == cap(batch) {
				if err := q.SendBatch(batch); err != nil {
					sent <- err
					return
				}
				batch = batch[:0]
			}
		}
		sent <- nil
	}()
	ctx := context.Background()
	for cycle := 0; cycle < 30; cycle++ {
		if err := env.in.Unserve("Cyc"); err != nil {
			t.Fatal(err)
		}
		if err := env.Stop(ctx, "Cyc"); err != nil {
			t.Fatal(err)
		}
		env.in.Release("Cyc", true) // what it handled leaves the queue
		env.start(t, "Cyc", rec, nil, nil)
		if err := env.in.ServeTask("Cyc"); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "every message", func() bool { return rec.count() >= n })
	for i, m := range rec.snapshot() {
		if m["i"] != float64(i) {
			t.Fatalf("message %d is %v: lost, repeated or reordered across stops", i, m["i"])
		}
	}
}

func TestCatchUpKeepsASendersOrder(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	env.in.Start()
	rec := &recorder{}
	const n = 4000
	sent := make(chan struct{})
	started := make(chan struct{})
	go func() { // one sender, before and after the task starts here
		defer close(sent)
		for i := range n {
			if i == 100 {
				close(started)
			}
			if err := env.Send("T", Message{"i": float64(i)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	<-started
	if err := env.Start(TaskSpec{Name: "T", New: func() Task { return rec }, CatchUp: true}); err != nil {
		t.Fatal(err)
	}
	if err := env.in.ServeTask("T"); err != nil {
		t.Fatal(err)
	}
	<-sent
	testenv.WaitFor(t, 10*time.Second, "every message", func() bool { return rec.count() == n })
	for i, m := range rec.snapshot() {
		if m["i"] != float64(i) {
			t.Fatalf("message %d is %v: the queue's backlog and the direct sends were interleaved", i, m["i"])
		}
	}
}

// Serving a task makes no queue and no file; a sender in another process
// makes the queue, and its ring to the dir's default doorbell brings the
// message to the task.
func TestInboundServesATaskFromItsFirstSend(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	rec := &recorder{}
	env.start(t, "Late", rec, nil, nil)
	if err := env.in.ServeTask("Late"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	if env.tr.Exists("Late") || env.tr.Served("Late") {
		t.Fatal("serving a task made its queue or doorbell file")
	}
	if err := env.outside.Send("Late", Message{"n": 1.0}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the first message", func() bool { return rec.count() == 1 })
	testenv.WaitFor(t, 10*time.Second, "its queue settled and served", func() bool {
		q, _ := env.outside.Queue("Late")
		st, _ := q.Stats()
		return st.Messages == 0 && env.tr.Served("Late")
	})
}

// A queue made by a sender that does not ring (another program) is seen
// by the transit dir's watch, and a message put on it without a ring is
// found by the sweep, which looks only when the kernel's totals moved.
func TestInboundFindsAQueueMadeWithoutARing(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	rec := &recorder{}
	env.start(t, "Quiet", rec, nil, nil)
	if err := env.in.ServeTask("Quiet"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	if _, err := env.outside.Queue("Quiet"); err != nil { // made, nothing sent: no ring
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the new queue served", func() bool { return env.tr.Served("Quiet") })
	b, err := os.ReadFile(filepath.Join(env.tr.Dir(), "Quiet"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	id, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(key), 0, 0)
	if e != 0 {
		t.Fatal(e)
	}
	buf := append([]byte{2, 0, 0, 0, 0, 0, 0, 0}, `{"n":1}`...)
	if _, _, e := unix.Syscall6(unix.SYS_MSGSND, id, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), unix.IPC_NOWAIT, 0, 0); e != 0 {
		t.Fatal(e)
	}
	testenv.WaitFor(t, 10*time.Second, "the message sent without a ring", func() bool { return rec.count() == 1 })
}
