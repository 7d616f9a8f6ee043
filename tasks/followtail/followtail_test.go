package followtail_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/tasks/followtail"
)

func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func lines(h *mmtest.Harness) []string {
	var out []string
	for _, m := range h.Emitted {
		out = append(out, m["line"].(string))
	}
	h.Emitted = nil
	return out
}

func expect(t *testing.T, h *mmtest.Harness, want ...string) {
	t.Helper()
	h.Fire(followtail.PollTimer)
	if got := lines(h); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("lines %q, want %q", got, want)
	}
}

func TestFollowRotateTruncateRestart(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "app.log")
	appendLines(t, log, "old1", "old2")
	cfg := map[string]any{"paths": []any{filepath.Join(dir, "*.log")}}
	h := mmtest.New(t, "Tail", followtail.New(), mmtest.Config(cfg))
	expect(t, h) // start_at end: what was there is skipped
	appendLines(t, log, "a", "b")
	expect(t, h, "a", "b")

	// A line being written waits for its newline.
	f, _ := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("hal")
	expect(t, h)
	f.WriteString("f\n")
	f.Close()
	expect(t, h, "half")

	// Rotation: lines written to the old file after the rename are read
	// before the new file's.
	appendLines(t, log, "c")
	if err := os.Rename(log, log+".1"); err != nil {
		t.Fatal(err)
	}
	appendLines(t, log+".1", "d")
	appendLines(t, log, "e")
	expect(t, h, "c", "d", "e")

	// Truncation (seen when the size drops below the offset): read again
	// from the start.
	if err := os.Truncate(log, 0); err != nil {
		t.Fatal(err)
	}
	expect(t, h)
	appendLines(t, log, "x")
	expect(t, h, "x")

	// A restart goes on where the state says: nothing repeated, nothing
	// skipped, a rotation while stopped included.
	appendLines(t, log, "f")
	h.Restart(followtail.New(), cfg)
	appendLines(t, log, "g")
	os.Rename(log, filepath.Join(dir, "app.old"))
	appendLines(t, log, "h")
	expect(t, h, "f", "g", "h")

	// A file that appears later is read from its start.
	appendLines(t, filepath.Join(dir, "new.log"), "n1")
	expect(t, h, "n1")
}

func TestJSONAndLongLines(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "j")
	cfg := map[string]any{"paths": []any{p}, "json": true, "start_at": "beginning", "max_line": 64.0}
	appendLines(t, p, `{"level":"warn","n":1}`, `not json`, strings.Repeat("z", 150))
	h := mmtest.New(t, "Tail", followtail.New(), mmtest.Config(cfg))
	h.Fire(followtail.PollTimer)
	e := h.Emitted
	if len(e) != 5 || e[0]["level"] != "warn" || e[0]["file"] != p || e[1]["json_error"] == nil ||
		e[2]["truncated"] != true || len(e[2]["line"].(string)) != 64 || e[4]["line"] != strings.Repeat("z", 22) {
		t.Fatalf("emitted %v", e)
	}
}

func TestCheckConfig(t *testing.T) {
	for _, c := range []map[string]any{
		{},
		{"paths": []any{}},
		{"paths": []any{"[x"}},
		{"paths": []any{"a"}, "start_at": "middle"},
		{"paths": []any{"a"}, "poll": 0.0},
	} {
		var located interface{ ConfigPath() []string }
		if err := followtail.CheckConfig(c); !errors.As(err, &located) {
			t.Errorf("%v: %v", c, err)
		}
	}
	if err := followtail.CheckConfig(map[string]any{"paths": []any{"/var/log/*.log"}, "json": true}); err != nil {
		t.Fatal(err)
	}
}
