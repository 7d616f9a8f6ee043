package runtime

import (
	"errors"
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
	// fan-out make copies). Messages a task makes of its own do not count:
	// a task may answer one message with many.
	CopyBudget = 1000
)

// Errors of a Send that went past a budget; the message is dead-lettered.
var (
	ErrHopBudget  = errors.New("hop budget exhausted")
	ErrCopyBudget = errors.New("copy budget exhausted")
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

// add counts a new member, a copy handed on if copied; false (and
// nothing counted) once the copy budget is spent.
func (l *lineage) add(copied bool) bool {
	if copied && l.copies.Add(1) > CopyBudget {
		return false
	}
	l.pending.Add(1)
	return true
}

// done marks one member handled (or the receiver's hold released).
func (l *lineage) done() {
	if l.pending.Add(-1) == 0 && l.onSettled != nil {
		l.onSettled()
	}
}

// settled reports whether every member has been handled.
func (l *lineage) settled() bool { return l.pending.Load() <= 0 }
