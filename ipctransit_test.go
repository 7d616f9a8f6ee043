package multimodule

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
)

// checkSharedDir checks a dir shared with IPC::Transit after a run: 0700
// throughout, every file 0600 (IPC::Transit's .lock aside, which it
// makes itself), and no non-dot file but key files in IPC::Transit's
// format, which qtrans lists without dying on any.
func checkSharedDir(t *testing.T, perl testenv.PerlTransit, dir string, want ...string) {
	t.Helper()
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil // a file going while we walk
		}
		if fi.IsDir() && fi.Mode().Perm() != 0o700 || !fi.IsDir() && fi.Mode().Perm() != 0o600 && fi.Name() != ".lock" {
			t.Errorf("%s: mode %o", path, fi.Mode().Perm())
		}
		if filepath.Dir(path) == dir && !fi.IsDir() && !strings.HasPrefix(fi.Name(), ".") {
			if b, _ := os.ReadFile(path); !strings.HasPrefix(string(b), "qid=") {
				t.Errorf("%s is not an IPC::Transit key file: %q", path, b)
			}
		}
		return nil
	})
	out, stderr, err := perl.Tool(t, 30*time.Second, "qtrans", dir, "-a")
	if err != nil || strings.Contains(out, "doorbell") {
		t.Errorf("qtrans: %v\n%s%s", err, out, stderr)
	}
	for _, q := range want {
		if !strings.Contains(out, q+" ") {
			t.Errorf("qtrans does not list %s:\n%s", q, out)
		}
	}
}

// The seed example, run as `make run` does but in a dir shared with
// IPC::Transit, takes a count from Perl's strans.
func TestIPCTransitSeedExample(t *testing.T) {
	t.Parallel()
	perl := testenv.IPCTransit(t, ".")
	counter := buildCmd(t, "./examples/counter")
	mmctl := buildCmd(t, "./cmd/mmctl")
	dir := testenv.TransitDir(t)
	mmctlRun(t, mmctl, dir, "transit", "init", "--ipc-transit", dir)
	d := startProc(t, counter, "-c", "examples/counter/config", "-s", t.TempDir(), "-T", dir, "-p", "examples")
	testenv.WaitFor(t, 10*time.Second, "the first count", func() bool {
		return d.has("Example2: received a message: 1 (howdy)")
	})
	perl.Strans(t, dir, `{"new_ct":999}`, "Example1")
	testenv.WaitFor(t, 15*time.Second, "999 then 1000", func() bool {
		return d.has("Example2: received a message: 999 (howdy)") && d.has("Example2: received a message: 1000 (howdy)")
	})
	if i, j := strings.Index(d.output(), ": 999 ("), strings.Index(d.output(), ": 1000 ("); i > j {
		t.Errorf("1000 before 999:\n%s", d.output())
	}
	// Example1's queue was made by strans; Example2's never was: nothing
	// outside the daemon sent to it.
	checkSharedDir(t, perl, dir, "Example1")
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.output())
	}
}

// What the Router forwards to a queue no task serves reaches a Perl
// receiver on it.
func TestIPCTransitRouterToPerl(t *testing.T) {
	t.Parallel()
	perl := testenv.IPCTransit(t, ".")
	counter := buildCmd(t, "./examples/counter")
	mmctl := buildCmd(t, "./cmd/mmctl")
	dir := testenv.TransitDir(t)
	mmctlRun(t, mmctl, dir, "transit", "init", "--ipc-transit", dir)
	cfg := testenv.WriteFiles(t, map[string]string{"example.cue": `
tasks: Example1: {config: outstr: "to perl", intervals: tick: 0.05}
tasks: Router: config: routes: [{match: source: "Example1", forwards: [{qname: "PerlSink"}]}]
`})
	d := startProc(t, counter, "-c", cfg, "-s", t.TempDir(), "-T", dir, "-p", "examples")
	got := perl.Rtrans(t, 30*time.Second, dir, "PerlSink", 2)
	for _, m := range got {
		if m["outstr"] != "to perl" || m["ct"] == nil {
			t.Fatalf("rtrans got %v\n%s", got, d.output())
		}
	}
	checkSharedDir(t, perl, dir, "PerlSink") // Example1's queue: never sent to from outside, never made
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.output())
	}
}
