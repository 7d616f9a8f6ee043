package multimodule

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/multimodule/multimodule/internal/testenv"
)

// mmctlCode runs the mmctl binary against a transit dir: stdout, stderr
// and the exit status.
func mmctlCode(t *testing.T, bin, dir string, argv ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-T", dir}, argv...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("mmctl %v: %v", argv, err)
	}
	return out.String(), errb.String(), 0
}

// A failing edit: status shows the task held and still running its last
// good spec, exits 1 and says why; apply reports the failure with exit 1
// (not "no changes"); status TASK shows it whole; a broken config dir
// makes status exit 1 too.
func TestStatusHeldRowExitCodesAndApplyReportsAFailingEdit(t *testing.T) {
	t.Parallel()
	mmctl := buildCmd(t, "./cmd/mmctl")
	const good = `tasks: F: {kind: "Failing", config: ok: true, restart: {initial: 60, max: 60, hold_after: 2}}` + "\n"
	g := startGitops(t, map[string]string{"f.cue": good, "p.cue": probeFile("P", "1")})
	testenv.WaitFor(t, 10*time.Second, "F and P running", func() bool {
		return g.task(t, "F").Status == "running" && g.task(t, "P").Status == "running"
	})
	out, errs, code := mmctlCode(t, mmctl, g.transit, "status")
	if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "Running") {
		t.Fatalf("status of a healthy daemon: exit %d\n%s%s", code, out, errs)
	}

	// The edit fails; the watcher's attempt waits a minute before its
	// retry, and apply tries it now and says it failed.
	os.WriteFile(filepath.Join(g.cfg, "f.cue"), []byte(strings.Replace(good, "ok: true", "ok: false", 1)), 0o600)
	testenv.WaitFor(t, 10*time.Second, "F's edit failing", func() bool {
		tk := g.task(t, "F")
		return tk.FailuresInARow != nil && *tk.FailuresInARow == 1
	})
	out, _, code = mmctlCode(t, mmctl, g.transit, "apply")
	if code != 1 || !strings.Contains(out, "~ reconfigure F: FAILED: ") || !strings.Contains(out, "told to fail") {
		t.Fatalf("apply after a failing edit: exit %d\n%s", code, out)
	}
	out, errs, code = mmctlCode(t, mmctl, g.transit, "status")
	var row string
	for _, l := range strings.Split(out, "\n") {
		if utf8.RuneCountInString(l) > 100 {
			t.Errorf("status line wider than 100: %q", l)
		}
		if strings.HasPrefix(l, "F ") {
			row = l
		}
	}
	f := strings.Fields(row)
	if code != 1 || len(f) < 6 || f[1] != "internal" || f[2] != strings.TrimSpace(f[2]) || f[2] == "-" ||
		!strings.Contains(row, "Held: retries") || !strings.Contains(out, "F: held, still running its last applied spec") ||
		!strings.Contains(errs, "held: F") {
		t.Fatalf("status with F held: exit %d\n%s%s", code, out, errs)
	}
	out, _, code = mmctlCode(t, mmctl, g.transit, "status", "F")
	for _, want := range []string{"Status:      Held: retries", "Why:", "Conditions:", "Stalled", "RetriesExhausted", "Generation:  1 applied of 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("status F lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("status F of a held task: exit %d", code)
	}
	if out, _, code := mmctlCode(t, mmctl, g.transit, "status", "P"); code != 0 || !strings.Contains(out, "Status:      Running") {
		t.Errorf("status P: exit %d\n%s", code, out)
	}
	if _, errs, code := mmctlCode(t, mmctl, g.transit, "status", "Nope"); code != 1 || !strings.Contains(errs, `no task "Nope"`) {
		t.Errorf("status of no such task: exit %d: %s", code, errs)
	}
	// A second apply still says F is held, and fails.
	out, _, code = mmctlCode(t, mmctl, g.transit, "apply")
	if code != 1 || !strings.Contains(out, "! held F") || !strings.Contains(out, "FAILED: held, not applied") {
		t.Fatalf("apply with F held: exit %d\n%s", code, out)
	}

	// A config dir that does not load: exit 1 and the error.
	os.WriteFile(filepath.Join(g.cfg, "f.cue"), []byte(good), 0o600)
	testenv.WaitFor(t, 10*time.Second, "F released and applied", func() bool { return g.task(t, "F").HeldReason == "" })
	os.WriteFile(filepath.Join(g.cfg, "broken.cue"), []byte("tasks: X: {\n"), 0o600)
	testenv.WaitFor(t, 10*time.Second, "the config error", func() bool { return g.status(t).Daemon.ConfigError != "" })
	out, errs, code = mmctlCode(t, mmctl, g.transit, "status")
	if code != 1 || !strings.Contains(out, "broken.cue") || !strings.Contains(errs, "the config dir does not load") {
		t.Fatalf("status with a broken config dir: exit %d\n%s%s", code, out, errs)
	}
	os.Remove(filepath.Join(g.cfg, "broken.cue"))
	testenv.WaitFor(t, 10*time.Second, "the config loads again", func() bool { return g.status(t).Daemon.ConfigError == "" })

	// diff shows which fields change, as a unified diff of the spec.
	edited := testenv.WriteFiles(t, map[string]string{"f.cue": good, "p.cue": probeFile("P", "2")})
	out, _, code = mmctlCode(t, mmctl, g.transit, "diff", "-c", edited)
	want := "~ reconfigure P\n    --- running/P\n    +++ config/P\n"
	if code != 1 || !strings.HasPrefix(out, want) || !strings.Contains(out, "\n    -    \"v\": \"1\"\n    +    \"v\": \"2\"\n") {
		t.Fatalf("diff of one field: exit %d\n%s", code, out)
	}
}

// --watch redraws until interrupted and then exits 0.
func TestStatusWatchRedrawsUntilInterrupted(t *testing.T) {
	t.Parallel()
	mmctl := buildCmd(t, "./cmd/mmctl")
	g := startGitops(t, map[string]string{"p.cue": probeFile("P", "1")})
	testenv.WaitFor(t, 10*time.Second, "P running", func() bool { return g.task(t, "P").Status == "running" })
	cmd := exec.Command(mmctl, "-T", g.transit, "status", "--watch", "--interval", "100ms")
	var out testenv.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	testenv.WaitFor(t, 10*time.Second, "three frames", func() bool { return strings.Count(out.String(), "NAME ") >= 3 })
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watch after SIGINT: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "P ") || !strings.Contains(out.String(), "Running") {
		t.Fatalf("watch frames:\n%s", out.String())
	}
}

// mmctl restart, stop and start on an external task, shown by status;
// logs -f; gc removes only the queue and files of a task gone from the
// config; recv -f follows a queue.
func TestOneOffActionsLogsGCAndRecvFollow(t *testing.T) {
	t.Parallel()
	mmctl := buildCmd(t, "./cmd/mmctl")
	base := `
tasks: Counter: {kind: "Counter", external: true}
tasks: Router: config: routes: []
`
	e := newExtEnv(t, base+"tasks: Gone: {kind: \"Counter\"}\n")
	d := e.daemon()
	dir := e.tr.Dir()
	testenv.WaitFor(t, 10*time.Second, "every task running", func() bool {
		return e.task("Counter").Status == "running" && e.task("Gone").Status == "running" && e.task("Counter").Pid != 0
	})
	e.tr.Send("Gone", map[string]any{"i": 1.0}) // a state file for Gone
	testenv.WaitFor(t, 10*time.Second, "Gone's state saved", func() bool {
		_, err := os.Stat(filepath.Join(e.state, "tasks", "Gone.db"))
		return err == nil
	})
	pid := e.task("Counter").Pid

	// restart: a new process, not counted as a restart, shown as done.
	if out, errs, code := mmctlCode(t, mmctl, dir, "restart", "Counter"); code != 0 || !strings.Contains(out, "Counter: restarting") {
		t.Fatalf("restart: exit %d: %s%s", code, out, errs)
	}
	testenv.WaitFor(t, 20*time.Second, "Counter restarted", func() bool {
		tk := e.task("Counter")
		return tk.Status == "running" && tk.Pid != 0 && tk.Pid != pid && strings.HasSuffix(tk.Action, "(done)")
	})
	if tk := e.task("Counter"); !strings.HasPrefix(tk.Action, "restart at ") || tk.Restarts == nil || *tk.Restarts != 0 {
		t.Fatalf("after mmctl restart: action %q restarts %v", tk.Action, tk.Restarts)
	}
	// stop: stopped until start, and status is still healthy (exit 0).
	mmctlCode(t, mmctl, dir, "stop", "Counter")
	testenv.WaitFor(t, 20*time.Second, "Counter stopped", func() bool { return !e.task("Counter").Running })
	out, errs, code := mmctlCode(t, mmctl, dir, "status")
	if code != 0 || !strings.Contains(out, "Stopped (mmctl)") {
		t.Fatalf("status with Counter stopped by mmctl: exit %d\n%s%s", code, out, errs)
	}
	if _, errs, code := mmctlCode(t, mmctl, dir, "restart", "Counter"); code != 1 || !strings.Contains(errs, "does not run") {
		t.Fatalf("restart of a stopped task: exit %d: %s", code, errs)
	}
	mmctlCode(t, mmctl, dir, "start", "Counter")
	testenv.WaitFor(t, 20*time.Second, "Counter started", func() bool { return e.task("Counter").Status == "running" })

	// logs: the file, then what is appended to it.
	logPath := filepath.Join(e.state, "external", "Counter.log")
	logs := exec.Command(mmctl, "-T", dir, "logs", "-f", "--interval", "20ms", "Counter")
	var logOut testenv.Buffer
	logs.Stdout = &logOut
	if err := logs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Process.Kill() })
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("a line written after logs -f started\n")
	f.Close()
	testenv.WaitFor(t, 10*time.Second, "logs -f printing the new line", func() bool {
		return strings.Contains(logOut.String(), "a line written after logs -f started")
	})
	logs.Process.Signal(syscall.SIGINT)
	if err := logs.Wait(); err != nil {
		t.Fatalf("logs -f after SIGINT: %v", err)
	}
	if _, errs, code := mmctlCode(t, mmctl, dir, "logs", "Gone"); code != 1 || !strings.Contains(errs, "only external tasks") {
		t.Fatalf("logs of an internal task: exit %d: %s", code, errs)
	}

	// recv -f follows a queue until interrupted.
	mmctlCode(t, mmctl, dir, "send", "--create", "userq", `{"n":1}`)
	recv := exec.Command(mmctl, "-T", dir, "recv", "-f", "userq")
	var recvOut testenv.Buffer
	recv.Stdout = &recvOut
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Process.Kill() })
	mmctlCode(t, mmctl, dir, "send", "userq", `{"n":2}`)
	testenv.WaitFor(t, 10*time.Second, "recv -f printing both", func() bool { return recvOut.String() == "{\"n\":1}\n{\"n\":2}\n" })
	recv.Process.Signal(syscall.SIGINT)
	if err := recv.Wait(); err != nil {
		t.Fatalf("recv -f after SIGINT: %v", err)
	}

	// gc: Gone leaves the config; its queue and state file are listed,
	// then removed with --yes; Counter's and userq are kept.
	os.WriteFile(filepath.Join(e.cfg, "a.cue"), []byte(base), 0o600)
	testenv.WaitFor(t, 10*time.Second, "Gone removed", func() bool { return e.task("Gone").Name == "" })
	out, errs, code = mmctlCode(t, mmctl, dir, "gc")
	if code != 0 || !strings.Contains(out, "queue Gone\n") || !strings.Contains(out, "tasks/Gone.db\n") ||
		!strings.Contains(out, "kept: queue userq") || strings.Contains(out, "Counter") || !strings.Contains(out, "nothing removed") {
		t.Fatalf("gc: exit %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(e.state, "tasks", "Gone.db")); err != nil {
		t.Fatalf("gc without --yes removed something: %v", err)
	}
	if out, errs, code = mmctlCode(t, mmctl, dir, "gc", "--yes"); code != 0 || !strings.Contains(out, "removed 1 queues and 1 files") {
		t.Fatalf("gc --yes: exit %d\n%s%s", code, out, errs)
	}
	names, _ := e.tr.Names()
	for _, n := range names {
		if n == "Gone" {
			t.Fatal("Gone's queue is still there")
		}
	}
	if _, err := os.Stat(filepath.Join(e.state, "tasks", "Counter.db")); err != nil {
		t.Fatalf("gc removed a running task's state: %v", err)
	}
	if _, err := e.tr.Lookup("userq"); err != nil {
		t.Fatalf("gc removed a queue it could not prove was a task's: %v", err)
	}
	e.tr.Remove("userq")
	mmctlCode(t, mmctl, dir, "shutdown", "--exit-externals")
	d.wait(t)
}

// mmctl --version, mmctl version and multimodule --version name the module.
func TestVersionFromBuildInfo(t *testing.T) {
	t.Parallel()
	mmctl := buildCmd(t, "./cmd/mmctl")
	daemon := buildCmd(t, "./cmd/multimodule")
	for _, argv := range [][]string{{mmctl, "--version"}, {mmctl, "version"}, {daemon, "--version"}} {
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		if err != nil || !strings.Contains(string(out), "github.com/multimodule/multimodule ") || !strings.Contains(string(out), "go1.") {
			t.Errorf("%v: %v: %q", argv, err, out)
		}
	}
}
