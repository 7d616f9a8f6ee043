package runtime

import (
	"errors"
	goruntime "runtime"
	"sync"
	"sync/atomic"
)

// ErrMailboxClosed is returned when delivering to a task that has stopped.
var ErrMailboxClosed = errors.New("task has stopped taking messages")

type controlKind uint8

const (
	ctlTimer controlKind = iota + 1
	ctlConfig
)

// item is one unit of work for a task's goroutine: a message (with the
// lineage it belongs to), or (rarely) a timer firing or config change.
// Kept to three words so queueing is cheap (a message's hops, rarely
// needed, ride in its metadata).
type item struct {
	msg Message
	ctl *control
	lin *lineage
}

type control struct {
	kind   controlKind
	timer  *recurTimer
	config *configChange
}

// segSize items make one queue segment (24 B each: 3 KiB).
const segSize = 128

type segment struct {
	items [segSize]item
	n     int
	next  *segment
}

// maxFreeSegs bounds the memory an idle mailbox keeps for reuse.
const maxFreeSegs = 16

// mailbox is an unbounded FIFO: a task never loses a message because it is
// slow. It is a chain of fixed segments, so growing never copies, and the
// consumer detaches the whole chain in one lock round trip, so a busy task
// pays for the lock once per batch, not per message. Depth is reported for
// the monitor instead of bounded here.
type mailbox struct {
	mu         sync.Mutex
	head, tail *segment
	free       *segment
	nfree      int
	closed     bool

	// The consumer parks on wake only after announcing it in sleeping, so a
	// producer pays for a wake-up only when the consumer is really asleep.
	sleeping atomic.Bool
	wake     chan struct{} // capacity 1

	pushed atomic.Uint64 // items accepted (incremented under mu)
	taken  uint64        // items detached by the consumer (consumer-owned)
	done   atomic.Uint64 // items fully handled
}

func newMailbox() *mailbox {
	return &mailbox{wake: make(chan struct{}, 1)}
}

func (m *mailbox) push(it item) error {
	return m.pushAll([]item{it})
}

// pushAll queues items in order, all or (closed) none, waking the consumer
// once for them: a delivery of many messages costs its task one wake-up,
// and the task takes them together.
func (m *mailbox) pushAll(items []item) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrMailboxClosed
	}
	for _, it := range items {
		t := m.tail
		if t == nil || t.n == segSize {
			s := m.free
			if s != nil {
				m.free, s.next = s.next, nil
				m.nfree--
			} else {
				s = &segment{}
			}
			if t == nil {
				m.head = s
			} else {
				t.next = s
			}
			m.tail, t = s, s
		}
		t.items[t.n] = it
		t.n++
	}
	m.pushed.Add(uint64(len(items)))
	m.mu.Unlock()
	if m.sleeping.Load() && m.sleeping.CompareAndSwap(true, false) {
		m.signal()
	}
	return nil
}

func (m *mailbox) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// wait blocks the consumer until something may have been pushed (or the
// mailbox closed). It yields a few times first: a busy producer usually
// pushes again within a scheduling quantum, which is far cheaper than a
// park and wake-up.
func (m *mailbox) wait() {
	for range 3 {
		if m.pushed.Load() != m.taken {
			return
		}
		goruntime.Gosched()
	}
	m.sleeping.Store(true)
	if m.pushed.Load() != m.taken { // pushed after our last look
		if !m.sleeping.CompareAndSwap(true, false) {
			<-m.wake // a producer took the flag and signalled: consume it
		}
		return
	}
	<-m.wake
}

// takeAll detaches every queued item, in order, and reports whether the
// mailbox is closed. The caller hands the chain back with recycle.
func (m *mailbox) takeAll() (*segment, bool) {
	m.mu.Lock()
	h := m.head
	m.head, m.tail = nil, nil
	m.taken = m.pushed.Load()
	closed := m.closed
	m.mu.Unlock()
	return h, closed
}

// recycle keeps a few handled segments for reuse; their items are cleared
// so handled messages can be collected.
func (m *mailbox) recycle(h *segment) {
	var keep, last *segment
	n := 0
	for s := h; s != nil && n < maxFreeSegs; s = s.next {
		clear(s.items[:s.n])
		s.n = 0
		if keep == nil {
			keep = s
		}
		last = s
		n++
	}
	if keep == nil {
		return
	}
	last.next = nil
	m.mu.Lock()
	if m.nfree < maxFreeSegs {
		last.next, m.free = m.free, keep
		m.nfree += n
	}
	m.mu.Unlock()
}

// close stops new deliveries; what is queued is still handed out.
func (m *mailbox) close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.sleeping.Store(false)
	m.signal()
}

// depth is the number of items accepted and not yet fully handled
// (including those being handled).
func (m *mailbox) depth() uint64 {
	done := m.done.Load() // read done first: depth can only be overstated
	return m.pushed.Load() - done
}
