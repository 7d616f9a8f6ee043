package runtime

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/multimodule/multimodule/transit"
)

// HighWater is how many items a task's mailbox may hold before the host
// stops taking that task's messages out of its System V queue. The kernel
// queue is the buffer beyond it: a slow task pushes back on its senders
// instead of growing the daemon's memory, and what is still queued there
// survives a crash of the daemon.
const HighWater = 1024

// SweepInterval is how often the inbound asks the kernel whether any
// message arrived anywhere since it last looked (one system call: the
// totals of every queue, see transit.SystemTotals) and, only if so,
// drains every served queue that exists: the safety net for a lost ring
// (a full doorbell, a sender that does not ring, a ring to a doorbell
// that moved). An idle daemon does no per-queue work.
const SweepInterval = time.Second

// Inbound takes messages out of System V queues for the tasks of a host.
//
// It scales to many tasks without a thread per queue: one goroutine waits
// on the host's doorbell queue (one parked OS thread), which senders ring
// with the name of the queue they just filled; another drains exactly the
// queues that rang, without blocking. A queue whose task is at HighWater is
// left in the kernel and retried every few milliseconds until the task
// catches up.
//
// A task's queue is made only when something outside the process first
// sends to it: serving a task whose queue does not exist costs no system
// call beyond a stat. The doorbell is the transit dir's default one, rung
// for every queue without a doorbell of its own, so the first ring of a
// new queue names it; a watch on the transit dir (fsnotify) sees the key
// file of a queue made by a sender that does not ring, and a key file
// someone removed.
type Inbound struct {
	h       *Host
	tr      *transit.Transit
	bell    *transit.Queue
	onError func(error)

	mu     sync.Mutex
	routes map[string]*route
	// live are the routes a sweep looks at: those whose queue exists, and
	// those of tasks still catching up (a subset of routes; under mu).
	live map[string]*route
	// released are unserved routes whose peeked messages wait for Release.
	released map[string]*route

	wake wakeups
	stop chan struct{}
	wg   sync.WaitGroup
	// watch sees key files made and removed in the transit dir (nil if
	// the dir cannot be watched: the sweep then looks every second).
	watch *fsnotify.Watcher

	dead atomic.Uint64
}

// wakeups are what wakes the drainer besides its sweep.
type wakeups struct {
	rings    chan string
	sweepNow atomic.Bool
	kick     chan struct{} // wakes the drainer for sweepNow
	// ensureAll: the watch lost events; the next sweep puts back every
	// served queue's key file too.
	ensureAll atomic.Bool
}

// route is where one queue's messages go.
type route struct {
	q       *transit.Queue // nil until the task's queue exists (under mu)
	task    string         // deliver to this task's mailbox, or
	handler func(Message)  // hand to this function (control queues)

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
	if err := tr.SetDefaultDoorbell(bell.Name()); err != nil {
		return nil, err
	}
	in := &Inbound{h: h, tr: tr, bell: bell, onError: onError, routes: map[string]*route{}, live: map[string]*route{},
		released: map[string]*route{}, wake: wakeups{rings: make(chan string, 1024), kick: make(chan struct{}, 1)}, stop: make(chan struct{})}
	// Watched before any task is served: a queue made between a task's
	// check for it and the watch would otherwise go unnoticed.
	if w, err := fsnotify.NewWatcher(); err != nil {
		onError(fmt.Errorf("watching transit dir %s (a sweep each second instead): %w", tr.Dir(), err))
	} else if err := w.Add(tr.Dir()); err != nil {
		w.Close()
		onError(fmt.Errorf("watching transit dir %s (a sweep each second instead): %w", tr.Dir(), err))
	} else {
		in.watch = w
	}
	return in, nil
}

// ServeTask takes the messages of queue name for the host's task name. A
// queue that does not exist yet is not made: it is served from when a
// sender outside the process makes it (see Inbound).
func (in *Inbound) ServeTask(name string) error {
	if !transit.ValidName(name) {
		return fmt.Errorf("%w: %q", transit.ErrBadName, name)
	}
	r := &route{task: name}
	in.mu.Lock()
	in.routes[name] = r
	if in.h.catchingUp(name) {
		in.live[name] = r
	} else {
		delete(in.live, name)
	}
	delete(in.released, name) // what it had peeked is peeked again
	in.mu.Unlock()
	if in.tr.Exists(name) {
		// Published first, then checked: a queue made in between rings
		// (or shows in the watch) and finds the route; the drainer may
		// then have opened it already, and handed messages over. Opened
		// again, a new receiver would hand them over again.
		r.mu.Lock()
		var err error
		if r.q == nil {
			err = in.open(name, r)
		}
		r.mu.Unlock()
		if err != nil {
			in.mu.Lock()
			delete(in.routes, name)
			delete(in.live, name)
			in.mu.Unlock()
			return err
		}
		in.ring(name) // whatever waited while nobody served it
	} else if in.h.catchingUp(name) {
		in.ring(name) // nothing to catch up with: the drainer ends it
	}
	return nil
}

// open makes r serve the existing queue name (r.mu held): a receiver for
// its task, and the queue's doorbell file naming ours, for senders that
// knew it by another (an external process that served it before).
func (in *Inbound) open(name string, r *route) error {
	q, err := in.tr.Queue(name)
	if err != nil {
		return err
	}
	if err := in.tr.SetDoorbell(name, in.bell.Name()); err != nil {
		return err
	}
	r.q = q
	r.rx = NewReceiver(in.h, q, r.task, ReceiverOptions{OnError: in.onError, OnSettled: func() { in.ring(name) }})
	in.mu.Lock()
	if in.routes[name] == r {
		in.live[name] = r
	}
	in.mu.Unlock()
	return nil
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
	in.live[name] = r
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
	delete(in.live, name)
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

// DeadLetters counts messages this inbound sent to the dead-letter queue.
func (in *Inbound) DeadLetters() uint64 { return in.dead.Load() }

// Start runs the doorbell waiter, the drainer and the transit dir's watch.
func (in *Inbound) Start() {
	in.wg.Add(2)
	go in.waitBell()
	go in.drainLoop()
	if in.watch != nil {
		in.wg.Add(1)
		go in.watchDir()
	}
}

// Stop ends the goroutines. Messages not yet taken stay in their queues.
func (in *Inbound) Stop() {
	close(in.stop)
	if err := in.bell.Wake(); err != nil {
		in.onError(fmt.Errorf("waking the doorbell waiter: %w", err))
	}
	if in.watch != nil {
		in.watch.Close()
	}
	in.wg.Wait()
	in.tr.ClearDefaultDoorbell(in.bell.Name())
}

// watchDir turns the transit dir's events into work: a key file made for
// a task served here (by a sender that may not ring) is drained, one
// removed under a served queue is put back (senders would otherwise make
// another queue under a new key). Events lost to an overflow make the
// drainer look at everything once.
func (in *Inbound) watchDir() {
	defer in.wg.Done()
	for {
		select {
		case ev, ok := <-in.watch.Events:
			if !ok {
				return
			}
			name := filepath.Base(ev.Name)
			in.mu.Lock()
			r := in.routes[name]
			in.mu.Unlock()
			if r == nil {
				continue
			}
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				in.ensure(name, r)
			}
			in.ring(name)
		case err, ok := <-in.watch.Errors:
			if !ok {
				return
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				in.onError(fmt.Errorf("watching transit dir %s: %w", in.tr.Dir(), err))
			}
			in.wake.ensureAll.Store(true)
			in.sweepSoon()
		}
	}
}

// ensure puts back the key file of r's queue if it has gone.
func (in *Inbound) ensure(name string, r *route) {
	r.mu.Lock()
	q := r.q
	r.mu.Unlock()
	if q == nil {
		return
	}
	if err := q.EnsureName(); err != nil {
		in.onError(fmt.Errorf("queue %s: %w", name, err))
	}
}

func (in *Inbound) ring(name string) {
	select {
	case in.wake.rings <- name:
	default:
		in.sweepSoon() // too many rings pending: drain everything
	}
}

// sweepSoon makes the drainer drain everything at its next turn.
func (in *Inbound) sweepSoon() {
	in.wake.sweepNow.Store(true)
	select {
	case in.wake.kick <- struct{}{}:
	default:
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
			in.sweepSoon()
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

// drainLoop drains the queues that rang, every queue that exists when the
// kernel's totals say a message arrived somewhere unannounced (see
// SweepInterval), and the throttled ones every few milliseconds.
func (in *Inbound) drainLoop() {
	defer in.wg.Done()
	sweep := time.NewTicker(SweepInterval)
	defer sweep.Stop()
	// Throttled queues are looked at again every few milliseconds, and
	// only while there are some: an idle daemon has no timer running but
	// the sweep's.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	armed := false
	throttled := map[string]bool{}
	var seen transit.Totals
	sweeps := 0
	in.drainAll(throttled, true, true)
	for {
		if len(throttled) > 0 && !armed {
			retry.Reset(5 * time.Millisecond)
			armed = true
		}
		select {
		case <-in.stop:
			return
		case name := <-in.wake.rings:
			in.drain(name, throttled)
		case <-sweep.C:
			// Read before the drain: whatever arrives after it changes
			// the totals again and is looked for next time. The totals
			// are amounts, not counts of arrivals: one message in and
			// another out elsewhere leave them as they were, so every
			// tenth sweep drains regardless. Queues made unannounced (a
			// ring and a watch event both lost, and the loss not told)
			// should not happen; they are looked for once a minute (a stat
			// per task that has no queue yet).
			sweeps++
			now, err := transit.SystemTotals()
			if err != nil || now != seen || in.watch == nil || sweeps%10 == 0 {
				seen = now
				in.drainAll(throttled, in.watch == nil || in.wake.ensureAll.Swap(false), in.watch == nil || sweeps%60 == 0)
			}
		case <-in.wake.kick:
			// Rings or watch events were lost: queues made meanwhile may
			// have gone unannounced.
			if in.wake.sweepNow.Swap(false) {
				in.drainAll(throttled, in.wake.ensureAll.Swap(false), true)
			}
		case <-retry.C:
			armed = false
			if in.wake.sweepNow.Swap(false) {
				in.drainAll(throttled, in.wake.ensureAll.Swap(false), true)
				continue
			}
			for name := range throttled {
				in.drain(name, throttled)
			}
		}
	}
}

// drainAll drains every served queue that exists, and ends the catch-up
// of tasks whose queue does not (a sweep after lost rings); with ensure,
// it first puts back key files that have gone (lost watch events). Tasks
// whose queue was never made cost it nothing, unless unmade: then it also
// looks whether their queue was made meanwhile with its ring and watch
// event both lost (a burst of new queues overflows both), one file stat
// each.
func (in *Inbound) drainAll(throttled map[string]bool, ensure, unmade bool) {
	in.mu.Lock()
	rs := make(map[string]*route, len(in.live))
	for n, r := range in.live {
		rs[n] = r
	}
	var check []string
	if unmade {
		for n, r := range in.routes {
			if _, ok := rs[n]; !ok && r.task != "" {
				check = append(check, n)
			}
		}
	}
	in.mu.Unlock()
	for _, n := range check {
		if in.tr.Exists(n) {
			in.drain(n, throttled) // opens it
		}
	}
	for n, r := range rs {
		if ensure {
			in.ensure(n, r)
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
	if r.q == nil {
		// A task's queue that did not exist: made by now (this is its
		// first ring, or its key file was seen), or still not there.
		if !in.tr.Exists(name) {
			if in.h.catchingUp(r.task) && !in.catchUp(r) {
				throttled[name] = true // senders still on their way: again soon
				return false
			}
			if r.q == nil { // caught up with no queue: nothing to sweep
				in.mu.Lock()
				if in.live[name] == r {
					delete(in.live, name)
				}
				in.mu.Unlock()
			}
			return false
		}
		if err := in.open(name, r); err != nil {
			in.onError(fmt.Errorf("queue %s: %w", name, err))
			return false
		}
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
	settle := func() {
		if r.rx != nil {
			r.rx.Settle()
		}
	}
	return in.h.finishCatchUp(r.task, settle, func() {
		if r.q == nil {
			if !in.tr.Exists(r.task) {
				return // no queue: nothing was sent to it
			}
			if err := in.open(r.task, r); err != nil {
				in.onError(fmt.Errorf("queue %s: %w", r.task, err))
				return
			}
		}
		r.rx.Settle() // a sender may be waiting for room
		for {
			d, err := r.rx.take()
			in.dead.Add(uint64(d.Dead))
			if err != nil || len(d.Msgs)+d.Dead == 0 && !d.Wake && d.Ring == "" {
				break
			}
		}
	})
}
