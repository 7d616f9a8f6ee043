package external

import (
	"syscall"
	"testing"
	"time"
)

// A child that outlived the wait after SIGKILL (a process in
// uninterruptible sleep) is left to Poll; when it finally exits, its
// reaper reports the end once, as a requested and killed stop, and does
// not take the daemon down.
func TestAChildThatOutlivesTheKillWaitIsReportedOnce(t *testing.T) {
	t.Parallel()
	s, state, _ := newSupervisor(t)
	p, err := s.Spawn(specOf("Crash"))
	if err != nil {
		t.Fatal(err)
	}
	killGroup(t, p.Pid)
	waitReady(t, state, "Crash")
	s.mu.Lock()
	e := s.procs["Crash"]
	e.stopping, e.killed = true, true
	e.polled = true // what stop does when SIGKILL did not end it within killWait
	s.mu.Unlock()
	_ = syscall.Kill(p.Pid, syscall.SIGUSR1) // the process finally exits
	select {
	case ev := <-s.Events():
		if ev.Task != "Crash" || !ev.Requested || !ev.Killed {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit reported")
	}
	s.Poll()
	select {
	case ev := <-s.Events():
		t.Fatalf("a second event: %+v", ev)
	default:
	}
}
