package runtime

import (
	"math"

	"github.com/multimodule/multimodule/transit"
)

// Peeked are the deliveries a receiver peeked from a task's queue and
// handed to the task, oldest first. Each stays in the queue until the task
// has handled it, so that a crash loses nothing (at least once). Each
// Receiver keeps one; it is not safe for concurrent use.
type Peeked struct {
	list []peeked
}

type peeked struct {
	d transit.Delivery // without its messages: Drop needs only where it came from
	// upTo is the task's mailbox count that covers it: handled once the
	// mailbox has finished that many items.
	upTo uint64
}

// notHandedOver marks a delivery the task never got: it is never dropped
// by this receiver.
const notHandedOver = math.MaxUint64

// Len is how many deliveries are peeked and not yet dropped: the index of
// the next one to peek.
func (p *Peeked) Len() int { return len(p.list) }

// Add records d, just handed to task on h.
func (p *Peeked) Add(h *Host, task string, d transit.Delivery) {
	pushed, _, ok := h.Progress(task)
	if !ok {
		pushed = notHandedOver
	}
	d.Msgs = nil
	p.list = append(p.list, peeked{d: d, upTo: pushed})
}

// Keep records d as peeked but never handed over: this receiver never
// drops it, and it is peeked again by whoever serves the queue next.
func (p *Peeked) Keep(d transit.Delivery) {
	d.Msgs = nil
	p.list = append(p.list, peeked{d: d, upTo: notHandedOver})
}

// Settle drops from q what the task has handled, given the mailbox's
// finished count.
func (p *Peeked) Settle(q *transit.Queue, done uint64) error {
	for len(p.list) > 0 && p.list[0].upTo <= done {
		if err := q.Drop(p.list[0].d); err != nil {
			return err
		}
		p.list[0] = peeked{}
		p.list = p.list[1:]
	}
	return nil
}

// Release ends the receiver's hold once the task has stopped: with handled
// (it finished everything it was handed) the deliveries are dropped, all
// but those it never got; without, they stay queued for the next receiver.
func (p *Peeked) Release(q *transit.Queue, handled bool) error {
	var err error
	if handled {
		err = p.Settle(q, notHandedOver-1)
	}
	p.list = nil
	return err
}
