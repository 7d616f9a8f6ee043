package multimodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/runtime/external"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/transit"
)

// monEnv is an extEnv whose daemon sends its alerts to the queue Alerts.
type monEnv struct {
	*extEnv
	alertQ *transit.Queue
	alerts []map[string]any
}

func newMonEnv(t *testing.T, config string) *monEnv {
	t.Helper()
	e := &monEnv{extEnv: newExtEnv(t, config)}
	var err error
	if e.alertQ, err = e.tr.Queue("Alerts"); err != nil {
		t.Fatal(err)
	}
	e.oob("")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("alerts: %v", e.alerts)
		}
	})
	return e
}

// oob sets the daemon's -o: alerts to the queue Alerts, and more.
func (e *monEnv) oob(more string) { e.args = []string{"-o", "alert:Alerts," + more} }

// waitAlert waits for an alert that match accepts and returns it.
func (e *monEnv) waitAlert(what string, match func(a map[string]any) bool) map[string]any {
	e.t.Helper()
	var found map[string]any
	testenv.WaitFor(e.t, 20*time.Second, what, func() bool {
		for {
			d, err := e.alertQ.Receive(false)
			if err != nil || len(d.Msgs) == 0 {
				break
			}
			e.alerts = append(e.alerts, d.Msgs...)
		}
		for _, a := range e.alerts {
			if match(a) {
				found = a
				return true
			}
		}
		return false
	})
	return found
}

// levelAlert matches an alert on a task's metric reaching level.
func levelAlert(task, metric, level string) func(map[string]any) bool {
	return func(a map[string]any) bool { return a["task"] == task && a["metric"] == metric && a["level"] == level }
}

func (e *monEnv) runningPid(task string) float64 {
	e.t.Helper()
	var pid float64
	testenv.WaitFor(e.t, 20*time.Second, task+" running", func() bool {
		tk := e.task(task)
		pid = float64(tk.Pid)
		return tk.Status == "running" && pid != 0
	})
	return pid
}

func (e *monEnv) sendTo(task string, m map[string]any) {
	e.t.Helper()
	if err := e.tr.Send(task, m); err != nil {
		e.t.Fatal(err)
	}
}

func (e *monEnv) exit(d *proc) {
	e.t.Helper()
	control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit, ExitExternals: true}, 5*time.Second)
	if err := d.wait(e.t); err != nil {
		e.t.Fatalf("daemon exit: %v\n%s", err, d.output())
	}
}

func TestMemoryFailsafeKillsAndHoldsAcrossRestartsUntilCleared(t *testing.T) {
	t.Parallel()
	e := newMonEnv(t, `
tasks: H: {kind: "Hog", external: true, limits: memory: {warn: "100MiB", failsafe: "200MiB"}}
daemon: {sample_every: 0.1, failsafe_grace: 1}
`)
	d := e.daemon()
	pid := e.runningPid("H")
	e.sendTo("H", map[string]any{"leak_mb": 300.0})
	a := e.waitAlert("a memory failsafe alert", levelAlert("H", "memory", "failsafe"))
	if a["threshold"] != float64(200<<20) || a["value"].(float64) < 200<<20 {
		t.Fatalf("alert %v", a)
	}
	testenv.WaitFor(t, 10*time.Second, "the leaking process gone", func() bool {
		_, err := external.StartTime(int(pid))
		return err != nil
	})
	held := func() {
		t.Helper()
		testenv.WaitFor(t, 10*time.Second, "H held by the failsafe", func() bool {
			tk := e.task("H")
			return tk.Status == "held" && tk.HeldReason == control.HeldFailsafe && strings.Contains(fmt.Sprint(tk.Conditions), "Failsafe")
		})
		if pids := e.externalPids(); len(pids) != 0 {
			t.Fatalf("a held task runs: %v", pids)
		}
	}
	held()

	// It stays down across a restart of the daemon.
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.output())
	}
	d = e.daemon()
	held()

	// mmctl clear brings it back, in a new process.
	if _, err := control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.Clear, Task: "H"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if again := e.runningPid("H"); again == pid {
		t.Fatalf("same pid %v after clear", again)
	}
	e.exit(d)
}

func TestClearDuringTheFailsafeGraceStartsItAgain(t *testing.T) {
	t.Parallel()
	e := newMonEnv(t, `
tasks: H: {kind: "Hog", external: true, limits: memory: failsafe: "200MiB"}
daemon: {sample_every: 0.1, failsafe_grace: 2}
`)
	d := e.daemon()
	pid := e.runningPid("H")
	// The handler then blocks: SIGTERM cannot end the process, SIGKILL
	// does after the grace. It is cleared before that.
	e.sendTo("H", map[string]any{"leak_mb": 300.0, "block_s": 60.0})
	e.waitAlert("a memory failsafe alert", levelAlert("H", "memory", "failsafe"))
	if _, err := control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.Clear, Task: "H"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := external.StartTime(int(pid)); err != nil {
		t.Fatal("the process ended before the grace: the test shows nothing")
	}
	if again := e.runningPid("H"); again == pid {
		t.Fatalf("same pid %v", again)
	}
	if _, err := external.StartTime(int(pid)); err == nil {
		t.Fatalf("the failsafed process %v still runs", pid)
	}
	// The message it died on was never handled: at least once, the new
	// process gets it again (and blocks on it). The daemon leaves it
	// running on SIGTERM; the test's cleanup kills it.
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.output())
	}
}

func TestSpinningTaskAlertsCPUThenOKReadWithMmctl(t *testing.T) {
	t.Parallel()
	mmctl := buildCmd(t, "./cmd/mmctl")
	e := newMonEnv(t, `
tasks: H: {kind: "Hog", external: true, limits: cpu: warn: 0.1}
daemon: sample_every: 0.1
`)
	d := e.daemon()
	e.runningPid("H")
	// A spinning goroutine gets what share of a core the machine gives it:
	// on a loaded 2-core machine a 2 s spin was seen to use 0.1 s of CPU,
	// below any threshold. So the threshold is low (an idle H uses about
	// 0.01), and H spins again each second until the warning is read; then
	// it idles and the level falls back to ok.
	var spun time.Time
	spin := func() {
		if time.Since(spun) > time.Second {
			e.sendTo("H", map[string]any{"spin_s": 2.0})
			spun = time.Now()
		}
	}
	spin()
	// Read the alerts as an operator would: mmctl recv on the alert queue.
	var got []map[string]any
	has := func(level string) bool {
		for _, a := range got {
			if levelAlert("H", "cpu", level)(a) {
				return true
			}
		}
		return false
	}
	testenv.WaitFor(t, 30*time.Second, "cpu warn, then ok, from mmctl recv Alerts", func() bool {
		// It times out (exit 1) when no alert came: only its output counts.
		out, _ := exec.Command(mmctl, "-T", e.tr.Dir(), "recv", "Alerts", "--timeout", "200ms").Output()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var a map[string]any
			if json.Unmarshal([]byte(line), &a) == nil {
				got = append(got, a)
			}
		}
		if !has("warn") {
			spin()
		}
		return has("warn") && has("ok")
	})
	for _, a := range got {
		if a["task"] == "H" && a["metric"] == "cpu" && a["level"] == "warn" && (a["value"].(float64) < 0.1 || a["threshold"] != 0.1) {
			t.Fatalf("cpu alert %v", a)
		}
	}
	e.exit(d)
}

func TestOpenFilesAlertAndAnExternalsAlertReachTheDaemonsQueue(t *testing.T) {
	t.Parallel()
	e := newMonEnv(t, `
tasks: H: {kind: "Hog", external: true, limits: fds: warn: 40}
daemon: sample_every: 0.1
`)
	d := e.daemon()
	pid := e.runningPid("H")
	e.sendTo("H", map[string]any{"open": 60.0})
	if a := e.waitAlert("an fds alert", levelAlert("H", "fds", "warn")); a["value"].(float64) < 60 {
		t.Fatalf("fds alert %v", a)
	}
	// A record without the task's token is refused: the forged one, sent
	// first on the same queue, never comes out.
	e.sendTo(control.OOBQueue(control.DefaultQueue), map[string]any{control.FromKey: "H", control.TokenKey: "guess", runtime.OOBMarker: true,
		"channel": "alert", "msg": "forged"})
	// What the task says on its own alert channel, in its own process,
	// goes out on the daemon's alert channel.
	e.sendTo("H", map[string]any{"alert": "hello from H"})
	a := e.waitAlert("the task's own alert", func(a map[string]any) bool { return a["msg"] == "hello from H" })
	if a["task"] != "H" || a["pid"] != pid || a["channel"] != "alert" {
		t.Fatalf("forwarded alert %v (external pid %v)", a, pid)
	}
	for _, a := range e.alerts {
		if a["msg"] == "forged" {
			t.Fatalf("a forged record came out: %v", a)
		}
	}
	e.exit(d)
}

func TestFilledQueueAlertsAndIsNotFailsafed(t *testing.T) {
	t.Parallel()
	gate := filepath.Join(t.TempDir(), "gate")
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e := newMonEnv(t, fmt.Sprintf(`
tasks: G: {kind: "Gate", config: gate: %q}
daemon: sample_every: 0.1
`, gate))
	d := e.daemon()
	e.runningPid("G")
	q, err := e.tr.Queue("G") // as a sender from outside, it makes the queue
	if err != nil {
		t.Fatal(err)
	}
	// The handler waits at the gate: what it was handed stays in its queue
	// until handled, so the queue fills.
	pad := strings.Repeat("x", 1000)
	for i := 0; ; i++ {
		st, err := q.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Fill > 0.85 {
			break
		}
		if i > 100 {
			t.Fatalf("queue not filling: %+v", st)
		}
		e.sendTo("G", map[string]any{"i": float64(i), "pad": pad})
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("status %v\ndaemon:\n%s", e.task("G"), d.output())
		}
	})
	a := e.waitAlert("a queue_fill severe alert", levelAlert("G", "queue_fill", "severe"))
	if a["threshold"] != 0.8 {
		t.Fatalf("queue alert %v", a)
	}
	if tk := e.task("G"); tk.Status != "running" || strings.Contains(fmt.Sprint(tk.Conditions), "Stalled True") {
		t.Fatalf("a full queue stopped its task: %v", tk)
	}
	os.Remove(gate)
	e.waitAlert("queue_fill back to ok", levelAlert("G", "queue_fill", "ok"))
	e.exit(d)
}

func TestFailingHandlerRaisesAFailureAlert(t *testing.T) {
	t.Parallel()
	e := newMonEnv(t, `
tasks: Counter: {kind: "Counter", config: fail: true, limits: failures: {warn: 10, severe: 1e6}}
tasks: Pump: {kind: "Pump", config: on: true}
daemon: sample_every: 0.1
`)
	d := e.daemon()
	if a := e.waitAlert("a failures alert", levelAlert("Counter", "failures", "warn")); a["value"].(float64) < 10 {
		t.Fatalf("failures alert %v", a)
	}
	e.exit(d)
}

func TestInternalFailsafeStopsReceivingAndLosesNothing(t *testing.T) {
	t.Parallel()
	config := func(limit float64) string {
		return fmt.Sprintf(`
tasks: Counter: {kind: "Counter", intervals: save_state: 0.05, limits: cpu: failsafe: %v}
daemon: sample_every: 0.1
`, limit)
	}
	e := newMonEnv(t, config(0.5))
	d := e.daemon()
	e.runningPid("Counter")
	// Ten messages that each keep the handler busy for 150 ms.
	for i := 1; i <= 10; i++ {
		e.sendTo("Counter", map[string]any{"i": float64(i), "spin_ms": 150.0})
	}
	e.waitAlert("a cpu failsafe alert", levelAlert("Counter", "cpu", "failsafe"))
	testenv.WaitFor(t, 20*time.Second, "Counter held", func() bool {
		tk := e.task("Counter")
		return tk.Status == "held" && tk.HeldReason == control.HeldFailsafe && strings.Contains(fmt.Sprint(tk.Conditions), "Failsafe")
	})
	// Held, it takes nothing: what is sent now waits in its queue.
	for i := 11; i <= 50; i++ {
		e.send(i)
	}
	q, err := e.tr.Lookup("Counter")
	if err != nil {
		t.Fatal(err)
	}
	// The ten it had taken leave the queue once handled; the rest wait.
	testenv.WaitFor(t, 10*time.Second, "40 messages waiting in the held task's queue", func() bool {
		st, err := q.Stats()
		return err == nil && st.Messages == 40
	})
	// A change of its config releases it: every message is handled once.
	os.WriteFile(filepath.Join(e.cfg, "a.cue"), []byte(config(5)), 0o600)
	e.collect(50)
	seen := map[float64]int{}
	for _, r := range e.got {
		seen[r["i"].(float64)]++
	}
	for i := 1; i <= 50; i++ {
		if seen[float64(i)] != 1 {
			t.Fatalf("message %d handled %d times; reports %v", i, seen[float64(i)], e.got)
		}
	}
	if c := e.last()["count"]; c != 50.0 {
		t.Fatalf("state count %v after 50 messages", c)
	}
	e.exit(d)
}

func TestMetricsEndpointServesEveryMetricPerTask(t *testing.T) {
	t.Parallel()
	e := newMonEnv(t, `
tasks: Counter: {kind: "Counter"}
tasks: H: {kind: "Hog", external: true}
daemon: sample_every: 0.1
`)
	e.oob("log:2")
	e.args = append(e.args, "--metrics-addr", "127.0.0.1:0")
	d := e.daemon()
	url := metricsURL(t, d)
	e.runningPid("H")
	e.send(1) // Counter handles a message, so it has counted something
	want := []string{
		`multimodule_task_up{task="Counter",where="internal"} 1`,
		`multimodule_task_up{task="H",where="external"} 1`,
		`multimodule_task_level{metric="cpu",task="H"} 0`,
		`multimodule_daemon_memory_bytes `,
		`go_goroutines `,
	}
	for _, m := range []string{"cpu_cores", "queue_fill_ratio", "mailbox_messages", "restarts_recent",
		"failures_per_second", "messages_in_per_second", "messages_out_per_second"} {
		want = append(want, `multimodule_task_`+m+`{task="Counter",where="internal"} `,
			`multimodule_task_`+m+`{task="H",where="external"} `)
	}
	for _, m := range []string{"memory_bytes", "read_bytes_per_second", "write_bytes_per_second", "open_fds", "threads"} {
		want = append(want, `multimodule_task_`+m+`{task="H",where="external"} `)
	}
	want = append(want, `multimodule_task_messages_in_total{task="Counter",where="internal"} 1`,
		`multimodule_task_ready{task="Counter"} 1`, `multimodule_task_ready{task="H"} 1`,
		"multimodule_config_generation 1\n", "multimodule_reloads_total 0\n", "multimodule_config_load_errors_total 0\n")
	var body string
	scrapeFor := func(what string, want []string) {
		t.Helper()
		testenv.WaitFor(t, 20*time.Second, what, func() bool {
			e.drain()
			resp, err := http.Get(url)
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			for _, w := range want {
				if !strings.Contains(body, w) {
					return false
				}
			}
			return true
		})
	}
	scrapeFor("every series", want)
	// A broken edit counts a load error; a good one a reload, and the
	// generation moves on; a task that cannot start is not ready.
	cfg := filepath.Join(e.cfg, "a.cue")
	if err := os.WriteFile(cfg, []byte("tasks: {\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	scrapeFor("a load error", []string{"multimodule_config_load_errors_total 1\n"})
	if err := os.WriteFile(cfg, []byte(`
tasks: Counter: {kind: "Counter", config: tag: "x"}
tasks: H: {kind: "Hog", external: true}
tasks: C: {kind: "Crasher", external: true, config: crash: true, restart: hold_after: 1}
daemon: sample_every: 0.1
`), 0o600); err != nil {
		t.Fatal(err)
	}
	scrapeFor("a reload", []string{"multimodule_reloads_total 1\n", "multimodule_config_generation 2\n",
		`multimodule_task_ready{task="C"} 0`, `multimodule_task_ready{task="Counter"} 1`})
	e.exit(d)
}

func TestUnreadableHeldFileHoldsNothing(t *testing.T) {
	t.Parallel()
	e := newMonEnv(t, counterExternal)
	if err := os.WriteFile(filepath.Join(e.state, "held.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := e.daemon() // errors go to stderr, which the test reads
	e.runningPid("Counter")
	testenv.WaitFor(t, 10*time.Second, "an error about held.json", func() bool {
		return strings.Contains(d.output(), "held tasks unreadable")
	})
	e.exit(d)
}
