package exec_test

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/mmtest"
	mmexec "github.com/multimodule/multimodule/tasks/exec"
)

// echoSh answers each message with an emit of it and an ack, in one line;
// the state line it gets first is skipped.
const echoSh = `while IFS= read -r l; do
case "$l" in '{"state"'*) ;; *) printf '{"emit":%s,"ack":true}\n' "$l";; esac
done`

func sh(script string, extra map[string]any) map[string]any {
	c := map[string]any{"command": "/bin/sh", "args": []any{"-c", script},
		"backoff": map[string]any{"initial": 0.01, "max": 0.05}}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func TestEchoEmitsAndAcks(t *testing.T) {
	h := mmtest.New(t, "E", mmexec.New(), mmtest.Config(sh(echoSh, nil)))
	for i := range 3 {
		if err := h.Message(map[string]any{"n": float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.Emitted) != 3 || h.Emitted[2]["n"] != 2.0 || h.Emitted[2]["source"] != "E" {
		t.Fatalf("emitted %v", h.Emitted)
	}
}

func needPython(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	return p
}

// counterPy keeps a count in the task's state, says so on stderr, sends
// a copy elsewhere, and writes its state once more on EOF.
const counterPy = `
import json, sys
state = {}
for line in sys.stdin:
    m = json.loads(line)
    if "state" in m and len(m) == 1:
        state = m["state"]; continue
    state["n"] = state.get("n", 0) + 1
    print("handled", state["n"], file=sys.stderr, flush=True)
    print(json.dumps({"state": state, "send": {"to": "Other", "message": {"n": state["n"]}}}))
    print(json.dumps({"log": "counted", "n": state["n"]}))
    print(json.dumps({"ack": True}), flush=True)
state["bye"] = True
print(json.dumps({"state": state}), flush=True)
`

func TestStateLogsSendAndStop(t *testing.T) {
	py := needPython(t)
	cfg := map[string]any{"command": py, "args": []any{"-c", counterPy}}
	h := mmtest.New(t, "C", mmexec.New(), mmtest.Config(cfg), mmtest.State(map[string]any{"n": 40}))
	for range 2 {
		if err := h.Message(map[string]any{"x": 1}); err != nil {
			t.Fatal(err)
		}
	}
	if h.State()["n"] != 42.0 {
		t.Fatalf("state %v", h.State())
	}
	if len(h.Sent) != 2 || h.Sent[1].Queue != "Other" || h.Sent[1].Msg["n"] != 42.0 {
		t.Fatalf("sent %v", h.Sent)
	}
	if !hasLog(h.Logs, "counted") {
		t.Fatalf("logs %v", h.Logs)
	}
	// The stop closes stdin; the program's last state is kept.
	h.Restart(mmexec.New(), cfg)
	if h.State()["bye"] != true || h.State()["n"] != 42.0 {
		t.Fatalf("state after stop %v", h.State())
	}
	if err := h.Message(map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if h.State()["n"] != 43.0 {
		t.Fatalf("state after restart %v", h.State())
	}
	testenv.WaitFor(t, 5*time.Second, "stderr logged", func() bool {
		h.Fire(mmexec.PollTimer)
		return hasLog(h.Logs, "exec stderr: handled 43")
	})
}

func hasLog(recs []mmtest.Record, prefix string) bool {
	for _, r := range recs {
		if strings.HasPrefix(r.Msg, prefix) {
			return true
		}
	}
	return false
}

func pidOf(t *testing.T, h *mmtest.Harness) int {
	t.Helper()
	for i := len(h.Logs) - 1; i >= 0; i-- {
		if h.Logs[i].Msg == "exec: program started" {
			return h.Logs[i].KV["pid"].(int)
		}
	}
	t.Fatalf("no program started in %v", h.Logs)
	return 0
}

func TestKilledProgramIsRestartedAndTheMessageRetried(t *testing.T) {
	h := mmtest.New(t, "E", mmexec.New(), mmtest.Config(sh(echoSh, nil)))
	pid := pidOf(t, h)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := h.Message(map[string]any{"n": 1.0}); err != nil {
		t.Fatal(err)
	}
	if len(h.Emitted) != 1 || pidOf(t, h) == pid {
		t.Fatalf("emitted %v, logs %v", h.Emitted, h.Logs)
	}
	// A program killed between messages is restarted by the poll timer.
	pid = pidOf(t, h)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "a new program", func() bool {
		h.Fire(mmexec.PollTimer)
		return pidOf(t, h) != pid
	})
	if countErrors(h, "exec: program failed") != 2 {
		t.Fatalf("errors %v", h.Errors)
	}
}

func TestBadPrograms(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		extra  map[string]any
		want   error
	}{
		{"garbage", `read s; while read l; do echo 'hello, world'; done`, nil, mmexec.ErrGarbage},
		{"not an object", `read s; while read l; do echo '[1,2]'; done`, nil, mmexec.ErrGarbage},
		{"no ack", `read s; while read l; do echo '{"log":"thinking"}'; done`, map[string]any{"ack_timeout": 0.2}, mmexec.ErrNoAck},
		{"instant exit", `exit 3`, nil, mmexec.ErrExited},
		{"100 MB without a newline", `head -c 100000000 /dev/zero | tr '\0' x`, nil, mmexec.ErrLineTooBig},
		{"does not read stdin", `sleep 60`, map[string]any{"ack_timeout": 0.3}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mmtest.New(t, "Bad", mmexec.New(), mmtest.Config(sh(tc.script, tc.extra)))
			t0 := time.Now()
			big := map[string]any{"pad": strings.Repeat("p", 100<<10)} // fills a pipe
			err := h.Message(big)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if d := time.Since(t0); d > 10*time.Second {
				t.Fatalf("took %v", d)
			}
			if n := countErrors(h, "exec: program failed"); n != 3 {
				t.Fatalf("%d program failures reported, want one per attempt: %v", n, h.Errors)
			}
			t.Logf("%v", err)
		})
	}
}

func countErrors(h *mmtest.Harness, msg string) int {
	n := 0
	for _, r := range h.Errors {
		if strings.HasPrefix(r.Msg, msg) {
			n++
		}
	}
	return n
}

func TestMissingCommandFailsTheConfig(t *testing.T) {
	h := mmtest.New(t, "E", mmexec.New(), mmtest.Config(sh(echoSh, nil)))
	err := h.Configure(map[string]any{"command": filepath.Join(t.TempDir(), "missing")})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err %v", err)
	}
}

func TestCheckConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  map[string]any
		path string
	}{
		{map[string]any{}, "command"},
		{map[string]any{"command": ""}, "command"},
		{map[string]any{"command": "x", "args": []any{"a", 1.0}}, "args.1"},
		{map[string]any{"command": "x", "ack_timeout": -1.0}, "ack_timeout"},
		{map[string]any{"command": "x", "backoff": map[string]any{"max": "1"}}, "backoff.max"},
		{map[string]any{"command": "x", "bogus": 1.0}, "bogus"},
	} {
		err := mmexec.CheckConfig(tc.cfg)
		var located interface{ ConfigPath() []string }
		if !errors.As(err, &located) || strings.Join(located.ConfigPath(), ".") != tc.path {
			t.Errorf("%v: err %v, want at %s", tc.cfg, err, tc.path)
		}
	}
	if err := mmexec.CheckConfig(map[string]any{"command": "x", "args": []any{"a"}, "env": map[string]any{"A": "b"}}); err != nil {
		t.Fatal(err)
	}
}
