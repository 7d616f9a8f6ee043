package runtime

import (
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
)

// fan sends n messages to the queue "Out" for each message it handles.
type fan struct{ n int }

func (f fan) Message(ctx Context, m Message) error {
	for i := range f.n {
		if err := ctx.Send("Out", Message{"i": float64(i)}); err != nil {
			return err
		}
	}
	return nil
}

// What a task sends out of the process while handling a batch leaves as
// one queue message, and is on its queue before the message that caused
// it leaves its own: a flush that waits for room keeps the cause queued.
func TestGatheredSendsAreQueuedBeforeTheirCauseLeaves(t *testing.T) {
	t.Parallel()
	env := newInboundEnv(t)
	out, _ := env.outside.Queue("Out")
	filler := Message{"pad": strings.Repeat("x", 1000)}
	for {
		st, _ := out.Stats()
		if st.Capacity-st.Bytes < 1100 {
			break
		}
		if err := out.Send(filler); err != nil {
			t.Fatal(err)
		}
	}
	fillers := queued(out)
	env.start(t, "Fan", fan{n: 100}, nil, nil)
	if err := env.in.ServeTask("Fan"); err != nil {
		t.Fatal(err)
	}
	env.in.Start()
	fq, _ := env.outside.Queue("Fan")
	if err := fq.Send(Message{"go": true}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "Fan handled it", func() bool {
		return env.Status()[0].MessagesOut == 100
	})
	// Not a wait for a result: the flush stays blocked on Out's full queue
	// until room is made below; this gives a wrong settle of the cause
	// meanwhile the time to show.
	time.Sleep(50 * time.Millisecond)
	if st, _ := fq.Stats(); st.Messages != 1 {
		t.Fatalf("Fan's queue holds %d messages while its sends wait for room, want its cause", st.Messages)
	}
	taken := 0
	for st, _ := out.Stats(); st.Capacity-st.Bytes < 8192; st, _ = out.Stats() { // room for the batch
		if _, err := out.Receive(false); err != nil {
			t.Fatal(err)
		}
		taken++
	}
	testenv.WaitFor(t, 10*time.Second, "the cause settled", func() bool {
		st, _ := fq.Stats()
		return st.Messages == 0
	})
	st, _ := out.Stats()
	if got, left := queued(out), fillers-taken; got != left+100 || st.Messages != uint64(left+1) {
		t.Fatalf("Out holds %d messages in %d queue messages, want %d in %d", got, st.Messages, left+100, left+1)
	}
	d, err := out.Peek(int(st.Messages) - 1)
	if err != nil || len(d.Msgs) != 100 || d.Msgs[0]["i"] != 0.0 || d.Msgs[99]["i"] != 99.0 {
		t.Fatalf("the batch: %d messages, %v", len(d.Msgs), err)
	}
}
