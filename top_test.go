package multimodule

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
)

// mmctl top under a real terminal: a detached tmux session of fixed size
// runs it against a daemon; its screen shows the tasks; q ends it with
// exit 0. With MM_TOP_CAPTURE=FILE the screen is saved there (that is how
// docs/mmctl-top.txt is made).
func TestTopInTmux(t *testing.T) {
	t.Parallel()
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("no tmux on PATH")
	}
	mmctl := buildCmd(t, "./cmd/mmctl")
	g := startGitops(t, map[string]string{
		"a.cue": probeFile("Alpha", "1") + probeFile("Beta", "1") + "tasks: Router: config: routes: []\n",
	})
	testenv.WaitFor(t, 10*time.Second, "Alpha and Beta running", func() bool {
		return g.task(t, "Alpha").Status == "running" && g.task(t, "Beta").Status == "running"
	})
	dir := t.TempDir()
	sock, exitFile := filepath.Join(dir, "tmux.sock"), filepath.Join(dir, "exit")
	run := func(args ...string) (string, error) {
		cmd := exec.Command(tmux, append([]string{"-S", sock}, args...)...)
		cmd.Env = append(os.Environ(), "TMUX=") // not inside whatever tmux runs the test
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// The exit status goes to a file: the session ends with mmctl.
	script := mmctl + " -T " + g.transit + " top --interval 200ms; echo $? > " + exitFile
	if out, err := run("new-session", "-d", "-s", "top", "-x", "100", "-y", "20", script); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(func() { run("kill-server") })
	var screen string
	testenv.WaitFor(t, 15*time.Second, "top showing the tasks", func() bool {
		screen, _ = run("capture-pane", "-p", "-t", "top")
		return strings.Contains(screen, "NAME") && strings.Contains(screen, "\nAlpha ") &&
			strings.Contains(screen, "\nBeta ") && strings.Contains(screen, "\nRouter ")
	})
	if !strings.Contains(screen, "sort: cpu") {
		t.Fatalf("screen:\n%s", screen)
	}
	if out, err := run("send-keys", "-t", "top", "b"); err != nil {
		t.Fatalf("send-keys b: %v\n%s", err, out)
	}
	testenv.WaitFor(t, 10*time.Second, "sorted by backlog", func() bool {
		screen, _ = run("capture-pane", "-p", "-t", "top")
		return strings.Contains(screen, "sort: backlog")
	})
	if path := os.Getenv("MM_TOP_CAPTURE"); path != "" {
		testenv.WaitFor(t, 10*time.Second, "CPU figures for the capture", func() bool {
			screen, _ = run("capture-pane", "-p", "-t", "top")
			return strings.Count(screen, " 0.0") >= 3
		})
		if err := os.WriteFile(path, []byte(strings.TrimRight(screen, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := run("send-keys", "-t", "top", "q"); err != nil {
		t.Fatalf("send-keys q: %v\n%s", err, out)
	}
	var code string
	testenv.WaitFor(t, 10*time.Second, "mmctl top to exit", func() bool {
		b, err := os.ReadFile(exitFile)
		code = strings.TrimSpace(string(b))
		return err == nil && code != ""
	})
	if code != "0" {
		t.Fatalf("mmctl top exit %s after q", code)
	}
}
