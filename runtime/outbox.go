package runtime

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/transit"
)

// A task's sends to queues outside the process are gathered while it
// handles a batch of its mailbox and queued together when the batch ends
// (or sooner, when a kernel message is full): one msgsnd, one peek and one
// drop for many messages, instead of each.
//
// At least once holds: a gathered message is a member of the lineage of
// the message that sent it until it is on its queue, so the delivery that
// caused it leaves its own queue only after that (a crash before loses
// both, and the delivery comes again). It also holds the count of sends on
// their way to a queue whose task is not here (Host.sendingTo), so that a
// task that starts here meanwhile ends its catch-up only after them.

// queueSender is a Remote that can gather sends: transit.Transit.
type queueSender interface {
	SendQueue(name string) (*transit.Queue, error)
}

// outbox is a task's gathered sends, by queue (task goroutine only).
type outbox struct {
	pending map[string]*gathered
	order   []string // queues with gathered messages, first sent first
	// full are the queues a Forwarder found full after the bounded wait,
	// with what it could not send them since: until one takes a batch
	// again, its sends are tried without waiting and what does not fit is
	// dead-lettered at once. One unread target must not make the Router
	// wait out the bound again and again while its other routes starve.
	full map[string]*fullTarget
}

// fullTarget is a queue a Forwarder found full.
type fullTarget struct {
	since    time.Time
	deadLets int // messages dead-lettered since
}

// gathered are the messages a task gathered for one queue and the holds
// they keep until they are on it.
type gathered struct {
	b *transit.Batch
	// flushed is b.Flushed() when the holds below began; failed is
	// b.Failed() when its failures were last counted.
	flushed, failed uint64
	// held counts this task's messages in b for sending (Host.sendingTo).
	sending *atomic.Int64
	held    int64
	// lins are the lineages the messages in b belong to, with how many
	// each (a handler usually sends many under one).
	lins []linHold
}

type linHold struct {
	l *lineage
	n int64
}

// release ends the holds of the messages that left b (queued, or kept as
// dead letters).
func (g *gathered) release() {
	g.sending.Add(-g.held)
	g.held = 0
	for _, h := range g.lins {
		h.l.release(h.n)
	}
	g.lins = g.lins[:0]
}

// hold records one more message in b, sent as a member of lin.
func (g *gathered) hold(lin *lineage) {
	g.held++
	if lin == nil {
		return
	}
	lin.hold()
	if n := len(g.lins); n > 0 && g.lins[n-1].l == lin {
		g.lins[n-1].n++
		return
	}
	g.lins = append(g.lins, linHold{lin, 1})
}

// gather adds msg, bound for the queue qname, to the task's outbox. c is
// qname's count of sends on their way (taken by the caller): it stays
// taken while msg is gathered. An error means msg was not gathered (nor
// sent): a queue that cannot be had, or a full kernel message that could
// not be queued before it (which counts as flushOne's failures do).
func (r *runner) gather(qs queueSender, qname string, msg Message, c *atomic.Int64) error {
	out := &r.out
	g := out.box.pending[qname]
	if g == nil {
		q, err := qs.SendQueue(qname)
		if err != nil {
			c.Add(-1)
			return err
		}
		g = &gathered{b: q.NewBatch(), sending: c}
		if out.box.full[qname] != nil {
			g.b.SetWait(0)
		}
		if out.box.pending == nil {
			out.box.pending = map[string]*gathered{}
		}
		out.box.pending[qname] = g
		out.box.order = append(out.box.order, qname)
	}
	err := g.b.Add(msg)
	if g.b.Flushed() != g.flushed {
		// What it held went out first (Add found no room for msg).
		g.flushed = g.b.Flushed()
		g.release()
	}
	alerted := false
	if n := int(g.b.Failed() - g.failed); n > 0 {
		// ... and could not be queued: as at the end of a batch.
		g.failed = g.b.Failed()
		r.notQueued(qname, n, err)
		alerted = true
	}
	if err != nil || g.b.Len() == 0 { // not gathered, or sent alone (spilled)
		c.Add(-1)
		switch {
		case err == nil:
			r.takesAgain(qname) // the spilled message is on the queue
		case !alerted && r.out.forwards && errors.Is(err, transit.ErrQueueFull):
			r.queueFailed(qname, 1, err) // msg alone (spilled) found it full
			alerted = true
		}
	}
	if out.box.full[qname] != nil {
		g.b.SetWait(0) // for the rest of this batch too
	} else {
		g.b.SetWait(-1)
	}
	if err != nil {
		if alerted {
			return alertedError{err}
		}
		return err
	}
	if g.b.Len() > 0 {
		g.hold(out.from.lin)
	}
	return nil
}

// alertedError is a send error the outbox has alerted already: Send does
// not alert it again.
type alertedError struct{ error }

func (e alertedError) Unwrap() error { return e.error }

// flushTo queues what the task gathered for qname, before a send to qname
// that does not gather: what went to the queue first goes first.
func (r *runner) flushTo(qname string) {
	if g := r.out.box.pending[qname]; g != nil {
		r.flushOne(qname, g)
		delete(r.out.box.pending, qname)
	}
}

// reached is called before a send that finds the task qname here and
// hands it over directly: what went to its queue goes first (the task
// catches up with it before what follows), and a queue found full no
// longer stands between the task and its sender.
func (r *runner) reached(qname string) {
	r.flushTo(qname)
	r.takesAgain(qname)
}

// takesAgain forgets that qname was found full, if it was.
func (r *runner) takesAgain(qname string) {
	if ft := r.out.box.full[qname]; ft != nil {
		delete(r.out.box.full, qname)
		r.h.ch.Log.Info("queue takes messages again", "task", r.name, "queue", qname,
			"full_for", time.Since(ft.since).Round(time.Millisecond).String(), "dead_lettered", ft.deadLets)
	}
}

// flush queues everything the task gathered: at the end of each batch of
// its mailbox, and after SetConfig and Stop. A queue that stayed full for
// the whole wait (or is gone) fails its messages here: they are kept as
// dead letters, counted as send failures and alerted, as a Send that
// failed at once would be.
func (r *runner) flush() {
	if len(r.out.box.order) == 0 {
		return
	}
	for _, qname := range r.out.box.order {
		if g := r.out.box.pending[qname]; g != nil {
			r.flushOne(qname, g)
			delete(r.out.box.pending, qname) // a name flushed early and gathered again is in order twice
		}
	}
	clear(r.out.box.pending)
	r.out.box.order = r.out.box.order[:0]
}

func (r *runner) flushOne(qname string, g *gathered) {
	n := g.b.Len()
	if n == 0 {
		g.release()
		return // nothing was tried: nothing learnt of the queue
	}
	err := g.b.Flush()
	g.release()
	if err == nil {
		r.takesAgain(qname)
		return
	}
	r.notQueued(qname, n, err)
}

// notQueued counts, alerts and (for a Forwarder that found the queue
// full) marks the n gathered messages for qname that a flush could not
// queue and kept as dead letters instead.
func (r *runner) notQueued(qname string, n int, err error) {
	r.stats.sendFailures.Add(uint64(n))
	r.stats.msgsOut.Add(^uint64(n - 1)) // counted as sent when gathered
	r.queueFailed(qname, n, err)
}

// queueFailed alerts that n messages for qname could not be queued and
// (a Forwarder that found the queue full) marks it full, or counts them
// with the mark it already has.
func (r *runner) queueFailed(qname string, n int, err error) {
	if errors.Is(err, transit.ErrQueueFull) {
		if r.out.forwards {
			if ft := r.out.box.full[qname]; ft != nil {
				ft.deadLets += n // alerted when it filled; counted, and in the dead letters
				return
			}
			if r.out.box.full == nil {
				r.out.box.full = map[string]*fullTarget{}
			}
			r.out.box.full[qname] = &fullTarget{since: time.Now(), deadLets: n}
			r.alert("queue full: messages not sent (kept as dead letters); until it takes messages again, what is sent to it is dead-lettered without waiting",
				"queue", qname, "messages", n, "error", err)
			return
		}
		r.alert("queue full: messages not sent (kept as dead letters)", "queue", qname, "messages", n, "error", err)
		return
	}
	r.h.ch.Error.Error("messages not sent (kept as dead letters)", "task", r.name, "queue", qname,
		"messages", n, "error", err)
}
