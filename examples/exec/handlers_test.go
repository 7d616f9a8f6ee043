// Package handlers_test runs the example builtin.Exec handlers under the
// Exec task (real processes), as the daemon would.
package handlers_test

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/multimodule/multimodule/mmtest"
	mmexec "github.com/multimodule/multimodule/tasks/exec"
)

func run(t *testing.T, tool, handler string, lang string) {
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s not installed (.ci/run installs it)", tool)
	}
	path, err := filepath.Abs(handler)
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{"command": path}
	h := mmtest.New(t, "Handler", mmexec.New(), mmtest.Config(cfg), mmtest.State(map[string]any{"n": 10}))
	for _, line := range []string{"one", "two"} {
		if err := h.Message(map[string]any{"line": line}); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.Emitted) != 2 || h.Emitted[1]["line"] != "two" || h.Emitted[1]["seq"] != 12.0 ||
		h.Emitted[1]["handled_by"] != lang || h.Emitted[1]["source"] != "Handler" {
		t.Fatalf("emitted %v", h.Emitted)
	}
	// The count lives in the task's state: a new program goes on from it.
	h.Restart(mmexec.New(), cfg)
	if err := h.Message(map[string]any{"line": "three"}); err != nil {
		t.Fatal(err)
	}
	if h.Emitted[0]["seq"] != 13.0 || h.State()["n"] != 13.0 {
		t.Fatalf("after restart: emitted %v, state %v", h.Emitted, h.State())
	}
}

func TestPythonHandler(t *testing.T) {
	run(t, "python3", "handler.py", "python")
}

func TestShellJQHandler(t *testing.T) {
	run(t, "jq", "handler.sh", "jq")
}
