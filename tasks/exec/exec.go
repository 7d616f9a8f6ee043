// Package exec is the built-in Exec task: a long-running program in any
// language is the task's handler, speaking JSON lines on its stdin and
// stdout.
//
// The protocol. The task writes to the program's stdin, one JSON object a
// line: first {"state": {...}} (the task's saved state, {} at first), then
// each message. The program writes to its stdout, one JSON object a line,
// any of these fields (several may share a line; they act in this order):
//
//	{"state": {...}}                        the task's new state, persisted
//	{"emit": {...}}                         emitted (source set, to the Router)
//	{"send": {"to": "Q", "message": {...}}} sent to a task or queue
//	{"log"|"alert"|"error": "text", ...}    out-of-band; other fields are its values
//	{"ack": true}                           the message is handled
//
// A message counts as handled only once the program acknowledged it, so
// the at-least-once rule of the daemon holds across the pipe: the task's
// handler waits for the ack (up to ack_timeout), and what the program
// emitted or sent before it joins the message's lineage. stderr goes to
// the log channel, line by line.
//
// A program that dies, does not ack in time, writes a line that is not a
// JSON object of the protocol or a line longer than max_line is killed
// (its whole process group), the error is reported, and it is started
// again after a backoff (doubling from backoff.initial up to backoff.max,
// reset by an ack); the message is given to the new program, up to
// attempts times in all, then it counts as a failed message. The task
// stays up throughout: see docs/decisions.md.
package exec

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/tasks/internal/taskconf"
	"github.com/multimodule/multimodule/transit"
)

// Kind is the task's registered kind.
const Kind = "builtin.Exec"

// Description is the one line --list-kinds shows.
const Description = "a long-running program in any language handles messages (JSON lines on stdin/stdout, acked)"

// ConfigSchema is the CUE definition #Config of the task's config.
//
//go:embed exec.cue
var ConfigSchema string

// PollTimer is the timer that reads what the program says between
// messages (stderr, unsolicited lines) and restarts a program that died.
const PollTimer = "exec_poll"

const (
	defaultAckTimeout = 30 * time.Second
	defaultAttempts   = 3
	defaultMaxLine    = 1 << 20
	defaultBackoff    = 100 * time.Millisecond
	defaultBackoffMax = 5 * time.Second
	defaultStopGrace  = 5 * time.Second
	pollEvery         = 100 * time.Millisecond
)

// config is the task's config, parsed.
type config struct {
	command     string
	args        []string
	env         map[string]string
	dir         string
	ackTimeout  time.Duration
	attempts    int
	maxLine     int
	backoff     time.Duration
	backoffMax  time.Duration
	stopGrace   time.Duration
	programHash string // what starting the program depends on
}

// Exec is the task. It is Stateful: the program's state (if it sends one)
// is persisted; a program that never sends one leaves an empty state.
type Exec struct {
	cfg  *config
	proc *proc
	// failures in a row since the last ack, and when the next start may
	// happen: the backoff.
	failures  int
	nextStart time.Time
	// acked: the current message's ack arrived (handleLine sets it).
	acked bool
	// handling: a message is outstanding (an ack outside one is an error).
	handling bool
}

// New makes an Exec task.
func New() runtime.Task { return &Exec{} }

// Stateful marks the task's state as persisted.
func (*Exec) Stateful() {}

// CheckConfig validates a config as SetConfig would.
func CheckConfig(c map[string]any) error {
	_, err := parseConfig(c)
	return err
}

func parseConfig(c map[string]any) (*config, error) {
	r := taskconf.New(c)
	r.Only("command", "args", "env", "dir", "ack_timeout", "attempts", "max_line", "backoff", "stop_grace")
	cfg := &config{
		command:    r.String("command", ""),
		args:       r.Strings("args"),
		env:        r.StringMap("env"),
		dir:        r.String("dir", ""),
		ackTimeout: r.Seconds("ack_timeout", defaultAckTimeout, 24*time.Hour),
		attempts:   r.Int("attempts", defaultAttempts, 1, 100),
		maxLine:    r.Int("max_line", defaultMaxLine, 1024, 1<<30),
		stopGrace:  r.Seconds("stop_grace", defaultStopGrace, time.Hour),
	}
	b := r.Object("backoff")
	b.Only("initial", "max")
	cfg.backoff = b.Seconds("initial", defaultBackoff, time.Hour)
	cfg.backoffMax = b.Seconds("max", defaultBackoffMax, time.Hour)
	r.Close(b)
	if !r.Has("command") {
		r.Fail("command", "required: the program to run")
	} else if cfg.command == "" {
		r.Fail("command", "must not be empty")
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	if cfg.backoffMax < cfg.backoff {
		cfg.backoffMax = cfg.backoff
	}
	h, _ := json.Marshal([]any{cfg.command, cfg.args, cfg.env, cfg.dir})
	cfg.programHash = string(h)
	return cfg, nil
}

// SetConfig starts the program (or restarts it if how to start it
// changed). A program that cannot be started at all (no such file) fails
// the config, so the controller's retry and backoff see it.
func (e *Exec) SetConfig(ctx runtime.Context, c map[string]any) error {
	cfg, err := parseConfig(c)
	if err != nil {
		return err
	}
	restart := e.cfg == nil || e.cfg.programHash != cfg.programHash
	if restart && e.proc != nil {
		e.stopProgram(ctx)
	}
	e.cfg = cfg
	ctx.Recur(PollTimer, pollEvery, e.poll)
	if restart {
		e.failures, e.nextStart = 0, time.Time{}
		if err := e.startProgram(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Message hands msg to the program and waits for its ack, restarting the
// program and trying again after a failure, up to attempts times.
func (e *Exec) Message(ctx runtime.Context, msg runtime.Message) error {
	line, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("exec: message is not JSON: %w", err)
	}
	line = append(line, '\n')
	var last error
	for attempt := 1; attempt <= e.cfg.attempts; attempt++ {
		if last = e.deliver(ctx, line); last == nil {
			e.failures = 0
			return nil
		}
		e.programFailed(ctx, last, "attempt", attempt, "of", e.cfg.attempts)
	}
	return fmt.Errorf("exec %s: message not handled after %d attempts: %w", e.cfg.command, e.cfg.attempts, last)
}

// deliver writes one message and reads the program's lines up to its ack.
func (e *Exec) deliver(ctx runtime.Context, line []byte) error {
	if e.proc == nil {
		if wait := time.Until(e.nextStart); wait > 0 {
			// The backoff, on the task's goroutine: its messages wait in
			// its mailbox and queue meanwhile (at most backoff.max).
			time.Sleep(wait)
		}
		if err := e.startProgram(ctx); err != nil {
			return err
		}
	}
	p := e.proc
	deadline := time.Now().Add(e.cfg.ackTimeout)
	if err := p.stdin.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("%w: %w", ErrStdin, err)
	}
	e.acked, e.handling = false, true
	defer func() { e.handling = false }()
	if _, err := p.stdin.Write(line); err != nil {
		if !p.hasExited() && !errors.Is(err, syscall.EPIPE) {
			return fmt.Errorf("%w: %w", ErrStdin, err)
		}
		// The program is gone: what it wrote before says why (a line
		// too long, garbage), else how it exited. No ack can come.
		e.handling = false
		deadline = time.Now().Add(time.Second)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for !e.acked {
		select {
		case l, ok := <-p.out:
			if !ok {
				return e.exitError(ctx, p)
			}
			if err := e.handleLine(ctx, l); err != nil {
				return err
			}
		case s, ok := <-p.errs:
			if ok {
				ctx.Log("exec stderr: "+s, "pid", p.cmd.Process.Pid)
			} else {
				p.errs = nil // stderr closed: stdout tells the rest
			}
		case <-timer.C:
			return fmt.Errorf("%w (%v)", ErrNoAck, e.cfg.ackTimeout)
		}
	}
	return nil
}

// exitError waits (briefly) for the program's exit status once its
// stdout ended, so the error says how it ended.
func (e *Exec) exitError(ctx runtime.Context, p *proc) error {
	select {
	case <-p.exited:
	case <-time.After(time.Second):
		return fmt.Errorf("%w: it closed its stdout", ErrExited)
	}
	e.drainStderr(ctx, p)
	return fmt.Errorf("%w: %s", ErrExited, p.exitStatus())
}

// handleLine acts on one line of the program's stdout.
func (e *Exec) handleLine(ctx runtime.Context, l line) error {
	if l.err != nil {
		return l.err
	}
	var m map[string]any
	if err := json.Unmarshal(l.b, &m); err != nil || m == nil {
		return fmt.Errorf("%w: %s", ErrGarbage, transit.Excerpt(l.b))
	}
	known := false
	if v, ok := m["state"]; ok {
		st, isObj := v.(map[string]any)
		if !isObj {
			return fmt.Errorf("%w: state must be an object: %s", ErrGarbage, transit.Excerpt(l.b))
		}
		s := ctx.State()
		clear(s)
		maps.Copy(s, st)
		known = true
	}
	if v, ok := m["emit"]; ok {
		msg, isObj := v.(map[string]any)
		if !isObj {
			return fmt.Errorf("%w: emit must be an object: %s", ErrGarbage, transit.Excerpt(l.b))
		}
		ctx.Emit(msg)
		known = true
	}
	if v, ok := m["send"]; ok {
		s, _ := v.(map[string]any)
		to, _ := s["to"].(string)
		msg, isObj := s["message"].(map[string]any)
		if to == "" || !isObj {
			return fmt.Errorf("%w: send must be {\"to\": \"QUEUE\", \"message\": {...}}: %s", ErrGarbage, transit.Excerpt(l.b))
		}
		if err := ctx.Send(to, msg); err != nil {
			ctx.Error("exec: send failed", "to", to, "error", err)
		}
		known = true
	}
	for _, ch := range []struct {
		key string
		out func(string, ...any)
	}{{"log", ctx.Log}, {"alert", ctx.Alert}, {"error", ctx.Error}} {
		v, ok := m[ch.key]
		if !ok {
			continue
		}
		text, isStr := v.(string)
		if !isStr {
			return fmt.Errorf("%w: %s must be a string: %s", ErrGarbage, ch.key, transit.Excerpt(l.b))
		}
		ch.out(text, values(m)...)
		known = true
	}
	if v, ok := m["ack"]; ok {
		if v != true {
			return fmt.Errorf("%w: ack must be true: %s", ErrGarbage, transit.Excerpt(l.b))
		}
		if !e.handling {
			return fmt.Errorf("%w: an ack with no message outstanding", ErrGarbage)
		}
		e.acked = true
		known = true
	}
	if !known {
		return fmt.Errorf("%w: no state, emit, send, log, alert, error or ack in %s", ErrGarbage, transit.Excerpt(l.b))
	}
	return nil
}

// values are a log line's other fields as key-value pairs, sorted.
func values(m map[string]any) []any {
	var kv []any
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch k {
		case "log", "alert", "error", "state", "emit", "send", "ack":
			continue
		}
		kv = append(kv, k, m[k])
	}
	return kv
}

// startProgram starts the program and hands it the state.
func (e *Exec) startProgram(ctx runtime.Context) error {
	p, err := start(e.cfg)
	if err != nil {
		return err
	}
	e.proc = p
	ctx.Log("exec: program started", "command", e.cfg.command, "pid", p.cmd.Process.Pid)
	state, err := json.Marshal(map[string]any{"state": ctx.State()})
	if err != nil {
		return fmt.Errorf("exec: state is not JSON: %w", err)
	}
	// A program that does not read stdin must not stall the task here
	// either; the failure is then the caller's to act on (e.proc is set,
	// so it is killed).
	if err = p.stdin.SetWriteDeadline(time.Now().Add(e.cfg.ackTimeout)); err == nil {
		_, err = p.stdin.Write(append(state, '\n'))
	}
	// A broken pipe means it is gone, reaped or not yet: how it ended is
	// the better error, found when its stdout ends.
	if err != nil && !p.hasExited() && !errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w: the state: %w", ErrStdin, err)
	}
	// A program that exited at once is found when its stdout ends.
	return nil
}

// programFailed kills the program and sets its next start after the
// backoff.
func (e *Exec) programFailed(ctx runtime.Context, err error, kv ...any) {
	e.failures++
	delay := e.cfg.backoff
	for i := 1; i < e.failures && delay < e.cfg.backoffMax; i++ {
		delay *= 2
	}
	delay = min(delay, e.cfg.backoffMax)
	e.nextStart = time.Now().Add(delay)
	if e.proc != nil {
		kv = append(kv, "pid", e.proc.cmd.Process.Pid)
		e.proc.kill()
		e.drainStderr(ctx, e.proc)
		e.proc = nil
	}
	ctx.Error("exec: program failed; restarting it after the backoff",
		append([]any{"command", e.cfg.command, "error", err, "failures_in_a_row", e.failures, "backoff", delay.String()}, kv...)...)
}

// poll runs between messages: it logs stderr, acts on lines the program
// wrote on its own, and restarts a program that died once its backoff
// has passed.
func (e *Exec) poll(ctx runtime.Context) {
	if e.proc == nil {
		if e.cfg != nil && !time.Now().Before(e.nextStart) {
			if err := e.startProgram(ctx); err != nil {
				e.programFailed(ctx, err)
			}
		}
		return
	}
	p := e.proc
	e.drainStderr(ctx, p)
	for {
		select {
		case l, ok := <-p.out:
			if !ok {
				e.programFailed(ctx, e.exitError(ctx, p))
				return
			}
			if err := e.handleLine(ctx, l); err != nil {
				e.programFailed(ctx, err)
				return
			}
		default:
			return
		}
	}
}

// drainStderr logs the stderr lines waiting, and how many were dropped.
func (e *Exec) drainStderr(ctx runtime.Context, p *proc) {
drain:
	for p.errs != nil {
		select {
		case s, ok := <-p.errs:
			if !ok {
				p.errs = nil
				break drain
			}
			ctx.Log("exec stderr: "+s, "pid", p.cmd.Process.Pid)
		default:
			break drain
		}
	}
	if n := p.dropped.Swap(0); n > 0 {
		ctx.Error("exec: stderr lines dropped (the program writes them faster than they are logged)", "lines", n)
	}
}

// Stop closes the program's stdin and gives it stop_grace to exit, acting
// on what it still writes (a last state is saved), then kills its group.
func (e *Exec) Stop(ctx runtime.Context) {
	if e.proc != nil {
		e.stopProgram(ctx)
	}
}

func (e *Exec) stopProgram(ctx runtime.Context) {
	p := e.proc
	e.proc = nil
	p.stdin.Close()
	grace := time.NewTimer(e.cfg.stopGrace)
	defer grace.Stop()
	for out := p.out; out != nil; {
		select {
		case l, ok := <-out:
			if !ok {
				out = nil
				break
			}
			if err := e.handleLine(ctx, l); err != nil {
				ctx.Error("exec: while stopping", "error", err)
			}
		case <-grace.C:
			ctx.Error("exec: program did not exit within stop_grace after its stdin closed: killed",
				"pid", p.cmd.Process.Pid, "stop_grace", e.cfg.stopGrace.String())
			out = nil
		}
	}
	p.kill()
	e.drainStderr(ctx, p)
	ctx.Log("exec: program stopped", "pid", p.cmd.Process.Pid, "status", p.exitStatus())
}
