package daemon

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/transit"
)

// Control requests are bounded twice before they reach the owner: in
// rate (a token bucket) and in number waiting (the channel). What is over
// either is refused, with a reply, on the inbound's drainer: it is never
// queued without bound and never blocks the drainer (which also feeds the
// tasks).
const (
	controlRate  = 200 // messages a second, sustained
	controlBurst = 200
	controlQueue = 64 // waiting for the owner
)

// intake hands the control queue's messages to the owner.
type intake struct {
	ch      chan runtime.Message
	closing chan struct{} // closed when the owner stops taking them
	log     *runtime.Channels
	tr      *transit.Transit
	queue   string // the control queue

	mu     sync.Mutex
	bucket tokenBucket
	// refused counts refusals since the last log line (at most one a second).
	refused  int
	loggedAt time.Time
	// tasks are names that are, or were, tasks' queues (published by the
	// owner): a refusal is never sent there.
	tasks atomic.Pointer[map[string]bool]
}

func newIntake(ch *runtime.Channels, tr *transit.Transit, queue string) *intake {
	in := &intake{ch: make(chan runtime.Message, controlQueue), closing: make(chan struct{}), log: ch, tr: tr, queue: queue,
		bucket: tokenBucket{rate: controlRate, burst: controlBurst, tokens: controlBurst, at: time.Now()}}
	in.tasks.Store(&map[string]bool{})
	return in
}

// noteTasks adds names to the task queues a refusal never goes to (owner
// only). The set only grows: a name that was a task is not a safe reply
// queue either.
func (in *intake) noteTasks(names []string) {
	old := *in.tasks.Load()
	var add []string
	for _, n := range names {
		if !old[n] {
			add = append(add, n)
		}
	}
	if len(add) == 0 {
		return
	}
	m := make(map[string]bool, len(old)+len(add))
	for n := range old {
		m[n] = true
	}
	for _, n := range add {
		m[n] = true
	}
	in.tasks.Store(&m)
}

// take runs on the inbound's drainer for each control queue message.
func (in *intake) take(m runtime.Message) {
	select {
	case <-in.closing:
		in.refuse(m, "the daemon is shutting down")
		return
	default:
	}
	in.mu.Lock()
	ok := in.bucket.take(time.Now())
	in.mu.Unlock()
	if !ok {
		in.refuse(m, fmt.Sprintf("too many control requests: the daemon takes at most %d a second", controlRate))
		return
	}
	select {
	case in.ch <- m:
	default:
		in.refuse(m, fmt.Sprintf("too many control requests waiting (%d): try again", controlQueue))
	}
}

// refuse answers each operation of m that has a reply_to with the reason,
// without waiting for room, and logs refusals at most once a second.
func (in *intake) refuse(m runtime.Message, why string) {
	in.mu.Lock()
	in.refused++
	now := time.Now()
	n := 0
	if now.Sub(in.loggedAt) >= time.Second {
		n, in.refused, in.loggedAt = in.refused, 0, now
	}
	in.mu.Unlock()
	if n > 0 {
		in.log.Error.Error("control requests refused", "count", n, "reason", why)
	}
	ops, err := control.Ops(m)
	if err != nil {
		return
	}
	tasks := *in.tasks.Load()
	for _, x := range ops[:min(len(ops), maxOpsPerMessage)] {
		op, err := control.DecodeOp(x)
		if err != nil || op.ReplyTo == "" {
			continue
		}
		sendReply(in.tr, in.queue, op.ReplyTo, control.Reply{Type: op.Type, ID: op.ID, Error: why + ": refused"},
			func(name string) bool { return tasks[name] }, 0)
	}
}

// tokenBucket allows rate events a second on average and burst at once.
type tokenBucket struct {
	rate, burst, tokens float64
	at                  time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
