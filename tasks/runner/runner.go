// Package runner is the built-in Runner task: on each message it runs a
// program once and emits the result (exit code, duration, the tails of
// stdout and stderr), or each JSON line the program writes to stdout as a
// message of its own.
//
// A run happens inside the task's message handler, one at a time: what
// the run emits then belongs to the message's lineage, so the message
// leaves its queue only once its result is out (at least once, across a
// crash of the daemon too). Runs of one task never overlap; for several at
// once, declare several Runner tasks (see docs/decisions.md).
package runner

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/tasks/internal/taskconf"
	"github.com/multimodule/multimodule/transit"
)

// Kind is the task's registered kind.
const Kind = "builtin.Runner"

// Description is the one line --list-kinds shows.
const Description = "runs a program per message (no shell unless asked; timeout kills its process group) and emits its result or its JSON lines"

// ConfigSchema is the CUE definition #Config of the task's config.
//
//go:embed runner.cue
var ConfigSchema string

// Errors of a run, each wrapped with what happened.
var (
	ErrTimeout = errors.New("program did not finish in time: its process group was killed")
	ErrStart   = errors.New("program could not be started")
	ErrArgs    = errors.New("message fields cannot be arguments")
)

const (
	defaultTimeout     = 60 * time.Second
	defaultTailBytes   = 4096
	defaultMaxMessages = 10000
	defaultMaxLine     = 1 << 20
	// waitDelay bounds how long output pipes held open by something the
	// program left behind (a daemonized child) keep a finished or killed
	// run from ending.
	waitDelay = time.Second
)

type config struct {
	command      string
	args         []string
	shell        bool
	argFields    []string
	stdinMessage bool
	env          []string // KEY=VALUE, added to the daemon's environment
	dir          string
	timeout      time.Duration
	jsonLines    bool
	tailBytes    int
	maxMessages  int
	maxLine      int
	to           string
}

// Runner is the task. It is stateless: a message's result is out before
// the message leaves its queue, so nothing needs to survive a restart.
type Runner struct {
	cfg *config
}

// New makes a Runner.
func New() runtime.Task { return &Runner{} }

// CheckConfig validates a config as SetConfig would.
func CheckConfig(c map[string]any) error {
	_, err := parseConfig(c)
	return err
}

func parseConfig(c map[string]any) (*config, error) {
	r := taskconf.New(c)
	r.Only("command", "args", "shell", "arg_fields", "stdin_message", "env", "dir", "timeout",
		"output", "tail_bytes", "max_messages", "max_line", "to")
	cfg := &config{
		command:      r.String("command", ""),
		args:         r.Strings("args"),
		shell:        r.Bool("shell", false),
		argFields:    r.Strings("arg_fields"),
		stdinMessage: r.Bool("stdin_message", false),
		dir:          r.String("dir", ""),
		timeout:      r.Seconds("timeout", defaultTimeout, 24*time.Hour),
		tailBytes:    r.Int("tail_bytes", defaultTailBytes, 0, 1<<20),
		maxMessages:  r.Int("max_messages", defaultMaxMessages, 0, 1000000),
		maxLine:      r.Int("max_line", defaultMaxLine, 1024, 64<<20),
		to:           r.String("to", ""),
	}
	for k, v := range r.StringMap("env") {
		cfg.env = append(cfg.env, k+"="+v)
	}
	switch out := r.String("output", "tail"); out {
	case "tail":
	case "json_lines":
		cfg.jsonLines = true
	default:
		r.Fail("output", `want "tail" or "json_lines", got %q`, out)
	}
	if !r.Has("command") {
		r.Fail("command", "required: the program to run")
	} else if cfg.command == "" {
		r.Fail("command", "must not be empty")
	}
	if r.Has("to") && cfg.to == "" {
		r.Fail("to", "must not be empty")
	}
	for i, f := range cfg.argFields {
		if f == "" {
			return nil, taskconf.Errorf([]string{"arg_fields", strconv.Itoa(i)}, "must not be empty")
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// SetConfig takes the config; a program that is not there fails it, so
// the controller's retry and backoff see the mistake at once rather than
// on every message.
func (r *Runner) SetConfig(_ runtime.Context, c map[string]any) error {
	cfg, err := parseConfig(c)
	if err != nil {
		return err
	}
	if !cfg.shell {
		if _, err := lookPath(cfg.command, cfg.dir); err != nil {
			return fmt.Errorf("%w: %w", ErrStart, err)
		}
	}
	r.cfg = cfg
	return nil
}

// lookPath finds command as the run will: a relative path with a slash is
// relative to dir.
func lookPath(command, dir string) (string, error) {
	if dir != "" && !filepath.IsAbs(command) && strings.Contains(command, "/") {
		command = filepath.Join(dir, command)
	}
	return osexec.LookPath(command)
}

// Message runs the program once for msg and emits its result (and, in
// json_lines mode, its lines first). A timeout, a program that cannot be
// started or message fields that cannot be arguments are errors of the
// message (on the error channel, counted), and their result says so too;
// a non-zero exit is a result, not an error.
func (r *Runner) Message(ctx runtime.Context, msg runtime.Message) error {
	res := map[string]any{"request": request(msg)}
	argv, err := r.argv(msg)
	if err == nil {
		err = r.run(ctx, msg, argv, res)
	}
	if err != nil {
		res["error"] = err.Error()
	}
	r.out(ctx, res)
	return err
}

// request is the message without its transport metadata, for the result.
func request(msg runtime.Message) map[string]any {
	out := maps.Clone(msg)
	delete(out, runtime.MetaKey)
	return out
}

// out emits a message, or sends it to the configured queue.
func (r *Runner) out(ctx runtime.Context, m map[string]any) {
	if r.cfg.to == "" {
		ctx.Emit(m)
		return
	}
	if err := ctx.Send(r.cfg.to, m); err != nil {
		ctx.Error("runner: result not sent", "to", r.cfg.to, "error", err)
	}
}

// argv is the program and its arguments for msg. Message fields only
// ever become whole arguments: with shell they are the script's
// positional parameters, never part of its text.
func (r *Runner) argv(msg runtime.Message) ([]string, error) {
	var fields []string
	for _, f := range r.cfg.argFields {
		v, ok := msg[f]
		if !ok {
			return nil, fmt.Errorf("%w: the message has no field %q", ErrArgs, f)
		}
		switch x := v.(type) {
		case string:
			fields = append(fields, x)
		case float64:
			fields = append(fields, strconv.FormatFloat(x, 'f', -1, 64))
		case bool:
			fields = append(fields, strconv.FormatBool(x))
		case []any:
			for _, e := range x {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("%w: field %q: a list must hold strings only, got %T", ErrArgs, f, e)
				}
				fields = append(fields, s)
			}
		default:
			return nil, fmt.Errorf("%w: field %q is %T (want a string, number, bool or list of strings)", ErrArgs, f, v)
		}
	}
	if r.cfg.shell {
		// sh -c SCRIPT NAME ARGS...: $0 is the task's command name, the
		// configured args then the fields are $1, $2, ...
		return append([]string{"/bin/sh", "-c", r.cfg.command, "runner"}, append(r.cfg.args, fields...)...), nil
	}
	return append(append([]string{r.cfg.command}, r.cfg.args...), fields...), nil
}

// run runs argv to its end or its timeout and fills res; json lines are
// emitted on the handler's goroutine as they come.
func (r *Runner) run(ctx runtime.Context, msg runtime.Message, argv []string, res map[string]any) error {
	cctx, cancel := context.WithTimeout(context.Background(), r.cfg.timeout)
	defer cancel()
	cmd := osexec.CommandContext(cctx, argv[0], argv[1:]...)
	cmd.Dir = r.cfg.dir
	cmd.Env = append(os.Environ(), r.cfg.env...)
	// A group of its own, so that a timeout kills what it started too;
	// Pdeathsig: a daemon killed with SIGKILL takes its runs along (their
	// messages are run again by the next daemon).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	if r.cfg.stdinMessage {
		b, err := json.Marshal(msg)
		if err != nil {
			return fmt.Errorf("runner: message is not JSON: %w", err)
		}
		cmd.Stdin = bytes.NewReader(append(b, '\n'))
	}
	stderr := newTail(r.cfg.tailBytes)
	cmd.Stderr = stderr
	var stdout *tail
	var lines *lineWriter
	if r.cfg.jsonLines {
		lines = newLineWriter(r.cfg.maxLine)
		cmd.Stdout = lines
	} else {
		stdout = newTail(r.cfg.tailBytes)
		cmd.Stdout = stdout
	}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		res["exit_code"] = -1
		return fmt.Errorf("%w: %s: %w", ErrStart, argv[0], err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var js jsonStats
	if lines != nil {
		// Lines are emitted here, on the handler's goroutine, as they
		// come: the program is held back (its pipe fills) rather than
		// the daemon's memory growing.
	read:
		for {
			select {
			case l := <-lines.ch:
				r.jsonLine(ctx, l, &js)
			case <-waited:
				break read
			}
		}
		// Wait has returned: nothing writes any more.
		for {
			select {
			case l := <-lines.ch:
				r.jsonLine(ctx, l, &js)
				continue
			default:
			}
			break
		}
		if rest := lines.rest(); rest != nil {
			r.jsonLine(ctx, rest, &js)
		}
	} else {
		<-waited
	}
	// Whatever the program left running in its group goes with it: a run
	// ends with its result.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)

	res["duration"] = time.Since(began).Seconds()
	res["exit_code"] = cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		res["signal"] = ws.Signal().String()
	}
	res["stderr"], res["stderr_bytes"] = stderr.String(), stderr.total
	if stdout != nil {
		res["stdout"], res["stdout_bytes"] = stdout.String(), stdout.total
	} else {
		res["lines"], res["lines_dropped"], res["json_errors"] = js.emitted, js.dropped+lines.long, js.errors
		if js.firstErr != "" {
			res["json_error"] = js.firstErr
		}
	}
	timedOut := errors.Is(cctx.Err(), context.DeadlineExceeded)
	res["timed_out"] = timedOut
	if timedOut {
		return fmt.Errorf("%w (%v): %s", ErrTimeout, r.cfg.timeout, argv[0])
	}
	return nil
}

// jsonStats counts what became of the stdout lines of a json_lines run.
type jsonStats struct {
	emitted, dropped, errors int
	firstErr                 string
}

// jsonLine emits one stdout line that is a JSON object, up to
// max_messages; other lines are counted (the first one is quoted).
func (r *Runner) jsonLine(ctx runtime.Context, l []byte, js *jsonStats) {
	if len(bytes.TrimSpace(l)) == 0 {
		return
	}
	var m map[string]any
	if err := json.Unmarshal(l, &m); err != nil || m == nil {
		js.errors++
		if js.firstErr == "" {
			js.firstErr = "not a JSON object: " + transit.Excerpt(l)
		}
		return
	}
	if js.emitted >= r.cfg.maxMessages {
		js.dropped++
		return
	}
	js.emitted++
	r.out(ctx, m)
}
