package runtime

import (
	"sync"
	"sync/atomic"
	"time"
)

// recurTimer fires at a fixed rate and asks its task's goroutine to run the
// work. A firing that finds the previous one still queued is skipped, so a
// slow task is never buried under its own timers.
type recurTimer struct {
	name string
	work func(Context)
	r    *runner

	mu      sync.Mutex
	every   time.Duration
	next    time.Time
	t       *time.Timer
	stopped bool

	pending atomic.Bool
}

func (r *runner) newTimer(name string, every time.Duration, work func(Context)) *recurTimer {
	rt := &recurTimer{name: name, work: work, r: r, every: every}
	rt.mu.Lock() // a very short period could fire before rt.t is set
	defer rt.mu.Unlock()
	rt.next = time.Now().Add(every)
	rt.t = time.AfterFunc(every, rt.fire)
	return rt
}

// idleTimer is a timer that is registered but never fires (it was never
// started): see TaskSpec.NoTimers.
func idleTimer(r *runner, name string, every time.Duration, work func(Context)) *recurTimer {
	return &recurTimer{name: name, work: work, r: r, every: every, stopped: true}
}

func (rt *recurTimer) fire() {
	rt.mu.Lock()
	if rt.stopped {
		rt.mu.Unlock()
		return
	}
	now := time.Now()
	rt.next = rt.next.Add(rt.every)
	if rt.next.Before(now) { // we fell behind: skip, do not burst
		rt.next = now.Add(rt.every)
	}
	rt.t.Reset(rt.next.Sub(now))
	rt.mu.Unlock()
	if rt.pending.CompareAndSwap(false, true) {
		if rt.r.mbox.push(item{ctl: &control{kind: ctlTimer, timer: rt}}) != nil {
			rt.pending.Store(false)
		}
	}
}

// setEvery changes the period, counting from now.
func (rt *recurTimer) setEvery(every time.Duration) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.t == nil { // idle: only Status sees the period
		rt.every = every
		return
	}
	if rt.stopped || rt.every == every {
		return
	}
	rt.every = every
	rt.next = time.Now().Add(every)
	rt.t.Reset(every)
}

func (rt *recurTimer) stop() {
	rt.mu.Lock()
	rt.stopped = true
	if rt.t != nil { // an idle timer was never started
		rt.t.Stop()
	}
	rt.mu.Unlock()
}

func (rt *recurTimer) isStopped() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.stopped
}

func (rt *recurTimer) period() time.Duration {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.every
}
