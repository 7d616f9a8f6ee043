package runtime

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/transit"
)

// HighWater is how many items a task's mailbox may hold before the host
// stops taking that task's messages out of its System V queue. The kernel
// queue is the buffer beyond it: a slow task pushes back on its senders
// instead of growing the daemon's memory, and what is still queued there
// survives a crash of the daemon.
const HighWater = 1024

// SweepInterval is how often every served queue is drained regardless of
// rings: the safety net for a lost ring (a full doorbell, a sender that
// does not ring, a ring to a doorbell that moved).
const SweepInterval = time.Second

// Inbound takes messages out of System V queues for the tasks of a host.
//
// It scales to many tasks without a thread per queue: one goroutine waits
// on the host's doorbell queue (one parked OS thread), which senders ring
// with the name of the queue they just filled; another drains exactly the
// queues that rang, without blocking. A queue whose task is at HighWater is
// left in the kernel and retried every few milliseconds until the task
// catches up.
type Inbound struct {
	h       *Host
	tr      *transit.Transit
	bell    *transit.Queue
	onError func(error)

	mu     sync.Mutex
	routes map[string]*route
	// released are unserved routes whose peeked messages wait for Release.
	released map[string]*route

	rings    chan string
	sweepNow atomic.Bool
	stop     chan struct{}
	wg       sync.WaitGroup

	dead atomic.Uint64
}

// route is where one queue's messages go.
type route struct {
	q       *transit.Queue
	task    string        // deliver to this task's mailbox, or
	handler func(Message) // hand to this function (control queues)

	// mu is held by the drainer while it takes one delivery off the queue
	// and hands it over, so that Unserve can wait for that to finish: once
	// Unserve returns, nothing more reaches the task from this queue.
	mu   sync.Mutex
	gone bool
	// rx receives a task's messages (nil for a handler), holding them in
	// the queue until settled; it rings the drainer when one settles.
	rx *Receiver
}

// NewInbound prepares to serve queues for h, with doorbell as the queue
// that senders ring. Errors that have no caller (a queue that fails, a
// dead letter that cannot be written) go to onError.
func NewInbound(h *Host, tr *transit.Transit, doorbell string, onError func(error)) (*Inbound, error) {
	bell, err := tr.Bell(doorbell)
	if err != nil {
		return nil, err
	}
	return &Inbound{h: h, tr: tr, bell: bell, onError: onError, routes: map[string]*route{},
		released: map[string]*route{}, rings: make(chan string, 1024), stop: make(chan struct{})}, nil
}

// ServeTask takes the messages of queue name for the host's task name.
func (in *Inbound) ServeTask(name string) error {
	return in.add(name, &route{task: name})
}

// ServeFunc hands the messages of queue name to fn, on the inbound's
// goroutine, one at a time.
func (in *Inbound) ServeFunc(name string, fn func(Message)) error {
	return in.add(name, &route{handler: fn})
}

func (in *Inbound) add(name string, r *route) error {
	q, err := in.tr.Queue(name)
	if err != nil {
		return err
	}
	r.q = q
	if r.task != "" {
		r.rx = NewReceiver(in.h, q, r.task, ReceiverOptions{OnError: in.onError, OnSettled: func() { in.ring(name) }})
	}
	if err := in.tr.SetDoorbell(name, in.bell.Name()); err != nil {
		return err
	}
	in.mu.Lock()
	in.routes[name] = r
	delete(in.released, name) // what it had peeked is peeked again
	in.mu.Unlock()
	in.ring(name) // whatever waited while nobody served it
	return nil
}

// Unserve stops taking the queue's messages; they stay in the kernel.
// When it returns, no message from the queue is on its way to the task.
// The messages the task was handed stay in the queue too, until Release.
func (in *Inbound) Unserve(name string) error {
	in.mu.Lock()
	r := in.routes[name]
	delete(in.routes, name)
	in.mu.Unlock()
	if r != nil {
		r.mu.Lock()
		r.gone = true
		if r.rx != nil && r.rx.Pending() > 0 {
			in.mu.Lock()
			in.released[name] = r
			in.mu.Unlock()
		}
		r.mu.Unlock()
	}
	return in.tr.ClearDoorbell(name)
}

// Release settles an unserved task's queue once the task has stopped:
// with handled (it finished every message it was handed) they are taken
// off the queue; without, they stay there for whoever serves it next.
func (in *Inbound) Release(name string, handled bool) {
	in.mu.Lock()
	r := in.released[name]
	delete(in.released, name)
	in.mu.Unlock()
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.rx.Release(handled); err != nil {
		in.onError(err)
	}
}

// settle takes off r's queue what its task has handled.
func (in *Inbound) settle(r *route) {
	r.rx.Settle()
}

// DeadLetters counts messages this inbound sent to the dead-letter queue.
func (in *Inbound) DeadLetters() uint64 { return in.dead.Load() }

// Start runs the doorbell waiter and the drainer.
func (in *Inbound) Start() {
	in.wg.Add(2)
	go in.waitBell()
	go in.drainLoop()
}

// Stop ends both goroutines. Messages not yet taken stay in their queues.
func (in *Inbound) Stop() {
	close(in.stop)
	if err := in.bell.Wake(); err != nil {
		in.onError(fmt.Errorf("waking the doorbell waiter: %w", err))
	}
	in.wg.Wait()
}

func (in *Inbound) ring(name string) {
	select {
	case in.rings <- name:
	default:
		in.sweepNow.Store(true) // too many rings pending: drain everything
	}
}

// waitBell parks on the doorbell until a ring or a wake.
func (in *Inbound) waitBell() {
	defer in.wg.Done()
	for {
		d, err := in.bell.Receive(true)
		select {
		case <-in.stop:
			return
		default:
		}
		switch {
		case err != nil:
			in.onError(fmt.Errorf("doorbell %s: %w", in.bell.Name(), err))
			select {
			case <-in.stop:
				return
			case <-time.After(100 * time.Millisecond): // do not spin on a broken queue
			}
		case d.Ring != "":
			in.ring(d.Ring)
		case len(d.Msgs) > 0:
			in.deadLetterAll(d.Msgs)
		}
		// Junk (an odd mtype, undecodable text) was dead-lettered by the
		// queue: counted, and the wait goes on. Where there was junk, the
		// doorbell may have been full and rings lost: sweep now rather
		// than at the next SweepInterval.
		if d.Dead > 0 {
			in.dead.Add(uint64(d.Dead))
			in.sweepNow.Store(true)
		}
	}
}

// deadLetterAll keeps messages sent to the doorbell itself, which only
// carries rings, on the dead-letter queue.
func (in *Inbound) deadLetterAll(msgs []Message) {
	for _, m := range msgs {
		in.dead.Add(1)
		if err := in.tr.DeadLetter(in.bell.Name(), "a message on a doorbell, which carries only rings", m); err != nil {
			in.onError(fmt.Errorf("doorbell %s: %w", in.bell.Name(), err))
		}
	}
}

// drainLoop drains the queues that rang, every queue each SweepInterval,
// and the throttled ones every few milliseconds.
func (in *Inbound) drainLoop() {
	defer in.wg.Done()
	sweep := time.NewTicker(SweepInterval)
	defer sweep.Stop()
	retry := time.NewTicker(5 * time.Millisecond)
	defer retry.Stop()
	throttled := map[string]bool{}
	in.drainAll(throttled)
	for {
		select {
		case <-in.stop:
			return
		case name := <-in.rings:
			in.drain(name, throttled)
		case <-sweep.C:
			in.drainAll(throttled)
		case <-retry.C:
			if in.sweepNow.Swap(false) {
				in.drainAll(throttled)
				continue
			}
			for name := range throttled {
				in.drain(name, throttled)
			}
		}
	}
}

func (in *Inbound) drainAll(throttled map[string]bool) {
	in.mu.Lock()
	names := make([]string, 0, len(in.routes))
	for n := range in.routes {
		names = append(names, n)
	}
	in.mu.Unlock()
	sort.Strings(names)
	for _, n := range names {
		in.mu.Lock()
		r := in.routes[n]
		in.mu.Unlock()
		if r != nil {
			// Senders find a queue by its key file: put it back if a /tmp
			// cleaner took it, rather than let them create another queue.
			if err := r.q.EnsureName(); err != nil {
				in.onError(fmt.Errorf("queue %s: %w", n, err))
			}
		}
		in.drain(n, throttled)
	}
}

// drain moves messages from one queue to their destination while there is
// room for them.
func (in *Inbound) drain(name string, throttled map[string]bool) {
	in.mu.Lock()
	r := in.routes[name]
	in.mu.Unlock()
	delete(throttled, name)
	if r == nil {
		return // not ours (any more): the new host takes them
	}
	for in.drainOne(name, r, throttled) {
	}
}

// drainOne takes one delivery off r's queue and hands it over, under r.mu;
// it reports whether to go on.
func (in *Inbound) drainOne(name string, r *route, throttled map[string]bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone {
		return false
	}
	var d transit.Delivery
	var err error
	if r.rx != nil {
		d, err = r.rx.Next()
		if r.rx.Pending() > 0 {
			throttled[name] = true // look again soon, to settle the rest
		}
		switch {
		case errors.Is(err, ErrHighWater):
			throttled[name] = true
			return false
		case errors.Is(err, ErrNoSuchQueue):
			return false
		case errors.Is(err, transit.ErrEmpty) && in.h.catchingUp(r.task):
			in.dead.Add(uint64(d.Dead))
			if !in.catchUp(r) {
				throttled[name] = true // senders still on their way: again soon
			}
			return false
		}
	} else {
		d, err = r.q.Receive(false)
		for _, m := range d.Msgs {
			r.handler(m)
		}
	}
	in.dead.Add(uint64(d.Dead))
	if err != nil && !errors.Is(err, transit.ErrEmpty) {
		in.onError(fmt.Errorf("queue %s: %w", name, err))
	}
	if d.Ring != "" {
		in.onError(fmt.Errorf("queue %s: a doorbell ring arrived on a served queue and was dropped", name))
	}
	return err == nil && (len(d.Msgs) > 0 || d.Dead > 0 || d.Ring != "" || d.Wake)
}

// catchUp ends the catch-up of r's task once its queue was drained once:
// with the task's senders held, take what arrived meanwhile (regardless of
// HighWater: the senders wait), then let them deliver directly.
func (in *Inbound) catchUp(r *route) bool {
	return in.h.finishCatchUp(r.task, func() {
		in.settle(r) // a sender may be waiting for room
		for {
			d, err := r.rx.take()
			in.dead.Add(uint64(d.Dead))
			if err != nil || len(d.Msgs)+d.Dead == 0 && !d.Wake && d.Ring == "" {
				break
			}
		}
	})
}
