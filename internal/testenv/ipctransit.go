package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PerlTransit runs the real Perl IPC::Transit (its strans, rtrans and
// qtrans, or a snippet using the library) from shared/ipc-transit beside
// the checkout.
type PerlTransit struct{ dir string }

// IPCTransit finds IPC::Transit at repoRoot/../shared/ipc-transit. It
// skips the test when perl or that copy is absent, and fails it when the
// copy does not load (its Debian packages are missing: .ci/run installs
// them).
func IPCTransit(t testing.TB, repoRoot string) PerlTransit {
	t.Helper()
	if testing.Short() {
		t.Skip("runs Perl IPC::Transit")
	}
	if _, err := exec.LookPath("perl"); err != nil {
		t.Skip("perl is not installed: the IPC::Transit interoperation is not tested")
	}
	dir, err := filepath.Abs(filepath.Join(repoRoot, "..", "shared", "ipc-transit"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "lib", "IPC", "Transit.pm")); err != nil {
		t.Skipf("IPC::Transit is not at %s (shared/ipc-transit beside the checkout): the interoperation is not tested", dir)
	}
	p := PerlTransit{dir: dir}
	if _, stderr, err := p.Eval(t, 30*time.Second, t.TempDir(), "1"); err != nil {
		t.Fatalf("IPC::Transit does not load (apt-get install perl libjson-perl libsereal-encoder-perl "+
			"libsereal-decoder-perl libhttp-lite-perl; .ci/run does): %v\n%s", err, stderr)
	}
	return p
}

func (p PerlTransit) run(t testing.TB, timeout time.Duration, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "perl", append([]string{"-I", filepath.Join(p.dir, "lib"), "-I", filepath.Join(p.dir, "stubs")}, args...)...)
	cmd.Dir = p.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return stdout.String(), stderr.String(), err
}

// Tool runs bin/NAME (strans, rtrans, qtrans) with -P configDir.
func (p PerlTransit) Tool(t testing.TB, timeout time.Duration, name, configDir string, args ...string) (string, string, error) {
	t.Helper()
	return p.run(t, timeout, append([]string{filepath.Join(p.dir, "bin", name), "-P", configDir}, args...)...)
}

// Eval runs Perl code with IPC::Transit loaded and its config dir set.
func (p PerlTransit) Eval(t testing.TB, timeout time.Duration, configDir, code string) (string, string, error) {
	t.Helper()
	return p.run(t, timeout, "-MIPC::Transit", "-e",
		"$IPC::Transit::config_dir = shift; "+code, configDir)
}

// Strans sends msg (JSON) to queue with strans, failing the test if it
// fails.
func (p PerlTransit) Strans(t testing.TB, configDir, msg, queue string) {
	t.Helper()
	out, stderr, err := p.Tool(t, 30*time.Second, "strans", configDir, msg, queue)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out), "1") {
		t.Fatalf("strans %s %s: %v\n%s%s", msg, queue, err, out, stderr)
	}
}

// Rtrans receives n messages from queue with rtrans -c n, within timeout.
func (p PerlTransit) Rtrans(t testing.TB, timeout time.Duration, configDir, queue string, n int) []map[string]any {
	t.Helper()
	out, stderr, err := p.Tool(t, timeout, "rtrans", configDir, "-c", strconv.Itoa(n), queue)
	if err != nil {
		t.Fatalf("rtrans %s: %v\n%s%s", queue, err, out, stderr)
	}
	// The first line says which config dir it uses; then one pretty
	// JSON object per message.
	_, body, _ := strings.Cut(out, "\n")
	dec := json.NewDecoder(strings.NewReader(body))
	var msgs []map[string]any
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("rtrans %s printed %q: %v (stderr %s)", queue, out, err, stderr)
		}
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("rtrans %s: %d messages, want %d:\n%s%s", queue, len(msgs), n, out, stderr)
	}
	return msgs
}
