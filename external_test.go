package multimodule

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/runtime/external"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// extEnv runs testdata/extprog daemons on one config, state and transit dir.
type extEnv struct {
	t               *testing.T
	bin, cfg, state string
	tr              *transit.Transit
	seen            *transit.Queue
	got             []map[string]any
	// args are more daemon flags.
	args []string
}

func newExtEnv(t *testing.T, config string) *extEnv {
	t.Helper()
	e := &extEnv{t: t, bin: buildExtprog(t), cfg: testenv.WriteFiles(t, map[string]string{"a.cue": config}), state: t.TempDir()}
	dir := testenv.TransitDir(t)
	var err error
	if e.tr, err = transit.Open(transit.Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if e.seen, err = e.tr.Queue("Seen"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.killExternals)
	return e
}

func (e *extEnv) daemon() *proc {
	return startProc(e.t, e.bin, append([]string{"-c", e.cfg, "-s", e.state, "-T", e.tr.Dir(), "-p", "acme"}, e.args...)...)
}

// externalPids lists the running "-m TASK" processes of this test.
func (e *extEnv) externalPids() []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), e.state) && strings.Contains(string(b), "-m\x00") {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if _, err := external.StartTime(pid); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// killExternals leaves no process behind, whatever the test did.
func (e *extEnv) killExternals() { killByStateDir(e.state) }

// killByStateDir kills every process whose command line names state.
func killByStateDir(state string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), state) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (e *extEnv) status() *control.StatusReply {
	e.t.Helper()
	var reply control.Reply
	testenv.WaitFor(e.t, 10*time.Second, "the daemon's status", func() bool {
		e.drain() // keep Seen from filling up while we wait
		var err error
		reply, err = control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.Status}, time.Second)
		return err == nil && reply.Status != nil
	})
	return reply.Status
}

// task is the named task's status (Name "" when the daemon has none).
func (e *extEnv) task(name string) control.TaskStatus {
	for _, tk := range e.status().Tasks {
		if tk.Name == name {
			return tk
		}
	}
	return control.TaskStatus{}
}

func (e *extEnv) send(i int) {
	e.t.Helper()
	if err := e.tr.Send("Counter", map[string]any{"i": float64(i)}); err != nil {
		e.t.Fatal(err)
	}
}

// collect reads Seen until it holds n reports in all.
func (e *extEnv) collect(n int) {
	e.t.Helper()
	testenv.WaitFor(e.t, 20*time.Second, fmt.Sprintf("%d reports", n), func() bool {
		e.drain()
		return len(e.got) >= n
	})
}

// drain takes every report waiting on Seen.
func (e *extEnv) drain() {
	for {
		d, err := e.seen.Receive(false)
		if err != nil || len(d.Msgs) == 0 {
			return
		}
		e.got = append(e.got, d.Msgs...)
	}
}

func (e *extEnv) last() map[string]any { return e.got[len(e.got)-1] }

// stop ends daemon d with SIGTERM, taking the reports that still come
// while it drains, so that Seen never fills and holds its shutdown up.
func (e *extEnv) stop(d *proc) {
	e.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	testenv.WaitFor(e.t, 30*time.Second, "the daemon's exit", func() bool {
		e.drain()
		return d.exited()
	})
}

const counterExternal = `
tasks: Counter: {kind: "Counter", external: true, intervals: save_state: 0.05}
tasks: Router: config: routes: []
`

func TestExternalTaskLifecycle(t *testing.T) {
	t.Parallel()
	e := newExtEnv(t, counterExternal)
	d := e.daemon()
	e.send(1)
	e.collect(1)
	extPid := e.last()["pid"].(float64)
	if int(extPid) == d.cmd.Process.Pid {
		t.Fatal("the external task ran in the daemon's process")
	}
	if tk := e.task("Counter"); tk.Where != "external" || tk.Pid != int(extPid) {
		t.Fatalf("status %v, want external with pid %v", tk, extPid)
	}

	// The daemon stops (SIGTERM): the external keeps working.
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.output())
	}
	e.send(2)
	e.collect(2)
	if e.last()["pid"] != extPid || e.last()["count"] != 2.0 {
		t.Fatalf("while the daemon was down: %v", e.last())
	}

	// A new daemon adopts it: still one process, same pid.
	d = e.daemon()
	if tk := e.task("Counter"); tk.Pid != int(extPid) {
		t.Fatalf("after a daemon restart the external is %v, want adopted pid %v", tk.Pid, extPid)
	}
	if n := len(e.externalPids()); n != 1 {
		t.Fatalf("%d external processes after the daemon restart, want 1", n)
	}

	// kill -9 once its state was saved (every 50ms, when it changed): it
	// comes back with it. The report was sent after the change. File times
	// come from the kernel's coarse clock (a tick, up to 10 ms, behind):
	// a save within a tick after the report shows an mtime before its
	// send_ts, so later than the send_ts less a tick is what counts. The
	// save before it, of message 1, was long before (a daemon stopped
	// in between).
	sentTs := e.last()[".ipc_transit_meta"].(map[string]any)["send_ts"].(float64)
	changed := time.UnixMicro(int64(sentTs * 1e6)).Add(-20 * time.Millisecond)
	// The file's mtime moves at a save's first write, before its commit
	// (an fsync, then the meta page): the save is whole once the file has
	// stopped changing (an unchanged state is not written again).
	var lastMod time.Time
	var stableSince time.Time
	testenv.WaitFor(t, 5*time.Second, "a state save", func() bool {
		fi, err := os.Stat(filepath.Join(e.state, "tasks", "Counter.db"))
		_, ierr := os.Stat(filepath.Join(e.state, "tasks", "saved.index"))
		if err != nil || ierr != nil || !fi.ModTime().After(changed) {
			return false
		}
		if !fi.ModTime().Equal(lastMod) {
			lastMod, stableSince = fi.ModTime(), time.Now()
		}
		return time.Since(stableSince) > 150*time.Millisecond
	})
	syscall.Kill(int(extPid), syscall.SIGKILL)
	testenv.WaitFor(t, 10*time.Second, "a new external process", func() bool {
		tk := e.task("Counter")
		return tk.Pid != 0 && tk.Pid != int(extPid) && tk.Status == "running"
	})
	e.send(3)
	e.collect(3)
	if e.last()["pid"] == extPid || e.last()["count"] != 3.0 {
		log, _ := os.ReadFile(filepath.Join(e.state, "external", "Counter.log"))
		files, _ := filepath.Glob(filepath.Join(e.state, "*", "*"))
		t.Fatalf("after kill -9: %v, want count 3 from a new process\n%s\nreports %v\nfiles %v", e.last(), log, e.got, files)
	}
	newPid := int(e.last()["pid"].(float64))

	// cleanly_exit with exit_externals leaves no process behind.
	if _, err := control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit, ExitExternals: true}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.output())
	}
	if _, err := external.StartTime(newPid); err == nil || len(e.externalPids()) != 0 {
		t.Fatalf("external %d (or another) still running after exit_externals", newPid)
	}
}

func TestFlipInternalExternalLosesNothing(t *testing.T) {
	t.Parallel()
	internal := strings.Replace(counterExternal, "external: true", "external: false", 1)
	e := newExtEnv(t, internal)
	d := e.daemon()
	e.task("Counter") // running
	stop := make(chan struct{})
	sent := make(chan int)
	go func() { // 50 messages a second
		i := 0
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				sent <- i
				return
			case <-tick.C:
				if err := e.tr.Send("Counter", map[string]any{"i": float64(i)}); err != nil {
					t.Error(err)
				}
				i++
			}
		}
	}()
	// The sender stops before the test ends, failed or not (its cleanup
	// runs before the daemon's kill): a t.Error after the end panics the
	// test binary, and the cleanups of every other test running then
	// never run, leaving their daemons and queues behind.
	var stopOnce sync.Once
	var total int
	stopSending := func() int {
		stopOnce.Do(func() {
			close(stop)
			total = <-sent
		})
		return total
	}
	t.Cleanup(func() { stopSending() })
	pids := map[float64]bool{}
	for flip := range 4 {
		cfg := counterExternal
		if flip%2 == 1 {
			cfg = internal
		}
		os.WriteFile(filepath.Join(e.cfg, "a.cue"), []byte(cfg), 0o600)
		want := "external"
		if flip%2 == 1 {
			want = "internal"
		}
		testenv.WaitFor(t, 30*time.Second, "Counter "+want, func() bool {
			tk := e.task("Counter")
			return tk.Where == want && tk.Status == "running" && generationsMatch(tk)
		})
		e.collect(len(e.got) + 10) // traffic flows on the new host
	}
	n := stopSending()
	e.collect(n)
	for i, m := range e.got {
		pids[m["pid"].(float64)] = true
		if m["i"] != float64(i) || m["count"] != float64(i+1) {
			t.Fatalf("report %d is %v: a message was lost, repeated or reordered", i, m)
		}
	}
	if len(pids) < 3 {
		t.Fatalf("messages were handled by %d processes, want the daemon and two externals", len(pids))
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(t)
}

func TestCrashLoopEndsHeld(t *testing.T) {
	t.Parallel()
	e := newExtEnv(t, `tasks: C: {kind: "Crasher", external: true, config: crash: true, restart: {initial: 0.05, max: 0.1, hold_after: 3}}`+"\n")
	d := e.daemon()
	testenv.WaitFor(t, 20*time.Second, "C held", func() bool { return e.task("C").Status == "held" })
	if tk := e.task("C"); tk.HeldReason != control.HeldRetriesExhausted || !strings.Contains(fmt.Sprint(tk.Conditions), "RetriesExhausted") {
		t.Fatalf("held task %v", tk)
	}
	// mmctl clear gives it another chance: it crashes again (a new process,
	// named in the new last error) and is held again.
	before := e.task("C").LastError
	if _, err := control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.Clear, Task: "C"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "C retried and held again", func() bool {
		tk := e.task("C")
		return tk.Status == "held" && tk.LastError != before
	})
	// A config change gives it another chance.
	os.WriteFile(filepath.Join(e.cfg, "a.cue"), []byte(`tasks: C: {kind: "Crasher", external: true, config: crash: false}`+"\n"), 0o600)
	testenv.WaitFor(t, 20*time.Second, "C running", func() bool {
		tk := e.task("C")
		return tk.Status == "running" && tk.Where == "external"
	})
	control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit, ExitExternals: true}, 5*time.Second)
	d.wait(t)
}

func TestConfigChangeReachesARunningExternal(t *testing.T) {
	t.Parallel()
	e := newExtEnv(t, `tasks: Counter: {kind: "Counter", external: true, config: tag: "one"}`+"\n")
	d := e.daemon()
	e.send(1)
	e.collect(1)
	pid := e.last()["pid"]
	os.WriteFile(filepath.Join(e.cfg, "a.cue"), []byte(`tasks: Counter: {kind: "Counter", external: true, config: tag: "two"}`+"\n"), 0o600)
	testenv.WaitFor(t, 30*time.Second, "the new tag in a report", func() bool {
		e.send(len(e.got) + 1)
		e.collect(len(e.got) + 1)
		return e.last()["tag"] == "two"
	})
	if e.last()["pid"] != pid {
		t.Fatal("the external was restarted for a config change: it should be reconfigured in place")
	}
	control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit, ExitExternals: true}, 5*time.Second)
	d.wait(t)
}

func TestMovingBackInKeepsEachSendersOrder(t *testing.T) {
	t.Parallel()
	cfg := func(ext bool) string {
		return fmt.Sprintf("tasks: Counter: {kind: \"Counter\", external: %v}\ntasks: Pump: config: {on: true, burst: 10}\n", ext)
	}
	e := newExtEnv(t, cfg(false))
	d := e.daemon()
	for flip := range 4 {
		ext := flip%2 == 0
		os.WriteFile(filepath.Join(e.cfg, "a.cue"), []byte(cfg(ext)), 0o600)
		want := map[bool]string{true: "external", false: "internal"}[ext]
		testenv.WaitFor(t, 30*time.Second, "Counter "+want, func() bool {
			tk := e.task("Counter")
			return tk.Where == want && generationsMatch(tk)
		})
		e.collect(len(e.got) + 200)
	}
	last := map[float64]float64{}
	for i, m := range e.got {
		src, seq := m["src"].(float64), m["seq"].(float64)
		if seq <= last[src] {
			t.Fatalf("report %d: seq %v from %v after %v: reordered or repeated", i, seq, src, last[src])
		}
		last[src] = seq
		if m["count"] != float64(i+1) {
			t.Fatalf("report %d has count %v", i, m["count"])
		}
	}
	e.stop(d) // Pump still sends
}

// generationsMatch: the task runs the latest spec it was given.
func generationsMatch(tk control.TaskStatus) bool {
	return tk.Generation != nil && tk.ObservedGeneration != nil && *tk.Generation == *tk.ObservedGeneration
}
