package external

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/transit"
)

// An external task runs in its own process, started from this binary with
// -m TASK, detached (its own session, stdin /dev/null, output appended to
// STATE/external/TASK.log), so that it keeps working while the daemon is
// down. The daemon tracks it by pid and process start time (a pid alone
// may be reused) in STATE/external/TASK.pid, so a daemon started later
// adopts it instead of starting a second copy.

// Options configure a Supervisor: the flags its processes are started
// with, and where it logs.
type Options struct {
	StateDir, ConfigDir, TransitDir string
	ControlQueue, Namespaces        string
	Level, OOB                      string // as the -d and -o flags
	// Exe is the binary started with -m TASK (default os.Executable).
	Exe        string
	Log, Error *slog.Logger // default: discarded
}

// Process is a running external process as the supervisor knows it; as
// JSON it is the content of the task's pid file.
type Process struct {
	Identity
	Hash    string    `json:"hash"` // the bundle it was given (Spec.Hash)
	Kind    string    `json:"kind"` // the kind as the config named it
	Started time.Time `json:"-"`    // when this supervisor started or adopted it
}

// StopReason says why a process is stopped; it comes back in its Exited
// event, so that the receiver need not remember it.
type StopReason string

// Exited reports the end of a process the supervisor tracked. Before it is
// sent, the task's pid file and its process's doorbell queue are removed:
// the task's queue may be served by someone else at once.
type Exited struct {
	Task    string
	Process Process
	// Requested: Stop ended it (with Reason); otherwise it crashed or was
	// ended by someone else.
	Requested bool
	Reason    StopReason
	// Killed: it did not exit within Stop's grace and was SIGKILLed, with
	// its process group (what it took and did not hand on is handled again
	// by the next process; its state is what it last saved).
	Killed bool
	// Err is how it ended: the wait status of a process this supervisor
	// started, nil for one found gone (an adopted process is not our
	// child: its status is not ours to read).
	Err error
}

// Supervisor starts, adopts, reconfigures and stops the processes of
// external tasks, and reports each end as an Exited event. It owns the
// pid, spec and log files under STATE/external and nothing of the
// daemon's: the daemon decides what to start and stop, and learns of
// exits only through Events. Its methods are safe for concurrent use and
// none waits for a process to exit.
type Supervisor struct {
	o  Options
	tr *transit.Transit

	mu      sync.Mutex
	procs   map[string]*entry
	tokens  map[string]string
	queue   []Exited // events not yet taken by the pump
	pumping bool
	events  chan Exited
}

// entry is one tracked process.
type entry struct {
	name string
	p    Process
	// gone is closed once the process is known to have ended: reaped by
	// cmd.Wait for a process this supervisor started (its child), seen
	// through its pidfd for an adopted one. nil for an adopted process
	// without a pidfd (a kernel before 5.3), which Poll looks at instead.
	// It is set once, when the entry is made.
	gone    chan struct{}
	waitErr error
	// polled: a process that outlived SIGKILL's wait is left to Poll too.
	polled bool
	// stopping: Stop has been called (with reason); killed: it was sent
	// SIGKILL. finished: its Exited event is sent, it is forgotten.
	stopping bool
	reason   StopReason
	killed   bool
	finished bool
}

// Poll interval and deadlines of the waits beside the caller.
const (
	pollEvery = 10 * time.Millisecond
	// killWait is how long a SIGKILLed process may take to be gone before
	// the stop is given up on (a process in uninterruptible sleep); Poll
	// then reports its end whenever it comes.
	killWait = 10 * time.Second
)

// NewSupervisor makes a supervisor that reaches the tasks' queues through
// tr. It tracks nothing until Adopt or Spawn.
func NewSupervisor(o Options, tr *transit.Transit) *Supervisor {
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.Log == nil {
		o.Log = discard
	}
	if o.Error == nil {
		o.Error = discard
	}
	return &Supervisor{o: o, tr: tr, procs: map[string]*entry{}, tokens: map[string]string{},
		events: make(chan Exited)}
}

// Events delivers every end of a tracked process exactly once: crashes of
// processes this supervisor started (as soon as they are reaped),
// adopted ones found gone by Poll, and the ends of Stop. Events that are
// not taken wait in an unbounded queue: the supervisor never blocks on
// them, so its methods may be called from the goroutine that reads them.
func (s *Supervisor) Events() <-chan Exited { return s.events }

// Adopt takes over the processes a previous daemon left running (a pid
// file whose pid and start time are alive), and removes the pid files of
// those that are gone. It returns what it adopted, by task.
func (s *Supervisor) Adopt() map[string]Process {
	paths, _ := filepath.Glob(filepath.Join(Dir(s.o.StateDir), "*.pid"))
	sort.Strings(paths)
	out := map[string]Process{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".pid")
		if s.procs[name] != nil {
			continue
		}
		p, err := readProcess(path)
		if err != nil || p.Pid <= 0 || !p.Alive() {
			os.Remove(path)
			continue
		}
		p.Started = time.Now()
		if spec, err := ReadSpec(s.o.StateDir, name); err == nil && spec.Token != "" {
			s.tokens[name] = spec.Token
		}
		e := &entry{name: name, p: p}
		if fd, err := openPidfd(p.Identity); err == nil {
			e.gone = make(chan struct{})
			go s.watch(e, fd, nil)
		} else if errors.Is(err, errGone) {
			os.Remove(path)
			continue
		}
		s.procs[name] = e
		out[name] = p
		s.o.Log.Info("adopted a running external task", "task", name, "pid", p.Pid)
	}
	return out
}

// Spawn starts the process of spec.Task.Name: it writes the task's spec
// file (keeping an existing token, else with a new one), starts the binary
// with -m detached, and records its pid file. A failed Spawn sends no
// event. A task whose process is still tracked is refused.
func (s *Supervisor) Spawn(spec Spec) (Process, error) {
	name := spec.Task.Name
	s.mu.Lock()
	defer s.mu.Unlock() // one spawn at a time: it is quick, and tasks are never started twice
	if e := s.procs[name]; e != nil {
		return Process{}, fmt.Errorf("external %s is already running (pid %d)", name, e.p.Pid)
	}
	spec, err := WriteSpec(s.o.StateDir, spec)
	if err != nil {
		return Process{}, err
	}
	s.tokens[name] = spec.Token
	exe := s.o.Exe
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return Process{}, fmt.Errorf("starting %s: %w", name, err)
		}
	}
	logf, err := os.OpenFile(LogPath(s.o.StateDir, name), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return Process{}, fmt.Errorf("starting %s: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, "-m", name, "-c", s.o.ConfigDir, "-s", s.o.StateDir, "-T", s.o.TransitDir,
		"-q", s.o.ControlQueue, "-p", s.o.Namespaces, "-d", s.o.Level, "-o", s.o.OOB)
	cmd.Stdout, cmd.Stderr = logf, logf // stdin stays /dev/null
	// Its own session: a signal to the daemon's process group (a ^C)
	// does not reach it, and Stop can kill its whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Process{}, fmt.Errorf("starting %s -m %s: %w", exe, name, err)
	}
	start, err := StartTime(cmd.Process.Pid)
	if err != nil {
		_ = cmd.Wait() // it exited at once; reap it
		os.Remove(PidPath(s.o.StateDir, name))
		return Process{}, fmt.Errorf("external %s exited at once: see %s", name, LogPath(s.o.StateDir, name))
	}
	p := Process{Identity: Identity{Pid: cmd.Process.Pid, Start: start}, Hash: spec.Hash(), Kind: spec.Task.Spec.Kind, Started: time.Now()}
	e := &entry{name: name, p: p, gone: make(chan struct{})}
	s.procs[name] = e
	if err := writeJSONFile(PidPath(s.o.StateDir, name), p); err != nil {
		// It runs, and recorded itself; a later daemon finds it either way.
		s.o.Error.Error("recording an external process", "task", name, "pid", p.Pid, "error", err)
	}
	// Our child cannot be reaped by anyone else, so its pid is its own
	// until cmd.Wait: a pidfd of it is of it, even of its zombie.
	fd, err := openPidfd(Identity{Pid: p.Pid})
	if err != nil {
		fd = nil // no pidfds: cmd.Wait blocks a thread of its own instead
	}
	go s.watch(e, fd, cmd)
	s.o.Log.Info("external task started", "task", name, "pid", p.Pid)
	return p, nil
}

// Reconfigure hands a changed bundle to task spec.Task.Name's running
// process: on disk for its next start, and on its queue, in order with its
// messages.
func (s *Supervisor) Reconfigure(spec Spec) error {
	name := spec.Task.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	spec, err := WriteSpec(s.o.StateDir, spec)
	if err != nil {
		return err
	}
	s.tokens[name] = spec.Token
	msg, err := ConfigMessage(spec)
	if err != nil {
		return fmt.Errorf("config message for %s: %w", name, err)
	}
	if err := s.tr.Send(name, msg); err != nil {
		return fmt.Errorf("config message for %s: %w", name, err)
	}
	if e := s.procs[name]; e != nil {
		e.p.Hash = spec.Hash()
		if err := writeJSONFile(PidPath(s.o.StateDir, name), e.p); err != nil {
			return fmt.Errorf("recording %s: %w", name, err)
		}
	}
	return nil
}

// Stop asks task name's process to drain, save and exit (SIGTERM), and
// returns at once. If it is still alive after grace, its whole process
// group is SIGKILLed (it is a session leader): a stuck process must not
// hold the task forever, and what it took stays queued (at least once).
// Its end arrives as an Exited event with Requested and why. Stop reports
// whether there was a process to stop; a second Stop of the same process
// does nothing.
func (s *Supervisor) Stop(name string, grace time.Duration, why StopReason) bool {
	s.mu.Lock()
	e := s.procs[name]
	if e == nil || e.stopping {
		s.mu.Unlock()
		return e != nil
	}
	e.stopping, e.reason = true, why
	s.mu.Unlock()
	go s.stop(e, grace)
	return true
}

// stop runs beside Stop's caller.
func (s *Supervisor) stop(e *entry, grace time.Duration) {
	if e.p.Alive() {
		if err := syscall.Kill(e.p.Pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			s.o.Error.Error("SIGTERM to an external process", "task", e.name, "pid", e.p.Pid, "error", err)
		}
	}
	if s.waitGone(e, grace) {
		s.finish(e)
		return
	}
	s.mu.Lock()
	e.killed = true
	s.mu.Unlock()
	// Alive was checked just now: the pid is still this process, and the
	// group it leads is its own.
	s.o.Log.Info("external process did not exit in time: killing its process group", "task", e.name, "pid", e.p.Pid, "grace", grace)
	if err := syscall.Kill(-e.p.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		s.o.Error.Error("SIGKILL to an external process group", "task", e.name, "pid", e.p.Pid, "error", err)
	}
	if s.waitGone(e, killWait) {
		s.finish(e)
		return
	}
	// Left to Poll, which reports its end (still as requested) when it comes.
	s.o.Error.Error("external process still alive after SIGKILL", "task", e.name, "pid", e.p.Pid, "waited", killWait)
	s.mu.Lock()
	e.polled = true // Poll looks at it from now on
	s.mu.Unlock()
}

// waitGone waits up to d for e's process to be gone (reaped, for a child).
func (s *Supervisor) waitGone(e *entry, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	if e.gone != nil {
		select {
		case <-e.gone:
			return true
		case <-deadline.C:
			return false
		}
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if !e.p.Alive() {
			return true
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return false
		}
	}
}

// Poll looks whether the processes no pidfd watches (adopted ones on a
// kernel without pidfds, and any that outlived SIGKILL's wait) are still
// alive, and reports those that are gone; every other end is reported
// the moment it happens. The daemon calls it periodically (every 500 ms);
// it reads /proc only for those few.
func (s *Supervisor) Poll() {
	s.mu.Lock()
	var gone []*entry
	for _, e := range s.procs {
		if (e.gone == nil || e.polled) && !e.finished && !e.p.Alive() {
			gone = append(gone, e)
		}
	}
	s.mu.Unlock()
	for _, e := range gone {
		s.finish(e)
	}
}

// finish forgets e, removes its pid file and doorbell, and reports its end:
// once, whoever notices it first.
func (s *Supervisor) finish(e *entry) {
	s.mu.Lock()
	if e.finished {
		s.mu.Unlock()
		return
	}
	e.finished = true
	if s.procs[e.name] == e {
		delete(s.procs, e.name)
	}
	ev := Exited{Task: e.name, Process: e.p, Requested: e.stopping, Reason: e.reason, Killed: e.killed, Err: e.waitErr}
	// Its doorbell goes: senders stop ringing it, and the next process
	// makes its own (one that was killed could not remove it).
	os.Remove(PidPath(s.o.StateDir, e.name))
	s.tr.ClearDoorbell(e.name)
	s.tr.Remove(e.name + ".doorbell")
	s.queue = append(s.queue, ev)
	if !s.pumping {
		s.pumping = true
		go s.pump()
	}
	s.mu.Unlock()
	s.o.Log.Info("external process exited", "task", ev.Task, "pid", ev.Process.Pid,
		"requested", ev.Requested, "killed", ev.Killed, "status", fmt.Sprint(ev.Err))
}

// pump hands queued events to Events in order; it runs only while some
// wait.
func (s *Supervisor) pump() {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.pumping = false
			s.mu.Unlock()
			return
		}
		ev := s.queue[0]
		s.queue = s.queue[1:]
		s.mu.Unlock()
		s.events <- ev
	}
}

// Lookup returns task name's tracked process.
func (s *Supervisor) Lookup(name string) (Process, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.procs[name]; e != nil {
		return e.p, true
	}
	return Process{}, false
}

// ValidToken reports whether token is task's (the secret of its spec file,
// which signs what its process sends the daemon), in constant time. A
// token stays valid after its process exits (its last records may still
// be queued, and the next process gets the same token) until Forget.
func (s *Supervisor) ValidToken(task, token string) bool {
	s.mu.Lock()
	want, ok := s.tokens[task]
	s.mu.Unlock()
	return ok && subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1
}

// Forget drops task's token and spec file, for a task no longer external:
// a later process of it gets a new token.
func (s *Supervisor) Forget(task string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, task)
	os.Remove(SpecPath(s.o.StateDir, task))
}
