package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
)

// mmctl runs the command in-process against the test's transit dir.
func mmctl(t *testing.T, dir, stdin string, argv ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(append([]string{"-T", dir}, argv...), strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestSendRecvLargeMessageUnchanged(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	big := strings.Repeat("payload ", 300*1024/8)
	in, _ := json.Marshal(map[string]any{"big": big, "n": 3.5, "nested": map[string]any{"a": []any{1.0, "x"}}})
	if code, _, errs := mmctl(t, dir, string(in), "send", "--create", "bigq", "-"); code != 0 {
		t.Fatalf("send: exit %d: %s", code, errs)
	}
	code, out, errs := mmctl(t, dir, "", "recv", "bigq", "--timeout", "5s")
	if code != 0 {
		t.Fatalf("recv: exit %d: %s", code, errs)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("recv printed %d bytes that are not one JSON object: %v", len(out), err)
	}
	if _, ok := got[".ipc_transit_meta"]; ok {
		t.Fatal("recv printed the transport's metadata without --meta")
	}
	var want map[string]any
	json.Unmarshal(in, &want)
	if !equalJSON(got, want) {
		t.Fatal("the 300 KB message changed on its way")
	}
	if left := testenv.SpillFiles(t, dir); len(left) != 0 {
		t.Fatalf("spill files left behind: %v", left)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestRecvSeveralAsJSONLines(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	for _, m := range []string{`{"i":1}`, `{"i":2,"html":"<&>"}`, `{"i":3}`} {
		if code, _, errs := mmctl(t, dir, "", "send", "--create", "q", m); code != 0 {
			t.Fatal(errs)
		}
	}
	code, out, errs := mmctl(t, dir, "", "recv", "q", "-n", "2", "--timeout", "5s")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.Contains(lines[1], `"html":"<&>"`) {
		t.Fatalf("exit %d, lines %q, stderr %s", code, lines, errs)
	}
	code, out, _ = mmctl(t, dir, "", "queues", "-o", "json")
	var stats []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &stats) != nil || len(stats) != 1 || stats[0]["messages"] != 1.0 {
		t.Fatalf("queues: exit %d: %s", code, out)
	}
	code, out, _ = mmctl(t, dir, "", "queues")
	if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "q ") {
		t.Fatalf("queues table: %s", out)
	}
	// An empty queue times out.
	mmctl(t, dir, "", "recv", "q") // the third
	if code, _, errs := mmctl(t, dir, "", "recv", "q", "--timeout", "50ms"); code != 1 || !strings.Contains(errs, "timed out after 50ms: received 0 of 1") {
		t.Fatalf("recv of an empty queue: exit %d: %s", code, errs)
	}
}

func TestErrorsAndExitCodes(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		argv []string
		code int
		want string
	}{
		{"invalid JSON", []string{"send", "q", `{"a":`}, 1, "not sent: invalid JSON message"},
		{"not an object", []string{"send", "q", `[1,2]`}, 1, "must be a JSON object"},
		{"bad queue name", []string{"send", "../etc", `{}`}, 1, "invalid queue name"},
		{"recv of no such queue", []string{"recv", "nosuchqueue", "--timeout", "50ms"}, 1, "no such queue: nosuchqueue"},
		{"missing argument", []string{"send", "q"}, 2, "send takes 2 argument(s)"},
		{"unknown flag", []string{"recv", "q", "--bogus"}, 2, "unknown flag: --bogus"},
		{"bad -n", []string{"recv", "q", "-n", "0"}, 2, "-n must be at least 1"},
		{"bad output", []string{"queues", "-o", "yaml"}, 2, "want table or json"},
		{"no daemon", []string{"status"}, 1, "no daemon serves control queue MultiModule_control"},
		{"no daemon to clear", []string{"clear", "X"}, 1, "no daemon serves control queue"},
		{"bad reply timeout", []string{"status", "--reply-timeout", "0s"}, 2, "--reply-timeout must be positive"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := mmctl(t, dir, "", tt.argv...)
			if code != tt.code || !strings.Contains(errs, tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errs, tt.code, tt.want)
			}
		})
	}
}

func TestNoDaemonLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	t0 := time.Now()
	code, _, _ := mmctl(t, dir, "", "shutdown")
	if code != 1 || time.Since(t0) > time.Second {
		t.Fatalf("exit %d after %v: want a quick failure", code, time.Since(t0))
	}
	// Nothing was queued for a daemon started later, nor created.
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("transit dir after a refused shutdown: %v", err)
	}
}

// Read-only commands create nothing; send refuses a queue nobody serves
// and no key file names, unless --create; queues rm removes; recv shows
// the metadata only with --meta.
func TestFootguns(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	for _, argv := range [][]string{{"status"}, {"queues"}, {"recv", "q", "--timeout", "10ms"}, {"send", "q", "{}"},
		{"queues", "rm", "q"}, {"apply"}, {"clear", "X"}, {"shutdown"}, {"logs", "X"}, {"gc"}} {
		if code, _, errs := mmctl(t, dir, "", argv...); code == 0 {
			t.Errorf("%v without a transit dir: exit 0: %s", argv, errs)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%v created the transit dir %s", argv, dir)
		}
	}
	if code, _, errs := mmctl(t, dir, "", "send", "--create", "real", `{"a":1}`); code != 0 {
		t.Fatal(errs)
	}
	code, _, errs := mmctl(t, dir, "", "send", "raal", `{"a":1}`)
	if code != 1 || !strings.Contains(errs, "no such queue: raal") || !strings.Contains(errs, "--create") {
		t.Fatalf("send to a typo: exit %d: %s", code, errs)
	}
	if code, _, errs := mmctl(t, dir, "", "send", "real", `{"a":2}`); code != 0 {
		t.Fatalf("send to an existing queue: %s", errs)
	}
	if code, out, _ := mmctl(t, dir, "", "recv", "real", "--meta"); code != 0 || !strings.Contains(out, "send_ts") {
		t.Fatalf("recv --meta: %s", out)
	}
	if code, out, errs := mmctl(t, dir, "", "queues", "rm", "real", "nosuch"); code != 1 || out != "removed real\n" ||
		!strings.Contains(errs, "no such queue: nosuch") {
		t.Fatalf("queues rm: exit %d: %s%s", code, out, errs)
	}
	if code, out, _ := mmctl(t, dir, "", "queues", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("queues after rm: %s", out)
	}
	for _, q := range []string{"one", "two"} {
		if code, _, errs := mmctl(t, dir, "", "send", "--create", q, `{"a":1}`); code != 0 {
			t.Fatal(errs)
		}
	}
	if code, _, errs := mmctl(t, dir, "", "queues", "rm", "--all", "one"); code != 2 || !strings.Contains(errs, "not both") {
		t.Fatalf("queues rm --all NAME: exit %d: %s", code, errs)
	}
	if code, out, errs := mmctl(t, dir, "", "queues", "rm", "--all"); code != 0 || out != "removed one\nremoved two\n" {
		t.Fatalf("queues rm --all: exit %d: %s%s", code, out, errs)
	}
	if code, out, _ := mmctl(t, dir, "", "queues", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("queues after rm --all: %s", out)
	}
}
