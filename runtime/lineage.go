package runtime

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Budgets that bound what one message may set off in a process. No
// legitimate route comes near them; a message that would go past them is
// dead-lettered with the reason instead of multiplying without end.
const (
	// HopBudget is how many times a message and what is derived from it
	// may be handed on (each Send, Emit or Router forward is a hop), like
	// an IP TTL. It is carried across processes in the message's
	// metadata.
	HopBudget = 64
	// CopyBudget is how many copies of the messages of one delivery taken
	// from a queue may be handed on in this process (static_forwards and
	// fan-out make copies). Messages a task makes of its own count only
	// against MemberBudget: a task may answer one message with many.
	CopyBudget = 1000
	// MemberBudget bounds every message one delivery sets off in this
	// process: a cycle of tasks answering each other with new messages
	// would otherwise keep the delivery from ever leaving its queue.
	MemberBudget = 10000000
)

// Errors of a Send that went past a budget; the message is dead-lettered.
var (
	ErrHopBudget    = errors.New("hop budget exhausted")
	ErrCopyBudget   = errors.New("copy budget exhausted")
	ErrMemberBudget = errors.New("message budget exhausted")
)

// lineage is the in-process family of one delivery taken from a queue
// that survives the process (a System V queue): its messages and every
// message derived from them here (Send, Emit, Router forwards,
// transitively). The delivery may leave its queue once the lineage is
// settled: every member has been handled or put on a surviving queue.
//
// It counts rather than XORs (Storm's acker tracks trees across machines
// in constant space; in one process an atomic counter is exact and just as
// cheap): pending goes up by one when a member is queued in a mailbox and
// down by one when it has been handled, after whatever it sent was
// counted. Messages born in timers belong to no lineage.
type lineage struct {
	pending atomic.Int64
	copies  atomic.Int64
	members atomic.Int64
	// failed: a member was handled but its effect could not be kept (its
	// task stopped while its state could not be saved, or never handled
	// it): the delivery is handed over again rather than dropped.
	failed atomic.Bool
	// exceeded: the copy budget was hit; only the first refusal is
	// dead-lettered, the rest are counted.
	exceeded atomic.Bool
	// onSettled is called once pending reaches zero (the receiver looks
	// at its queue again then).
	onSettled func()
}

// newLineage returns a lineage held by its receiver until release: it
// cannot settle while the delivery's messages are still being handed
// over.
func newLineage(onSettled func()) *lineage {
	l := &lineage{onSettled: onSettled}
	l.pending.Store(1)
	return l
}

// add counts a new member, a copy handed on if copied; an error (and
// nothing counted) once a budget is spent.
func (l *lineage) add(copied bool) error {
	if copied && l.copies.Add(1) > CopyBudget {
		return fmt.Errorf("%w: more than %d copies from one delivery", ErrCopyBudget, CopyBudget)
	}
	if l.members.Add(1) > MemberBudget {
		return fmt.Errorf("%w: more than %d messages from one delivery", ErrMemberBudget, MemberBudget)
	}
	l.pending.Add(1)
	return nil
}

// hold counts a member that is on its way to a queue that survives the
// process (a task's gathered send, see outbox): no budget applies, since
// it leaves the process.
func (l *lineage) hold() { l.pending.Add(1) }

// release ends n holds: their members are on their queue.
func (l *lineage) release(n int64) {
	if l.pending.Add(-n) == 0 && l.onSettled != nil {
		l.onSettled()
	}
}

// fail marks a member whose effect could not be kept, and is its done.
func (l *lineage) fail() {
	l.failed.Store(true)
	l.done()
}

// done marks one member handled (or the receiver's hold released).
func (l *lineage) done() {
	if l.pending.Add(-1) == 0 && l.onSettled != nil {
		l.onSettled()
	}
}

// settled reports whether every member has been handled.
func (l *lineage) settled() bool { return l.pending.Load() <= 0 }
