package multimodule

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/statestore"
	"github.com/multimodule/multimodule/transit"
)

// A link another user planted where an -o file goes must not be
// followed (as root, it would append to any file): the daemon refuses to
// start, naming the file.
func TestHostileOOBLinkRefusesStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("precious\n"), 0o600)
	planted := filepath.Join(dir, "mm.err")
	if err := os.Symlink(victim, planted); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"-c", testenv.WriteFiles(t, map[string]string{"a.cue": routerOnly}), "-s", t.TempDir(),
		"-T", testenv.TransitDir(t), "-o", "error:" + planted}, make(chan os.Signal), &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), planted) || !strings.Contains(errb.String(), "symbolic link") {
		t.Fatalf("exit %d, stderr:\n%s", code, errb.String())
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Fatalf("victim written: %q", b)
	}
}

// Deleting the state dir's lock file does not let a second daemon start.
func TestHostileSecondDaemonAfterLockFileDeleted(t *testing.T) {
	t.Parallel()
	cfg := testenv.WriteFiles(t, map[string]string{"a.cue": routerOnly})
	state := t.TempDir()
	tdir := testenv.TransitDir(t)
	first := startDaemon(t, "-c", cfg, "-s", state, "-T", tdir)
	first.waitRunning(t, "first daemon running")
	if err := os.Remove(filepath.Join(state, statestore.LockFile)); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"-c", cfg, "-s", state, "-T", tdir}, make(chan os.Signal), &out, &errb); code != 1 {
		t.Fatalf("second daemon exit %d, want 1\n%s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "in use by another daemon: "+state) {
		t.Fatalf("second daemon said:\n%s", errb.String())
	}
	first.sig <- syscall.SIGTERM
	if code := first.exitCode(t); code != 0 {
		t.Fatalf("first daemon exit %d\n%s", code, first.stderr.String())
	}
}

// A 2,000-queue spray (one message whose static_forwards name 2,000
// queues) creates at most daemon: max_queues queues, and alerts.
func TestHostileQueueSprayIsBounded(t *testing.T) {
	t.Parallel()
	const limit = 50
	cfg := testenv.WriteFiles(t, map[string]string{"a.cue": routerOnly + fmt.Sprintf("daemon: max_queues: %d\n", limit)})
	tdir := testenv.TransitDir(t)
	d := startDaemon(t, "-c", cfg, "-s", t.TempDir(), "-T", tdir)
	d.waitRunning(t, "daemon running")
	defer func() {
		d.sig <- syscall.SIGTERM
		d.exitCode(t)
	}()
	hop := make([]any, 2000)
	for i := range hop {
		hop[i] = map[string]any{"forward": map[string]any{"qname": fmt.Sprintf("spray%04d", i)}}
	}
	tr, err := transit.Open(transit.Options{Dir: tdir})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Send("Router", map[string]any{"static_forwards": []any{hop}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the queue limit alert", func() bool {
		return strings.Contains(d.stderr.String(), "too many queues created on demand")
	})
	names, err := tr.Names()
	if err != nil {
		t.Fatal(err)
	}
	sprayed := 0
	for _, n := range names {
		if strings.HasPrefix(n, "spray") {
			sprayed++
		}
	}
	if sprayed != limit {
		t.Fatalf("%d sprayed queues created, want %d", sprayed, limit)
	}
	if n := strings.Count(d.stderr.String(), "channel=alert task=MultiModule metric=queues_created"); n != 1 {
		t.Fatalf("%d alerts, want 1:\n%s", n, d.stderr.String())
	}
	reply, err := control.Request(tr, control.DefaultQueue, control.Op{Type: control.Status}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m := reply.Status.Daemon.Metrics; m["queues_created"] != limit || m["max_queues"] != limit {
		t.Fatalf("status metrics %v", m)
	}
	for _, line := range strings.Split(d.stderr.String(), "\n") {
		if len(line) > 4096 {
			t.Fatalf("a log line of %d bytes: %.300s", len(line), line)
		}
	}
}

// A 5 MB junk message on the control queue is logged as an excerpt.
func TestHostileJunkLogIsBounded(t *testing.T) {
	t.Parallel()
	tdir := testenv.TransitDir(t)
	d := startDaemon(t, "-c", testenv.WriteFiles(t, map[string]string{"a.cue": routerOnly}), "-s", t.TempDir(), "-T", tdir)
	d.waitRunning(t, "daemon running")
	tr, err := transit.Open(transit.Options{Dir: tdir})
	if err != nil {
		t.Fatal(err)
	}
	junk := strings.Repeat("J", 5<<20)
	if err := tr.Send(control.DefaultQueue, map[string]any{"junk": junk}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the junk refused", func() bool {
		return strings.Contains(d.stderr.String(), "not a control message")
	})
	d.sig <- syscall.SIGTERM
	d.exitCode(t)
	for _, s := range []string{d.stderr.String(), d.stdout.String()} {
		for _, line := range strings.Split(s, "\n") {
			if len(line) > 4096 {
				t.Fatalf("a log line of %d bytes: %.300s", len(line), line)
			}
		}
	}
	if !strings.Contains(d.stderr.String(), "bytes in all") {
		t.Fatalf("the excerpt does not give the length:\n%.2000s", d.stderr.String())
	}
}
