package runtime

import (
	"errors"
	"fmt"
	goruntime "runtime"

	"github.com/multimodule/multimodule/transit"
)

// ErrHighWater is Receiver.Next's answer while the task's mailbox holds
// HighWater items: its messages stay in the kernel queue until it catches
// up.
var ErrHighWater = errors.New("task at its high-water mark")

// ReceiverOptions adapt a Receiver to where it runs.
type ReceiverOptions struct {
	// Takes, if set, picks the messages that are not for the task but for
	// Take (an external process's config messages). Take gets them in
	// order with the task's: after the messages before them were handed
	// to the task. A taken message counts as handled with the delivery it
	// came in.
	Takes func(Message) bool
	Take  func(Message)
	// OnError gets what has no caller: a message not delivered, a handled
	// one not taken off the queue, a kernel that cannot peek.
	OnError func(error)
	// OnSettled, if set, is called (from any goroutine) when a delivery's
	// lineage settles: it can leave the queue, so Settle soon.
	OnSettled func()
	// Yield makes the receiver yield its thread after each delivery, so
	// that the task's goroutine runs next: for a receiver that serves its
	// task alone (an external process's). Left to wait for a thread of its
	// own, the task waited up to hundreds of microseconds on a busy machine
	// (execution trace of an external task) while the receiver decoded the
	// next delivery, and the queue, holding what the task had not yet
	// handled, stayed full: with the yield an external task took half as
	// many messages a second again. Not for the daemon's Inbound, which
	// serves every task from one goroutine: yielding for each delivery
	// would send it to the back of the run queue behind every busy task.
	Yield bool
}

// Receiver moves one queue's messages to one task of a Host, at least
// once: it peeks at each delivery and leaves it in the queue until the
// task has handled it (and what it sent meanwhile is on its way), so that
// a crash of the process loses nothing; the next receiver of the queue
// handles it again. Where the kernel cannot peek (no MSG_COPY) it takes
// deliveries off the queue instead, and says so once through OnError.
//
// The daemon's Inbound keeps one per served task, an external process one
// for its task. It is not safe for concurrent use.
type Receiver struct {
	h    *Host
	q    *transit.Queue
	task string
	o    ReceiverOptions
	// noPeek: the kernel refused to peek; deliveries are taken.
	noPeek bool
	peeked Peeked
}

// NewReceiver receives q's messages for h's task.
func NewReceiver(h *Host, q *transit.Queue, task string, o ReceiverOptions) *Receiver {
	if o.OnError == nil {
		o.OnError = func(error) {}
	}
	return &Receiver{h: h, q: q, task: task, o: o}
}

// Queue is the queue it receives from.
func (r *Receiver) Queue() *transit.Queue { return r.q }

// Pending is how many deliveries were handed to the task and are still in
// the queue, waiting to be settled.
func (r *Receiver) Pending() int { return r.peeked.Len() }

// Settle takes off the queue what is settled: handled, with everything
// derived from it in this process.
func (r *Receiver) Settle() {
	if r.peeked.Len() == 0 {
		return
	}
	// errHandOverAgain is no failure of the receiver: the next Next peeks
	// the queue from the front again (at least once).
	if err := r.peeked.Settle(r.q); err != nil && !errors.Is(err, errHandOverAgain) {
		r.o.OnError(fmt.Errorf("queue %s: taking a handled message off: %w", r.q.Name(), err))
	}
}

// Next settles, then hands the task the next delivery of the queue and
// returns it (its Msgs, Dead, Ring and Wake as the queue gave them). It
// returns ErrHighWater while the task is at HighWater, ErrNoSuchQueue if
// the task is not on the host, and the queue's errors (transit.ErrEmpty
// when there is nothing).
func (r *Receiver) Next() (transit.Delivery, error) {
	r.Settle()
	depth, ok := r.h.Depth(r.task)
	if !ok {
		return transit.Delivery{}, fmt.Errorf("%w: %q", ErrNoSuchQueue, r.task)
	}
	if depth >= HighWater {
		return transit.Delivery{}, ErrHighWater
	}
	return r.take()
}

// take hands the task the next delivery regardless of HighWater (the
// Inbound's catch-up, whose senders wait for it).
func (r *Receiver) take() (transit.Delivery, error) {
	var d transit.Delivery
	var err error
	peeked := !r.noPeek
	if peeked {
		d, err = r.q.Peek(r.peeked.Len())
		if errors.Is(err, transit.ErrNoPeek) {
			r.noPeek, peeked = true, false
			r.o.OnError(fmt.Errorf("queue %s: %w: a crash loses the messages taken but not handled", r.q.Name(), err))
		}
	}
	if !peeked {
		d, err = r.q.Receive(false)
	}
	if err != nil && (peeked || len(d.Msgs) == 0) {
		return d, err
	}
	// A taken batch comes with its messages even when part of it failed
	// (a dead letter that could not be written): they are off the queue
	// and must reach the task.
	var lin *lineage
	if peeked {
		lin = newLineage(r.o.OnSettled)
	}
	delivered, handed := true, false
	hand := func(msgs []Message) {
		if len(msgs) == 0 {
			return // a delivery with nothing for the task is settled as it is
		}
		if !delivered && peeked {
			return // it stays queued and comes again whole: no more of it now
		}
		if derr := r.h.deliverAll(r.task, msgs, lin); derr != nil {
			delivered = false
			r.o.OnError(fmt.Errorf("queue %s: a message taken from the queue was not delivered: %w", r.q.Name(), derr))
			return
		}
		handed = true
	}
	from := 0 // the first message not yet handed over
	if r.o.Takes != nil {
		for i, m := range d.Msgs {
			if r.o.Takes(m) {
				hand(d.Msgs[from:i])
				if !delivered && peeked {
					break // as in hand: it comes again, in order
				}
				r.o.Take(m)
				from = i + 1
			}
		}
	}
	hand(d.Msgs[from:])
	if handed && r.o.Yield {
		goruntime.Gosched()
	}
	if peeked { // whatever it held (a wake, a dead letter) is dropped with it
		if delivered {
			r.peeked.Add(d, lin)
		} else {
			r.peeked.Keep(d) // the task never got it all: it stays queued
		}
		lin.done() // the receiver's own hold: handing over is done
	}
	return d, err
}

// Release ends the receiver's hold once the task has stopped: with handled
// (it finished everything it was handed) the deliveries are taken off the
// queue; without, they stay there for the next receiver.
func (r *Receiver) Release(handled bool) error {
	if err := r.peeked.Release(r.q, handled); err != nil {
		return fmt.Errorf("queue %s: %w", r.q.Name(), err)
	}
	return nil
}
