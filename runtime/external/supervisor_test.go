package external

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

// TestMain makes the test binary the external process too: the supervisor
// starts it as `exe -m TASK -s STATE ...`, and the task's name says how it
// behaves (see helper).
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "-m" {
		os.Exit(helper(os.Args[2], os.Args[3:]))
	}
	os.Exit(m.Run())
}

// helper is a stand-in external process:
//   - Stubborn ignores SIGTERM and starts a Grandchild in its process
//     group, whose pid it writes to STATE/Stubborn.child;
//   - Crash exits with status 3 on SIGUSR1;
//   - anything else exits 0 on SIGTERM.
func helper(task string, args []string) int {
	fs := flag.NewFlagSet(task, flag.ContinueOnError)
	state := fs.String("s", "", "")
	for _, f := range []string{"c", "T", "q", "p", "d", "o"} {
		fs.String(f, "", "")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	sig := make(chan os.Signal, 1)
	// ready tells the test that the signal handling is in place.
	ready := func() {
		if *state != "" {
			_ = os.WriteFile(filepath.Join(*state, task+".ready"), nil, 0o600)
		}
	}
	switch task {
	case "Stubborn":
		signal.Ignore(syscall.SIGTERM)
		child := exec.Command(os.Args[0], "-m", "Grandchild")
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := writeJSONFile(filepath.Join(*state, "Stubborn.child"), child.Process.Pid); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		select {}
	case "Crash":
		signal.Notify(sig, syscall.SIGUSR1)
		ready()
		<-sig
		return 3
	default:
		signal.Notify(sig, syscall.SIGTERM)
		ready()
		<-sig
		return 0
	}
}

func newSupervisor(t *testing.T) (*Supervisor, string, *transit.Transit) {
	t.Helper()
	state := t.TempDir()
	tr, err := transit.Open(transit.Options{Dir: testenv.TransitDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	return NewSupervisor(Options{StateDir: state, TransitDir: tr.Dir(), Exe: os.Args[0]}, tr), state, tr
}

func specOf(name string) Spec {
	return Spec{Task: NamedSpec{Name: name, Hash: "h-" + name, Spec: schema.TaskSpec{Kind: "Test"}}}
}

// waitReady waits until task's helper handles its signals.
func waitReady(t *testing.T, state, task string) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, task+" to be ready", func() bool {
		_, err := os.Stat(filepath.Join(state, task+".ready"))
		return err == nil
	})
	if err := os.Remove(filepath.Join(state, task+".ready")); err != nil {
		t.Fatal(err)
	}
}

// spawnReady spawns task's process, to be killed when the test ends, and
// waits until it is ready.
func spawnReady(t *testing.T, s *Supervisor, state, task string) Process {
	t.Helper()
	p, err := s.Spawn(specOf(task))
	if err != nil {
		t.Fatal(err)
	}
	killGroup(t, p.Pid)
	waitReady(t, state, task)
	return p
}

// killGroup makes sure a test leaves no process behind.
func killGroup(t *testing.T, pid int) {
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
}

func nextEvent(t *testing.T, s *Supervisor, within time.Duration) Exited {
	t.Helper()
	select {
	case ev := <-s.Events():
		return ev
	case <-time.After(within):
		t.Fatalf("no Exited event within %v", within)
		return Exited{}
	}
}

func TestStopKillsAStubbornProcessGroupAfterTheGrace(t *testing.T) {
	t.Parallel()
	s, state, _ := newSupervisor(t)
	p, err := s.Spawn(specOf("Stubborn"))
	if err != nil {
		t.Fatal(err)
	}
	killGroup(t, p.Pid)
	if p.Hash != specOf("Stubborn").Hash() || p.Kind != "Test" {
		t.Fatalf("spawned %+v", p)
	}
	var child int
	testenv.WaitFor(t, 10*time.Second, "the grandchild's pid", func() bool {
		b, err := os.ReadFile(filepath.Join(state, "Stubborn.child"))
		if err == nil {
			child, _ = strconv.Atoi(string(b))
		}
		return child > 0
	})
	if _, err := StartTime(child); err != nil {
		t.Fatalf("grandchild %d not running: %v", child, err)
	}
	const grace = 300 * time.Millisecond
	began := time.Now()
	if !s.Stop("Stubborn", grace, "test") {
		t.Fatal("Stop found no process")
	}
	if took := time.Since(began); took > grace/2 {
		t.Fatalf("Stop blocked its caller for %v", took)
	}
	ev := nextEvent(t, s, 20*time.Second)
	if took := time.Since(began); took < grace {
		t.Fatalf("Exited after %v, before the grace of %v", took, grace)
	}
	if ev.Task != "Stubborn" || ev.Process.Pid != p.Pid || !ev.Requested || !ev.Killed || ev.Reason != "test" {
		t.Fatalf("event %+v", ev)
	}
	testenv.WaitFor(t, 10*time.Second, "the grandchild to be gone too", func() bool {
		_, err := StartTime(child)
		return err != nil
	})
	if _, err := os.Stat(PidPath(state, "Stubborn")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid file left behind: %v", err)
	}
	if _, ok := s.Lookup("Stubborn"); ok {
		t.Fatal("an exited process is still tracked")
	}
}

func TestStopOfAnObedientProcessIsNotAKill(t *testing.T) {
	t.Parallel()
	s, state, tr := newSupervisor(t)
	spawnReady(t, s, state, "Obedient")
	spec, err := ReadSpec(s.o.StateDir, "Obedient")
	if err != nil || !s.ValidToken("Obedient", spec.Token) || s.ValidToken("Obedient", spec.Token+"x") {
		t.Fatalf("token of the spec file not valid, or any token is: %v", err)
	}
	bell, err := tr.Queue("Obedient.doorbell")
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.SetDoorbell("Obedient", bell.Name()); err != nil {
		t.Fatal(err)
	}
	s.Stop("Obedient", 20*time.Second, "test")
	ev := nextEvent(t, s, 20*time.Second)
	if !ev.Requested || ev.Killed || ev.Err != nil {
		t.Fatalf("event %+v", ev)
	}
	// A respawn keeps the token: a config message the old process missed
	// still carries the right one.
	spawnReady(t, s, state, "Obedient")
	again, _ := ReadSpec(s.o.StateDir, "Obedient")
	if again.Token != spec.Token {
		t.Fatal("a respawn changed the token")
	}
	s.Stop("Obedient", 20*time.Second, "test")
	nextEvent(t, s, 20*time.Second)
}

func TestACrashIsReportedOnce(t *testing.T) {
	t.Parallel()
	s, state, _ := newSupervisor(t)
	p := spawnReady(t, s, state, "Crash")
	if _, err := s.Spawn(specOf("Crash")); err == nil {
		t.Fatal("a second process of a running task was started")
	}
	if err := syscall.Kill(p.Pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, s, 20*time.Second)
	var exit *exec.ExitError
	if ev.Requested || ev.Killed || !errors.As(ev.Err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("event %+v", ev)
	}
	s.Poll()
	if s.Stop("Crash", time.Second, "test") {
		t.Fatal("Stop of an exited process")
	}
	select {
	case ev := <-s.Events():
		t.Fatalf("a second event %+v", ev)
	default:
	}
}

func TestAdoptFindsTheLivingAndDropsStalePidFiles(t *testing.T) {
	t.Parallel()
	s, state, _ := newSupervisor(t)
	// A process a previous daemon started: not this supervisor's child.
	cmd := exec.Command(os.Args[0], "-m", "Adoptee", "-s", state)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killGroup(t, cmd.Process.Pid)
	waitReady(t, state, "Adoptee")
	reaped := make(chan error, 1)
	go func() { reaped <- cmd.Wait() }()
	start, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(Dir(state), 0o700); err != nil {
		t.Fatal(err)
	}
	live := Process{Identity: Identity{Pid: cmd.Process.Pid, Start: start}, Hash: "h", Kind: "K"}
	// Stale: this very pid with another start time (a reused pid), and an
	// unreadable file.
	stale := Process{Identity: Identity{Pid: os.Getpid(), Start: start + 12345}}
	for name, v := range map[string]any{"Adoptee": live, "Stale": stale} {
		if err := writeJSONFile(PidPath(state, name), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(PidPath(state, "Garbage"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteSpec(state, specOf("Adoptee")); err != nil {
		t.Fatal(err)
	}
	spec, _ := ReadSpec(state, "Adoptee")

	got := s.Adopt()
	if len(got) != 1 || got["Adoptee"].Identity != live.Identity || got["Adoptee"].Hash != "h" {
		t.Fatalf("adopted %+v", got)
	}
	for _, name := range []string{"Stale", "Garbage"} {
		if _, err := os.Stat(PidPath(state, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("stale pid file %s left: %v", name, err)
		}
	}
	if !s.ValidToken("Adoptee", spec.Token) {
		t.Fatal("an adopted process's token is not valid")
	}
	s.Poll()
	select {
	case ev := <-s.Events():
		t.Fatalf("a living process reported exited: %+v", ev)
	default:
	}
	// It dies without being asked: its pidfd tells at once, with no Poll.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-reaped
	ev := nextEvent(t, s, 10*time.Second)
	if ev.Task != "Adoptee" || ev.Requested || ev.Killed {
		t.Fatalf("event %+v", ev)
	}
	if _, err := os.Stat(PidPath(state, "Adoptee")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid file left behind: %v", err)
	}
}

// A child that outlived the wait after SIGKILL (a process in
// uninterruptible sleep) is left to Poll; when it finally exits, its
// reaper reports the end once, as a requested and killed stop, and does
// not take the daemon down.
func TestAChildThatOutlivesTheKillWaitIsReportedOnce(t *testing.T) {
	t.Parallel()
	s, state, _ := newSupervisor(t)
	p := spawnReady(t, s, state, "Crash")
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
