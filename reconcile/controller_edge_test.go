package reconcile

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/schema"
)

// The editor case ConfirmRemoval exists for: a file deleted, then written
// back. The confirming load does not match confirmHash, nothing is
// removed, and confirmHash/confirmAt are never cleared: Tick asks for a
// confirming load on every wake, and NextWake stays in the past.
func TestAnUndoneRemovalAsksForNoMoreConfirmations(t *testing.T) {
	h := newHarness(t, nil)
	both := config(spec("A", "A", "h"), spec("B", "B", "h"))
	h.c.Load(both, Watched)
	h.wantCalls("start A internal", "start B internal")
	h.c.Load(config(spec("A", "A", "h")), Watched) // B's file deleted
	h.c.Load(both, Watched)                        // and written back
	if next := h.c.NextWake(); !next.IsZero() {
		t.Fatalf("a confirmation is still asked for at %v", next)
	}
	h.wantCalls()
	// A confirming load that finds another config asks no more either.
	h.c.Load(config(spec("A", "A", "h")), Watched)
	if !h.tickToWake() {
		t.Fatal("no confirmation asked for")
	}
	h.c.Load(both, Confirming)
	h.wantCalls()
	for i := 0; i < 3; i++ {
		next := h.c.NextWake()
		if !next.IsZero() && !next.After(h.clock.now) {
			confirm, _ := h.c.Tick()
			t.Errorf("round %d: NextWake %v is not after now %v (confirm=%v): the owner spins reloading", i, next, h.clock.now, confirm)
			h.c.Load(both, Confirming)
		}
	}
}

// After an external's crash it is restarted at once, but its retry.next
// (now, or an earlier backoff) stays behind: NextWake is in the past until
// StableAfter, so the owner's wake timer fires at 0 in a loop (a busy spin
// of Tick/reconcile for 10 s after every external crash or failed start).
func TestNoBusyWakesAfterAnExternalRestart(t *testing.T) {
	h := newHarness(t, nil)
	h.c.Load(config(spec("A", "A", "h", external)), Watched)
	h.wantCalls("start A external")
	h.clock.advance(time.Second)
	h.c.Exited("A", errors.New("crash"))
	h.wantCalls("start A external")
	spins := 0
	for i := 0; i < 1000; i++ {
		h.clock.advance(time.Millisecond)
		if next := h.c.NextWake(); !next.IsZero() && !next.After(h.clock.now) {
			spins++
			h.c.Tick()
		}
	}
	if spins > 0 {
		t.Errorf("NextWake was due at once on %d of 1000 wakes within the first second after a restart", spins)
	}
}

// A stop that outlasts StableAfter for a task with failures: NextWake stays
// at started+StableAfter (past), Tick does nothing while stopping.
func TestNoBusyWakesWhileStopping(t *testing.T) {
	h := newHarness(t, nil)
	h.c.Load(config(spec("A", "A", "h", external)), Watched)
	h.wantCalls("start A external")
	h.c.Exited("A", errors.New("crash"))
	h.wantCalls("start A external")
	h.clock.advance(time.Second)
	h.c.Load(config(spec("A", "A", "h")), Watched) // migrate to internal: stop begins
	h.wantCalls("stop A")
	h.clock.advance(11 * time.Second) // external ignores SIGTERM, grace 20 s
	if next := h.c.NextWake(); !next.IsZero() && !next.After(h.clock.now) {
		t.Errorf("NextWake %v due at once while stopping (now %v)", next, h.clock.now)
	}
}

type failReconf struct{ *fakeTarget }

func (f failReconf) Reconfigure(s schema.TaskSpec) error {
	f.calls = append(f.calls, "reconfigure "+s.Name)
	return errors.New("no")
}

// A running task held because its reconfigure failed hold_after times is
// never stopped by a failsafe: Failsafe returns early on any hold.
func TestFailsafeOverridesARetriesHoldOfARunningTask(t *testing.T) {
	h := newHarness(t, nil)
	ft := &fakeTarget{failStart: map[string]error{}}
	discard := slog.New(slog.DiscardHandler)
	c := NewController(failReconf{ft}, h.clock, Loggers{Log: discard, Error: discard, Alert: discard}, &memHolds{}, Timing{})
	c.Load(config(spec("A", "A", "h", withRestart(1, 1, 1))), Watched)
	c.Load(config(spec("A", "A", "h2", withRestart(1, 1, 1))), Watched)
	ft.calls = nil
	var st TaskState
	for _, ts := range c.Tasks() {
		st = ts
	}
	if st.Hold == nil || st.Running == nil {
		t.Fatalf("setup: %+v", st)
	}
	c.Failsafe("A", "memory past failsafe")
	if len(ft.calls) == 0 {
		t.Errorf("failsafe of a running, retries-held task did nothing (hold %s): it keeps running past its failsafe", st.Hold.Why)
	}
}

// An external that never stops when asked (every stop ends in SIGKILL),
// flipped between internal and external again and again, ends held: the
// config change at each flip, the long runs between flips and the clean
// stops of its internal turns do not forgive the failed stops.
func TestATaskThatWillNotStopEndsHeldAcrossFlips(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ext := true
	load := func(hash string) {
		mods := []func(*schema.TaskSpec){withRestart(1, 1, 3)}
		if ext {
			mods = append(mods, external)
		}
		h.c.Load(config(spec("A", "A", hash, mods...)), Watched)
	}
	load("h0")
	h.wantCalls("start A external")
	for i := 1; i <= 5; i++ {
		h.clock.advance(time.Minute) // a stable run before each flip
		h.c.Tick()
		wasExt := ext
		ext = !ext
		load(fmt.Sprint("h", i))
		h.wantCalls("stop A")
		if wasExt {
			h.c.Stopped("A", errors.New("did not exit within the grace: killed"))
		} else {
			h.c.Stopped("A", nil)
		}
		if i < 5 {
			if st := h.state("A"); st.Hold != nil {
				t.Fatalf("flip %d: held too early: %+v", i, st.Hold)
			}
			if wasExt {
				h.tickToWake()
			}
			h.target.take()
			if h.state("A").Running == nil {
				t.Fatalf("flip %d: not started again: %+v", i, h.state("A"))
			}
		}
	}
	st := h.state("A")
	if st.Hold == nil || !strings.Contains(st.Hold.Message, "3 stops failed within") {
		t.Fatalf("after 3 killed stops: %+v", st)
	}
	h.clock.advance(time.Hour)
	h.c.Tick()
	h.wantCalls()
}
