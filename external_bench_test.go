package multimodule

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/runtime/external"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// reports reads reports from a queue one at a time: one delivery may
// carry several (a task's sends are batched).
type reports struct {
	q   *transit.Queue
	buf []map[string]any
}

// waitReport waits for the next report.
func waitReport(b *testing.B, r *reports) map[string]any {
	return waitReportOr(r, func() { b.Fatal("no report within 10s") })
}

func waitReportOr(r *reports, fail func()) map[string]any {
	deadline := time.Now().Add(10 * time.Second)
	for len(r.buf) == 0 && time.Now().Before(deadline) {
		d, err := r.q.Receive(false)
		if err == nil && len(d.Msgs) > 0 {
			r.buf = d.Msgs
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	if len(r.buf) == 0 {
		fail()
		return nil
	}
	m := r.buf[0]
	r.buf = r.buf[1:]
	return m
}

// BenchmarkExternalSpawnToFirstMessage starts the external process of a
// stateful task with a message already waiting in its queue, and times
// until the task has handled it; the baseline is starting the same
// binary to print its usage and exit, in the same run.
func BenchmarkExternalSpawnToFirstMessage(b *testing.B) {
	bin := buildExtprog(b)
	state := b.TempDir()
	dir := testenv.TransitDir(b)
	tr, _ := transit.Open(transit.Options{Dir: dir})
	seenQ, _ := tr.Queue("Seen")
	seen := &reports{q: seenQ}
	spec := external.Spec{Task: external.Named("Counter", schema.TaskSpec{Kind: "Counter", Hash: "h"})}
	os.MkdirAll(external.Dir(state), 0o700)
	raw, _ := json.Marshal(spec)
	os.WriteFile(external.SpecPath(state, "Counter"), raw, 0o600)
	var bare, ours []time.Duration
	for i := range max(b.N, 20) {
		t0 := time.Now()
		if err := exec.Command(bin, "-h").Run(); err != nil && !isExit(err) {
			b.Fatal(err)
		}
		bare = append(bare, time.Since(t0))

		tr.Send("Counter", map[string]any{"i": float64(i)})
		cmd := exec.Command(bin, "-m", "Counter", "-s", state, "-T", dir, "-p", "acme", "-o", "log:"+filepath.Join(state, "log"))
		t0 = time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill() })
		waitReport(b, seen)
		ours = append(ours, time.Since(t0))
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	b.ReportMetric(float64(median(bare).Microseconds())/1000, "bare-exec-ms")
	b.ReportMetric(float64(median(ours).Microseconds())/1000, "spawn-to-first-msg-ms")
	b.ReportMetric(0, "ns/op")
}

// fullyExited: every thread of pid is gone. A zombie thread-group leader
// can show "Z" while another thread, woken in msgrcv, still takes a
// message.
func fullyExited(pid int) bool {
	if _, err := external.StartTime(pid); err == nil {
		return false
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	return len(tasks) <= 1
}

func isExit(err error) bool {
	_, ok := err.(*exec.ExitError)
	return ok
}

// BenchmarkExternalKillToRecovered kills an external task with SIGKILL
// under a running daemon and times until a message sent right after the
// kill has been handled by its replacement; spawn-to-first-message is
// the floor it is compared with.
func BenchmarkExternalKillToRecovered(b *testing.B) {
	bin := buildExtprog(b)
	state := b.TempDir()
	dir := testenv.TransitDir(b)
	cfg := testenv.WriteFiles(b, map[string]string{"a.cue": `tasks: Counter: {kind: "Counter", external: true, restart: {initial: 0.001, max: 0.001, hold_after: 100000}}` + "\n"})
	d := exec.Command(bin, "-c", cfg, "-s", state, "-T", dir, "-p", "acme", "-o", "log:"+filepath.Join(state, "log"))
	if err := d.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		d.Process.Signal(syscall.SIGTERM)
		d.Wait()
		killByStateDir(state)
	}()
	tr, _ := transit.Open(transit.Options{Dir: dir})
	seenQ, _ := tr.Queue("Seen")
	seen := &reports{q: seenQ}
	tr.Send("Counter", map[string]any{"i": -1.0})
	pid := int(waitReport(b, seen)["pid"].(float64))
	var ours []time.Duration
	for i := range max(b.N, 10) {
		t0 := time.Now()
		syscall.Kill(pid, syscall.SIGKILL)
		// Send once it is gone, so that the replacement handles it.
		for !fullyExited(pid) {
			time.Sleep(50 * time.Microsecond)
		}
		if err := tr.Send("Counter", map[string]any{"i": float64(i)}); err != nil {
			b.Fatal(err)
		}
		// Delivery is at least once: a message the killed process had
		// handled but not yet taken off its queue is handled again first.
		r := waitReport(b, seen)
		for r["i"] != float64(i) {
			r = waitReport(b, seen)
		}
		ours = append(ours, time.Since(t0))
		if int(r["pid"].(float64)) == pid {
			b.Fatal("the killed process reported")
		}
		pid = int(r["pid"].(float64))
	}
	b.ReportMetric(float64(median(ours).Microseconds())/1000, "kill-to-recovered-ms")
	b.ReportMetric(0, "ns/op")
}
