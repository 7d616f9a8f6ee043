package multimodule

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// slowCUE takes seconds to evaluate, with little memory: a nested
// comprehension of 800 x 800 steps under the race detector (about 6 s on
// a CI core), of 1,600 x 1,600 without it (about 5 s; 800 x 800 took
// 1.3 s, close enough to a 1 s load timeout to fail now and then).
var slowCUE = func() string {
	n := 1600
	if testenv.Race {
		n = 800
	}
	return fmt.Sprintf(`import "list"
_slow: [for i in list.Range(0, %d, 1) for j in list.Range(0, %d, 1) if i*j < 0 {i}]
tasks: Slow: {kind: "Counter", disabled: len(_slow) > 0}
`, n, n)
}()

// fillWithJunk fills queue name of dir with messages of mtype 9, which
// nothing of ours sends, until the kernel refuses more; it returns how
// many went in.
func fillWithJunk(t *testing.T, tr *transit.Transit, name string) int {
	t.Helper()
	if _, err := tr.Queue(name); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(tr.Dir(), name))
	if err != nil {
		t.Fatal(err)
	}
	key, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	id, _, errno := unix.Syscall(unix.SYS_MSGGET, uintptr(key), 0, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	msg := append([]byte{9, 0, 0, 0, 0, 0, 0, 0}, []byte(`{"junk":"`+strings.Repeat("j", 200)+`"}`)...)
	n := 0
	for {
		_, _, errno := unix.Syscall6(unix.SYS_MSGSND, id, uintptr(unsafe.Pointer(&msg[0])), uintptr(len(msg)-8), unix.IPC_NOWAIT, 0, 0)
		if errno != 0 {
			return n
		}
		n++
	}
}

// quickStatus asks for status and fails the test if no request is
// answered within three seconds: far less than a stalled owner would take
// (slowCUE's evaluation, many seconds under -race), with room for a busy
// CI machine. A refusal (more than the daemon's rate of
// control requests: the tests poll fast) is an answer too; it is asked
// again after a pause.
func (e *extEnv) quickStatus(what string) *control.StatusReply {
	e.t.Helper()
	for {
		start := time.Now()
		reply, err := control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.Status}, 3*time.Second)
		if err != nil && strings.Contains(err.Error(), "too many control requests") {
			time.Sleep(20 * time.Millisecond) // pacing a poll, not waiting for a result
			continue
		}
		if err != nil || reply.Status == nil {
			e.t.Fatalf("status %s: %v (after %v)", what, err, time.Since(start))
		}
		return reply.Status
	}
}

// A slow config file, a control message of 20,000 operations and a
// doorbell full of junk: status still answers promptly (quickStatus), the slow
// load times out into a config error while the last good config runs,
// the junk is dead-lettered, and SIGTERM stops the daemon within its
// shutdown timeout.
func TestOwnerStaysResponsiveUnderHostileInput(t *testing.T) {
	t.Parallel()
	e := newExtEnv(t, `tasks: Counter: {kind: "Counter"}`+"\n"+`tasks: Router: config: routes: []`+"\n")
	e.args = []string{"--load-timeout", "1s"}
	d := e.daemon()
	testenv.WaitFor(t, 10*time.Second, "Counter running", func() bool { return e.task("Counter").Status == "running" })

	junk := fillWithJunk(t, e.tr, control.DefaultQueue+".doorbell")
	ops := make([]any, 20000)
	expires := float64(time.Now().Add(time.Minute).Unix())
	for i := range ops {
		ops[i] = map[string]any{"type": "reconcile", "expires": expires}
	}
	if err := e.tr.Send(control.DefaultQueue, map[string]any{".multimodule": map[string]any{"control": ops}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.cfg, "slow.cue"), []byte(slowCUE), 0o600); err != nil {
		t.Fatal(err)
	}
	// An apply waits for its load; status does not. Its load starts only
	// once the abandoned one's evaluation ends (CUE cannot be cancelled),
	// many seconds under -race on a busy machine, then times out too.
	applied := make(chan error, 1)
	asked := time.Now()
	go func() {
		_, err := control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.Reconcile}, 2*time.Minute)
		applied <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.quickStatus("during the slow load")
		if strings.Contains(st.Daemon.ConfigError, "timed out") {
			if !strings.Contains(st.Daemon.ConfigError, e.cfg) {
				t.Fatalf("the config error does not name the dir: %s", st.Daemon.ConfigError)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no timeout in the config error: %+v", st.Daemon)
		}
	}
	select {
	case err := <-applied:
		if err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("apply during the slow load: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("apply not answered")
	}
	t.Logf("apply answered %v after it was sent", time.Since(asked))
	if tk := e.task("Counter"); tk.Status != "running" {
		t.Fatalf("the last good config no longer runs: %+v", tk)
	}
	testenv.WaitFor(t, 10*time.Second, "the junk dead-lettered", func() bool {
		return e.quickStatus("with junk").Daemon.DeadLetters >= uint64(junk)
	})
	// Messages reach the task again promptly (rings get through).
	e.send(1)
	testenv.WaitFor(t, 5*time.Second, "Counter handling a message", func() bool {
		tk := e.task("Counter")
		return tk.MessagesIn != nil && *tk.MessagesIn >= 1
	})
	fillWithJunk(t, e.tr, control.DefaultQueue+".doorbell")
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(12 * time.Second):
		t.Fatalf("no exit within 12s of SIGTERM\n%s", d.output())
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start))
}

// An edit made while the first load runs is applied without waiting for
// the 30 s rescan: the watcher is armed before that load.
func TestAnEditDuringStartUpIsApplied(t *testing.T) {
	t.Parallel()
	e := newExtEnv(t, `tasks: Counter: {kind: "Counter", config: tag: "before"}`+"\n"+`tasks: Router: config: routes: []`+"\n")
	if err := os.WriteFile(filepath.Join(e.cfg, "slow.cue"), []byte(slowCUE), 0o600); err != nil {
		t.Fatal(err)
	}
	e.args = []string{"--load-timeout", "60s"} // slow as this machine may be
	began := time.Now()
	d := e.daemon()
	// The first load takes seconds: edit during it.
	time.Sleep(200 * time.Millisecond) // not a wait for a result: just to be inside the first load
	edited := `tasks: Counter: {kind: "Counter", config: tag: "after"}` + "\n" + `tasks: Router: config: routes: []` + "\n"
	if err := os.WriteFile(filepath.Join(e.cfg, "a.cue"), []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	sent := 0
	// Two loads of slowCUE, one after the other: each takes many seconds
	// under -race on a busy machine, and may take up to --load-timeout.
	testenv.WaitFor(t, 2*time.Minute, "the edit applied", func() bool {
		e.drain()
		if sent == len(e.got) { // one message at a time: the queue never fills
			e.send(sent)
			sent++
		}
		for _, m := range e.got {
			if m["tag"] == "after" {
				return true
			}
		}
		return false
	})
	t.Logf("applied %v after the start", time.Since(began))
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(t)
}

// An external that ignores SIGTERM, flipped between external and
// internal, ends held after restart.hold_after killed stops, its process
// group (a child included) gone; status answers throughout.
func TestAnExternalThatWillNotStopEndsHeld(t *testing.T) {
	t.Parallel()
	cfg := func(ext bool) string {
		return fmt.Sprintf(`tasks: Deaf: {kind: "Deaf", external: %v, restart: {initial: 0.05, max: 0.05, hold_after: 2}}`+"\n", ext)
	}
	e := newExtEnv(t, cfg(true))
	e.args = []string{"--stop-grace", "1s"}
	d := e.daemon()
	write := func(ext bool) {
		if err := os.WriteFile(filepath.Join(e.cfg, "a.cue"), []byte(cfg(ext)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var pids []int
	for flip := 0; ; flip++ {
		testenv.WaitFor(t, 15*time.Second, "Deaf running external", func() bool {
			tk := e.task("Deaf")
			return tk.Status == "running" && tk.Where == "external" || tk.Status == "held"
		})
		if e.task("Deaf").Status == "held" {
			break
		}
		if flip > 3 {
			t.Fatalf("not held after %d flips: %+v", flip, e.task("Deaf"))
		}
		// Running as the daemon sees it is spawned: the process ignores
		// SIGTERM only once its task has started (and with it the child).
		// A stop before that is no failed stop.
		testenv.WaitFor(t, 15*time.Second, "Deaf's process ignoring SIGTERM, its child started", func() bool {
			p := e.externalPids()
			return len(p) > 0 && anyChildOf(p)
		})
		pids = append(pids, e.externalPids()...)
		write(false)
		testenv.WaitFor(t, 15*time.Second, "Deaf internal or held", func() bool {
			e.quickStatus("while an external will not stop")
			tk := e.task("Deaf")
			return tk.Status == "running" && tk.Where == "internal" || tk.Status == "held"
		})
		if e.task("Deaf").Status == "held" {
			break
		}
		write(true)
	}
	tk := e.task("Deaf")
	if !strings.Contains(tk.HoldMessage, "stops failed") {
		t.Fatalf("held for another reason: %+v", tk)
	}
	testenv.WaitFor(t, 5*time.Second, "no process of the test left but the daemon", func() bool {
		return len(e.externalPids()) == 0 && !anyChildOf(pids)
	})
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(t)
}

// anyChildOf reports whether a process has one of pids as its parent.
func anyChildOf(pids []int) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		for _, pid := range pids {
			if ppid == pid {
				return true
			}
		}
	}
	return false
}

// A SIGSTOPped external is shown stalled with an alert, and an ok alert
// follows when it continues.
func TestAStoppedExternalIsAlerted(t *testing.T) {
	t.Parallel()
	e := newExtEnv(t, counterExternal)
	e.args = []string{"-o", "alert:Alerts"}
	alerts, err := e.tr.Queue("Alerts")
	if err != nil {
		t.Fatal(err)
	}
	d := e.daemon()
	testenv.WaitFor(t, 10*time.Second, "Counter running", func() bool { return e.task("Counter").Status == "running" })
	pid := e.task("Counter").Pid
	alerted := func(msg string) func() bool {
		return func() bool {
			for {
				dl, err := alerts.Receive(false)
				if err != nil {
					return false
				}
				for _, m := range dl.Msgs {
					if m["msg"] == msg && m["task"] == "Counter" {
						return true
					}
				}
			}
		}
	}
	syscall.Kill(pid, syscall.SIGSTOP)
	defer syscall.Kill(pid, syscall.SIGCONT)
	testenv.WaitFor(t, 10*time.Second, "a stalled alert", alerted("external task stalled"))
	if tk := e.task("Counter"); tk.Status != "stalled" {
		t.Fatalf("status of a stopped external: %+v", tk)
	}
	syscall.Kill(pid, syscall.SIGCONT)
	testenv.WaitFor(t, 10*time.Second, "an ok alert", alerted("external task responding again"))
	if tk := e.task("Counter"); tk.Status != "running" {
		t.Fatalf("status after SIGCONT: %+v", tk)
	}
	control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit, ExitExternals: true}, 5*time.Second)
	d.wait(t)
}
