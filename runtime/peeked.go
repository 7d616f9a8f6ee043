package runtime

import (
	"errors"

	"github.com/multimodule/multimodule/transit"
)

// Peeked are the deliveries a receiver peeked from a task's queue and
// handed to the task, oldest first. Each stays in the queue until its
// lineage is settled (the task has handled it, and everything derived
// from it in this process has been handled or put on a queue that
// survives the process), so that a crash loses nothing (at least once).
// Each Receiver keeps one; it is not safe for concurrent use.
type Peeked struct {
	list []peeked
}

type peeked struct {
	d transit.Delivery // without its messages: Drop needs only where it came from
	// lin is what was derived from it here; nil for a delivery the task
	// never got, which this receiver never drops.
	lin *lineage
}

// Len is how many deliveries are peeked and not yet dropped: the index of
// the next one to peek.
func (p *Peeked) Len() int { return len(p.list) }

// Add records d, just handed over as lin.
func (p *Peeked) Add(d transit.Delivery, lin *lineage) {
	d.Msgs = nil
	p.list = append(p.list, peeked{d: d, lin: lin})
}

// Keep records d as peeked but never handed over: this receiver never
// drops it, and it is peeked again by whoever serves the queue next.
func (p *Peeked) Keep(d transit.Delivery) { p.Add(d, nil) }

// errHandOverAgain: the oldest delivery's lineage failed; everything
// peeked must be handed over again.
var errHandOverAgain = errors.New("a delivery's effect was not kept: handing the queue's messages over again")

// Settle drops from q the deliveries whose lineages are settled, oldest
// first: a delivery is dropped only after those before it, because peeks
// address messages by their place in the queue. A failed lineage at the
// front forgets every delivery (none is dropped) and returns
// errHandOverAgain: the receiver peeks them all again, from the front.
func (p *Peeked) Settle(q *transit.Queue) error {
	if len(p.list) > 0 && p.list[0].lin != nil && p.list[0].lin.settled() && p.list[0].lin.failed.Load() {
		p.list = nil
		return errHandOverAgain
	}
	for len(p.list) > 0 && p.list[0].lin != nil && p.list[0].lin.settled() && !p.list[0].lin.failed.Load() {
		if err := q.Drop(p.list[0].d); err != nil {
			return err
		}
		p.list[0] = peeked{}
		p.list = p.list[1:]
	}
	return nil
}

// Release ends the receiver's hold once the task has stopped: with handled
// (it finished everything it was handed) what is settled is dropped;
// everything else stays queued for the next receiver (handled again: at
// least once).
func (p *Peeked) Release(q *transit.Queue, handled bool) error {
	var err error
	if handled {
		err = p.Settle(q)
	}
	p.list = nil
	return err
}
