package multimodule

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/statestore"
	"github.com/multimodule/multimodule/transit"
)

// smallTmpfs mounts a tmpfs of size (mount's syntax, "2m") on a fresh
// directory, unmounted when the test ends; it skips the test where that
// is not possible (not root, no mount in the container).
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): %s", err, out)
	}
	// Cleanups run last in, first out: callers start their daemons after
	// this, so those are killed before the unmount. -l in case a process
	// the test did not start still has a file open there.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "fill")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return path
		}
	}
}

// waitAlert reads the Alerts queue until a record whose msg starts with
// prefix arrives, and returns it.
func waitAlert(t *testing.T, e *extEnv, alerts *transit.Queue, prefix string) map[string]any {
	t.Helper()
	var got map[string]any
	testenv.WaitFor(t, 20*time.Second, "an alert "+prefix, func() bool {
		e.drain()
		d, err := alerts.Receive(false)
		for _, m := range d.Msgs {
			if msg, _ := m["msg"].(string); got == nil && strings.HasPrefix(msg, prefix) {
				got = m
			}
		}
		return err == nil && got != nil
	})
	return got
}

// savedCount reads Counter's count and pad from its state file.
func savedCount(t *testing.T, state string) (float64, int) {
	t.Helper()
	st, err := statestore.Open(filepath.Join(state, "tasks", "Counter.db"), statestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	snap, _, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(snap.Payload, &s); err != nil {
		t.Fatal(err)
	}
	n, _ := s["count"].(float64)
	pad, _ := s["pad"].(string)
	return n, len(pad)
}

// A stateful task's state dir on a full file system: its handled
// messages stay queued and a severe alert stands while saves fail; after
// a SIGKILL and with the space back, every message's effect is in the
// state. Saves failing in a running daemon clear with an ok alert once
// there is room again.
func TestFullDiskLosesNothingAndAlertsUntilSaved(t *testing.T) {
	t.Parallel()
	e := newExtEnv(t, `
tasks: Counter: {kind: "Counter", intervals: save_state: 0.05}
tasks: Router: config: routes: []
`)
	e.state = smallTmpfs(t, "2m")
	e.args = []string{"-o", "alert:Alerts,debug:" + filepath.Join(t.TempDir(), "debug.out")}
	alerts, err := e.tr.Queue("Alerts")
	if err != nil {
		t.Fatal(err)
	}
	counterQ, err := e.tr.Queue("Counter")
	if err != nil {
		t.Fatal(err)
	}
	queued := func() uint64 {
		st, err := counterQ.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.Messages
	}
	// pad makes a state too large for the state file's free pages, so a
	// save has to grow the file, which a full disk refuses.
	pad := func(kib int) {
		t.Helper()
		tr := map[string]any{"pad": strings.Repeat("p", kib<<10)}
		if err := e.tr.Send("Counter", map[string]any{".multimodule": map[string]any{"transform": tr}}); err != nil {
			t.Fatal(err)
		}
	}

	d := e.daemon()
	testenv.WaitFor(t, 10*time.Second, "Counter running", func() bool { return e.task("Counter").Status == "running" })
	filler := fill(t, e.state)
	pad(64)
	a := waitAlert(t, e, alerts, "state cannot be saved")
	if a["level"] != "severe" || a["task"] != "Counter" {
		t.Fatalf("alert %v, want a severe one for Counter", a)
	}
	// Once a save has failed, what the task handles stays queued (the pad
	// itself may have left ahead of the failed save: one save interval).
	const n = 30
	for i := 1; i <= n; i++ {
		e.send(i)
	}
	e.collect(n)
	if q := queued(); q < n || q > n+1 {
		t.Fatalf("%d messages queued while saves fail, want all %d handled since", q, n)
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.wait(t)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}

	e.got = nil
	d = e.daemon()
	e.collect(n) // all of them again: none had left the queue
	testenv.WaitFor(t, 20*time.Second, "Counter's queue settled", func() bool { e.drain(); return queued() == 0 })
	if c := e.last()["count"]; c != float64(n) {
		t.Fatalf("after the restart the last report says count %v, want %d", c, n)
	}

	// Saves fail again in a running daemon, then there is room again.
	// What was handled before the first failed save may have left the
	// queue ahead of it (at most one save interval, as ever); what is
	// handled once a save has failed stays.
	filler = fill(t, e.state)
	pad(256)
	waitAlert(t, e, alerts, "state cannot be saved")
	base := queued()
	for i := n + 1; i <= n+5; i++ {
		e.send(i)
	}
	e.collect(n + 5)
	if q := queued(); q != base+5 {
		t.Fatalf("%d messages queued while saves fail, want %d", q, base+5)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	a = waitAlert(t, e, alerts, "state saved again")
	if a["level"] != "ok" || a["previous"] != "severe" {
		t.Fatalf("alert %v, want ok after severe", a)
	}
	testenv.WaitFor(t, 20*time.Second, "Counter's queue settled", func() bool { e.drain(); return queued() == 0 })
	if _, err := control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.output())
	}
	if c, p := savedCount(t, e.state); c != n+5 || p != 256<<10 {
		t.Fatalf("saved state: count %v, pad %d bytes; want %d and %d", c, p, n+5, 256<<10)
	}
}
