package runner_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/tasks/runner"
)

// num reads a number of a result, whatever its Go type.
func num(t *testing.T, v any) float64 {
	t.Helper()
	switch x := v.(type) {
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case float64:
		return x
	}
	t.Fatalf("not a number: %#v", v)
	return 0
}

// sh is a config running script with /bin/sh (as a program: no shell
// option involved).
func sh(script string, extra map[string]any) map[string]any {
	c := map[string]any{"command": "/bin/sh", "args": []any{"-c", script}}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func only(t *testing.T, h *mmtest.Harness) map[string]any {
	t.Helper()
	if len(h.Emitted) != 1 {
		t.Fatalf("emitted %d messages, want 1: %v", len(h.Emitted), h.Emitted)
	}
	return h.Emitted[0]
}

func TestResultOfARun(t *testing.T) {
	h := mmtest.New(t, "R", runner.New(), mmtest.Config(sh(`echo out; echo err >&2; exit 3`, nil)))
	if err := h.Message(map[string]any{"id": "a1"}); err != nil {
		t.Fatal(err)
	}
	res := only(t, h)
	if num(t, res["exit_code"]) != 3 || res["stdout"] != "out\n" || res["stderr"] != "err\n" ||
		res["timed_out"] != false || res["source"] != "R" || res["error"] != nil {
		t.Fatalf("result %v", res)
	}
	if req, _ := res["request"].(map[string]any); req["id"] != "a1" {
		t.Fatalf("request %v", res["request"])
	}
	if d := num(t, res["duration"]); d <= 0 || d > 10 {
		t.Fatalf("duration %v", d)
	}

	// false: a non-zero exit is a result, not a failure.
	h = mmtest.New(t, "R", runner.New(), mmtest.Config(map[string]any{"command": "false", "to": "Results"}))
	if err := h.Message(map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if len(h.Sent) != 1 || h.Sent[0].Queue != "Results" || num(t, h.Sent[0].Msg["exit_code"]) != 1 || len(h.Emitted) != 0 {
		t.Fatalf("sent %v, emitted %v", h.Sent, h.Emitted)
	}
}

// TestFieldsAreWholeArgumentsNeverScript: message fields reach the
// program as arguments only when arg_fields names them, with or without
// a shell, and never as shell text.
func TestFieldsAreWholeArgumentsNeverScript(t *testing.T) {
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	hostile := "x; touch " + pwned + " $(touch " + pwned + ")"
	msg := map[string]any{"name": hostile, "n": 2.5, "more": []any{"b c", "d"}, "ignored": "touch " + pwned}

	h := mmtest.New(t, "R", runner.New(), mmtest.Config(map[string]any{
		"command": "printf", "args": []any{"[%s]"}, "arg_fields": []any{"name", "n", "more"}}))
	if err := h.Message(msg); err != nil {
		t.Fatal(err)
	}
	if got, want := only(t, h)["stdout"], "["+hostile+"][2.5][b c][d]"; got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}

	h = mmtest.New(t, "R", runner.New(), mmtest.Config(map[string]any{
		"command": `printf '<%s>' "$@"`, "shell": true, "args": []any{"fixed"}, "arg_fields": []any{"name"}}))
	if err := h.Message(msg); err != nil {
		t.Fatal(err)
	}
	if got, want := only(t, h)["stdout"], "<fixed><"+hostile+">"; got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("a message field ran as shell text")
	}

	// A field missing or of the wrong type is the message's error, and
	// its result says so; nothing runs.
	for _, bad := range []map[string]any{{}, {"name": map[string]any{}}, {"name": []any{1.0}}} {
		h.Reset()
		err := h.Message(bad)
		if !errors.Is(err, runner.ErrArgs) || only(t, h)["error"] == nil {
			t.Fatalf("%v: err %v, result %v", bad, err, h.Emitted)
		}
	}
}

// TestTimeoutKillsTheProcessGroup: a run past its timeout is killed with
// everything it started, and the handler returns soon after.
func TestTimeoutKillsTheProcessGroup(t *testing.T) {
	h := mmtest.New(t, "R", runner.New(), mmtest.Config(sh(`sleep 300 & echo $!; sleep 300`, map[string]any{"timeout": 0.3})))
	began := time.Now()
	err := h.Message(map[string]any{})
	if !errors.Is(err, runner.ErrTimeout) {
		t.Fatalf("err %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("the handler took %v", took)
	}
	res := only(t, h)
	if res["timed_out"] != true || res["signal"] != "killed" || num(t, res["exit_code"]) != -1 || res["error"] == nil {
		t.Fatalf("result %v", res)
	}
	child, err := strconv.Atoi(strings.TrimSpace(res["stdout"].(string)))
	if err != nil {
		t.Fatalf("stdout %q", res["stdout"])
	}
	testenv.WaitFor(t, 5*time.Second, "the background sleep to be gone", func() bool {
		return syscall.Kill(child, 0) != nil
	})
}

// TestOutputFloodIsBounded: 20 MB of stdout (no newline) and stderr keep
// only their tails; the totals are counted.
func TestOutputFloodIsBounded(t *testing.T) {
	h := mmtest.New(t, "R", runner.New(), mmtest.Config(sh(
		`head -c 20000000 /dev/zero | tr '\0' x; echo; echo END; head -c 5000000 /dev/zero >&2`,
		map[string]any{"tail_bytes": 100.0})))
	if err := h.Message(map[string]any{}); err != nil {
		t.Fatal(err)
	}
	res := only(t, h)
	out := res["stdout"].(string)
	if len(out) != 100 || !strings.HasSuffix(out, "x\nEND\n") || num(t, res["stdout_bytes"]) != 20000005 {
		t.Fatalf("stdout %d bytes %q, total %v", len(out), out, res["stdout_bytes"])
	}
	if len(res["stderr"].(string)) != 100 || num(t, res["stderr_bytes"]) != 5000000 {
		t.Fatalf("stderr total %v", res["stderr_bytes"])
	}
}

// TestJSONLines: each stdout line that is an object is a message of its
// own, up to max_messages; garbage and over-long lines are counted;
// stdin_message hands the program the message.
func TestJSONLines(t *testing.T) {
	script := `read -r m; echo "$m"; echo '{"n": 1}'; echo 'not json'; echo '[1]'
head -c 5000 /dev/zero | tr '\0' a; echo
echo '{"n": 2}'; echo '{"n": 3}'; printf '{"n": 4}'`
	h := mmtest.New(t, "R", runner.New(), mmtest.Config(sh(script, map[string]any{
		"output": "json_lines", "stdin_message": true, "max_line": 1024.0, "max_messages": 3.0})))
	if err := h.Message(map[string]any{"hello": "world"}); err != nil {
		t.Fatal(err)
	}
	if len(h.Emitted) != 4 {
		t.Fatalf("emitted %v", h.Emitted)
	}
	if h.Emitted[0]["hello"] != "world" || h.Emitted[1]["n"] != 1.0 || h.Emitted[2]["n"] != 2.0 || h.Emitted[2]["source"] != "R" {
		t.Fatalf("emitted %v", h.Emitted)
	}
	res := h.Emitted[3]
	// n: 3 and n: 4 (no newline) are past max_messages, with the long one.
	if num(t, res["lines"]) != 3 || num(t, res["lines_dropped"]) != 3 || num(t, res["json_errors"]) != 2 ||
		!strings.Contains(res["json_error"].(string), "not json") || num(t, res["exit_code"]) != 0 {
		t.Fatalf("result %v", res)
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []map[string]any{
		{},
		{"command": ""},
		{"command": "true", "output": "lines"},
		{"command": "true", "timeout": 0.0},
		{"command": "true", "arg_fields": []any{""}},
		{"command": "true", "tail_bytes": 2e6},
		{"command": "true", "shel": true},
	} {
		var located interface{ ConfigPath() []string }
		if err := runner.CheckConfig(c); !errors.As(err, &located) {
			t.Errorf("%v: %v", c, err)
		}
	}
	// A program that is not there fails the config (and the task's
	// start), not each message.
	h := mmtest.New(t, "R", runner.New(), mmtest.Config(map[string]any{"command": "true"}))
	if err := h.Configure(map[string]any{"command": "/no/such/program"}); !errors.Is(err, runner.ErrStart) {
		t.Fatalf("err %v", err)
	}
}
