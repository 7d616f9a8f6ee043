package multimodule

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
)

// mmctlIn runs mmctl against e's daemon and returns its output and exit
// status.
func (e *extEnv) mmctl(bin string, argv ...string) (string, int) {
	e.t.Helper()
	cmd := exec.Command(bin, append([]string{"-T", e.tr.Dir()}, argv...)...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("mmctl %v: %v", argv, err)
	}
	return string(out), 0
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

func TestDiffIsCleanAgainstTheRunningConfigAndNamesOneEdit(t *testing.T) {
	t.Parallel()
	mmctl := buildCmd(t, "./cmd/mmctl")
	const cfg = `
tasks: Counter: {kind: "Counter", external: true}
tasks: Inside: {kind: "Counter"}
tasks: Beacon: {kind: "Beacon", config: every_ms: 1000}
tasks: Router: config: routes: []
`
	e := newExtEnv(t, cfg)
	d := e.daemon()
	testenv.WaitFor(t, 10*time.Second, "every task applied", func() bool {
		st := e.status()
		for _, tk := range st.Tasks {
			if tk.Status != "running" {
				return false
			}
		}
		return len(st.Tasks) == 4 && len(st.Plan) == 0
	})
	if out, code := e.mmctl(mmctl, "diff", "-c", e.cfg); code != 0 || out != "" {
		t.Fatalf("diff against the running config: exit %d\n%s", code, out)
	}
	// Another dir with one edit: exactly that task changes.
	edited := testenv.WriteFiles(t, map[string]string{"a.cue": strings.Replace(cfg, "every_ms: 1000", "every_ms: 2000", 1)})
	out, code := e.mmctl(mmctl, "diff", "-c", edited)
	// Exactly that task changes, and the diff of its spec names the field.
	if code != 1 || lines(out)[0] != "~ reconfigure Beacon" || strings.Count(out, "\n~ ")+strings.Count(out, "\n+ ") > 0 ||
		!strings.Contains(out, "\n    -    \"every_ms\": 1000\n    +    \"every_ms\": 2000\n") {
		t.Fatalf("diff after one edit: exit %d\n%s", code, out)
	}
	control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit, ExitExternals: true}, 5*time.Second)
	d.wait(t)
}

// The daemon's own plan (status), `mmctl diff` and `mmctl apply
// --dry-run` show the same plan for the same dir: here with an external
// task, a held one and a removal under way.
func TestDaemonDiffAndDryRunShowTheSamePlan(t *testing.T) {
	t.Parallel()
	mmctl := buildCmd(t, "./cmd/mmctl")
	gate := filepath.Join(t.TempDir(), "gate")
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(gate)
	base := `
tasks: Counter: {kind: "Counter", external: true}
tasks: Crash: {kind: "Crasher", external: true, config: crash: true, restart: {initial: 0.05, max: 0.05, hold_after: 1}}
tasks: Router: config: routes: []
`
	e := newExtEnv(t, base+`tasks: Gate: {kind: "Gate", config: gate: "`+gate+`"}`+"\n")
	d := e.daemon()
	testenv.WaitFor(t, 10*time.Second, "Crash held, the rest running", func() bool {
		st := e.status()
		return len(st.Tasks) == 4 && e.task("Crash").Status == "held" && e.task("Counter").Status == "running" &&
			e.task("Gate").Status == "running"
	})
	// Gate takes a message and keeps it until the gate file goes: its
	// removal from the config stays under way meanwhile.
	if err := e.tr.Send("Gate", map[string]any{"hold": true}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "Gate handling its message", func() bool {
		tk := e.task("Gate")
		return tk.MessagesIn != nil && *tk.MessagesIn == 0 && tk.BusyS != nil && *tk.BusyS > 0
	})
	if err := os.WriteFile(filepath.Join(e.cfg, "a.cue"), []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "Gate stopping", func() bool { return e.task("Gate").Status == "stopping" })

	var daemonPlan []string
	for _, a := range e.status().Plan {
		daemonPlan = append(daemonPlan, a.Action)
	}
	diff, code := e.mmctl(mmctl, "diff", "-c", e.cfg)
	if code != 1 {
		t.Fatalf("diff exit %d\n%s", code, diff)
	}
	dry, code := e.mmctl(mmctl, "apply", "--dry-run")
	if code != 0 {
		t.Fatalf("apply --dry-run exit %d\n%s", code, dry)
	}
	want := []string{"- stop Gate (removed from the config)", "! held Crash (retries exhausted: exited unexpectedly: process "}
	for name, plan := range map[string][]string{"daemon": daemonPlan, "diff": lines(diff), "dry-run": lines(dry)} {
		if len(plan) != 2 || plan[0] != want[0] || !strings.HasPrefix(plan[1], want[1]) {
			t.Fatalf("%s plan %q, want %q...", name, plan, want)
		}
	}
	if !reflect.DeepEqual(daemonPlan, lines(diff)) || !reflect.DeepEqual(daemonPlan, lines(dry)) {
		t.Fatalf("plans differ:\ndaemon  %q\ndiff    %q\ndry-run %q", daemonPlan, lines(diff), lines(dry))
	}
	os.Remove(gate)
	testenv.WaitFor(t, 10*time.Second, "Gate gone", func() bool { return e.task("Gate").Name == "" })
	control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit, ExitExternals: true}, 5*time.Second)
	d.wait(t)
}

// A stateless task's timer fires once, in the daemon, however many
// external processes run; a message an external sends it is still
// handled in that external's process.
func TestStatelessTimersFireOnceWithExternalsRunning(t *testing.T) {
	t.Parallel()
	e := newExtEnv(t, `
tasks: C1: {kind: "Counter", external: true}
tasks: C2: {kind: "Counter", external: true}
tasks: Beacon: {kind: "Beacon", config: every_ms: 20}
`)
	d := e.daemon()
	testenv.WaitFor(t, 10*time.Second, "both externals running", func() bool {
		return e.task("C1").Status == "running" && e.task("C2").Status == "running"
	})
	e.got = nil
	e.collect(40) // two externals, each with its own Beacon, run for a while
	beats := map[float64]int{}
	pids := map[float64]int{}
	for _, m := range e.got {
		if b, ok := m["beat"].(float64); ok {
			beats[b]++
			pids[m["pid"].(float64)]++
		}
	}
	if len(pids) != 1 || pids[float64(d.cmd.Process.Pid)] == 0 {
		t.Fatalf("beats by pid %v: want all from the daemon, pid %d", pids, d.cmd.Process.Pid)
	}
	for b, n := range beats {
		if n != 1 {
			t.Fatalf("beat %v came %d times", b, n)
		}
	}
	c1 := float64(e.task("C1").Pid)
	if err := e.tr.Send("C1", map[string]any{"i": 7.0, "via": "Beacon"}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "Beacon's echo", func() bool {
		e.drain()
		for _, m := range e.got {
			if m["echo"] == 7.0 {
				if m["pid"] != c1 {
					t.Fatalf("echo from pid %v, want C1's process %v", m["pid"], c1)
				}
				return true
			}
		}
		return false
	})
	control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit, ExitExternals: true}, 5*time.Second)
	d.wait(t)
}

// Stopping an external that ignores SIGTERM runs beside the daemon's
// owner: status answers at once during the stop's grace.
func TestStatusAnswersWhileAnExternalIgnoresSIGTERM(t *testing.T) {
	t.Parallel()
	e := newExtEnv(t, `tasks: Hog: {kind: "Hog", external: true}`+"\n")
	e.args = []string{"-o", "alert:Alerts"}
	alerts, err := e.tr.Queue("Alerts")
	if err != nil {
		t.Fatal(err)
	}
	d := e.daemon()
	testenv.WaitFor(t, 10*time.Second, "Hog running", func() bool { return e.task("Hog").Status == "running" })
	pid := e.task("Hog").Pid
	// Its handler blocks for a minute: the process's drain after SIGTERM
	// cannot finish, so it outlives the stop's grace.
	if err := e.tr.Send("Hog", map[string]any{"alert": "blocking", "block_s": 60.0}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "Hog's handler blocking", func() bool {
		dl, err := alerts.Receive(false)
		return err == nil && len(dl.Msgs) > 0 && dl.Msgs[0]["msg"] == "blocking"
	})
	if err := os.WriteFile(filepath.Join(e.cfg, "a.cue"), []byte(`tasks: Hog: {kind: "Hog", external: true, disabled: true}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "Hog stopping", func() bool { return e.task("Hog").Status == "stopping" })
	for range 10 {
		start := time.Now()
		if _, err := control.Request(e.tr, control.DefaultQueue, control.Op{Type: control.Status}, time.Second); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 200*time.Millisecond {
			t.Fatalf("status took %v while an external was stopping", took)
		}
	}
	if e.task("Hog").Status != "stopping" {
		t.Fatalf("Hog no longer stopping: %+v", e.task("Hog"))
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("Hog's process %d already gone: %v", pid, err)
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
}
