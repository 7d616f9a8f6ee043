package multimodule

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// probe is a test kind: it reports each config it is given, and counts
// the messages it gets in its state.
type probe struct{}

var probeConfigs = struct {
	sync.Mutex
	seen map[string][]string // task -> the "v" of each SetConfig
}{seen: map[string][]string{}}

func (probe) Stateful() {}
func (probe) SetConfig(ctx Context, cfg map[string]any) error {
	probeConfigs.Lock()
	defer probeConfigs.Unlock()
	probeConfigs.seen[ctx.Name()] = append(probeConfigs.seen[ctx.Name()], fmt.Sprint(cfg["v"]))
	return nil
}
func (probe) Message(ctx Context, m Message) error {
	n, _ := ctx.State()["n"].(float64)
	ctx.State()["n"] = n + 1
	if reply, ok := m["reply_to"].(string); ok {
		return ctx.Send(reply, Message{"n": n + 1})
	}
	return nil
}

func init() { Register("itest.Probe", func() Task { return probe{} }) }

func lastConfig(task string) string {
	probeConfigs.Lock()
	defer probeConfigs.Unlock()
	s := probeConfigs.seen[task]
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// gitopsDaemon runs the daemon in this process on a config dir of its own.
type gitopsDaemon struct {
	*testDaemon
	cfg, transit string
	tr           *transit.Transit
}

func startGitops(t *testing.T, files map[string]string) *gitopsDaemon {
	t.Helper()
	g := &gitopsDaemon{cfg: testenv.WriteFiles(t, files), transit: testenv.TransitDir(t)}
	g.testDaemon = startDaemon(t, "-c", g.cfg, "-s", t.TempDir(), "-T", g.transit, "-p", "itest")
	t.Cleanup(func() {
		g.sig <- syscall.SIGTERM
		if code := g.exitCode(t); code != 0 {
			t.Errorf("daemon exit %d\n%s", code, g.stderr.String())
		}
	})
	var err error
	if g.tr, err = transit.Open(transit.Options{Dir: g.transit}); err != nil {
		t.Fatal(err)
	}
	g.waitRunning(t, "the daemon")
	return g
}

func (g *gitopsDaemon) status(t *testing.T) *control.StatusReply {
	t.Helper()
	reply, err := control.Request(g.tr, control.DefaultQueue, control.Op{Type: control.Status}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if reply.Status == nil {
		t.Fatalf("status reply without a status: %+v", reply)
	}
	return reply.Status
}

// task returns the named task's status entry (Name "" when there is none).
func (g *gitopsDaemon) task(t *testing.T, name string) control.TaskStatus {
	t.Helper()
	for _, tk := range g.status(t).Tasks {
		if tk.Name == name {
			return tk
		}
	}
	return control.TaskStatus{}
}

// count asks a probe for its message count (its state).
func (g *gitopsDaemon) count(t *testing.T, task string) float64 {
	t.Helper()
	reply := fmt.Sprintf("reply-%s-%d", task, time.Now().UnixNano())
	q, _ := g.tr.Queue(reply)
	defer g.tr.Remove(reply)
	if err := g.tr.Send(task, map[string]any{"reply_to": reply}); err != nil {
		t.Fatal(err)
	}
	var n float64
	testenv.WaitFor(t, 5*time.Second, "the probe's count", func() bool {
		d, _ := q.Receive(false)
		if len(d.Msgs) == 1 {
			n = d.Msgs[0]["n"].(float64)
			return true
		}
		return false
	})
	return n
}

func probeFile(task, v string) string {
	return fmt.Sprintf("tasks: %s: {kind: \"Probe\", config: v: %q}\n", task, v)
}

func TestEveryKindOfSaveIsAppliedAndStateKept(t *testing.T) {
	t.Parallel()
	g := startGitops(t, map[string]string{"p.cue": probeFile("Saves", "v0")})
	path := filepath.Join(g.cfg, "p.cue")
	g.count(t, "Saves")
	saves := []struct {
		name string
		save func(content string)
	}{
		{"atomic", func(c string) {
			tmp := filepath.Join(g.cfg, ".p.cue.tmp")
			os.WriteFile(tmp, []byte(c), 0o600)
			os.Rename(tmp, path)
		}},
		{"vim-style", func(c string) {
			os.Rename(path, path+"~")
			os.WriteFile(path, []byte(c), 0o600)
			os.Remove(path + "~")
		}},
		{"in place", func(c string) {
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			f.WriteString(c)
			f.Close()
		}},
	}
	for i, s := range saves {
		v := fmt.Sprintf("v%d", i+1)
		t0 := time.Now()
		s.save(probeFile("Saves", v))
		testenv.WaitFor(t, 5*time.Second, s.name+" save applied", func() bool { return lastConfig("Saves") == v })
		t.Logf("%s save applied after %v", s.name, time.Since(t0).Round(time.Millisecond))
		// Reconfigured in place: the state carried over.
		if n := g.count(t, "Saves"); n != float64(i+2) {
			t.Fatalf("after the %s save the count is %v, want %d: state lost", s.name, n, i+2)
		}
	}
	if tk := g.task(t, "Saves"); tk.Generation == nil || *tk.Generation != 4 || !generationsMatch(tk) {
		t.Fatalf("generations %v/%v, want 4/4", tk.ObservedGeneration, tk.Generation)
	}
}

func TestFilesStartStopAndABrokenFileChangesNothing(t *testing.T) {
	t.Parallel()
	g := startGitops(t, map[string]string{"a.cue": probeFile("A", "a")})
	// A new file starts its tasks.
	os.WriteFile(filepath.Join(g.cfg, "b.cue"), []byte(probeFile("B", "b")), 0o600)
	testenv.WaitFor(t, 5*time.Second, "B running", func() bool {
		tk := g.task(t, "B")
		return tk.Status == "running"
	})
	// A broken file stops nothing, and status says where it is broken.
	os.WriteFile(filepath.Join(g.cfg, "b.cue"), []byte("tasks: B: {kind: \"Probe\"\n  external: \"yes\"}\n"), 0o600)
	testenv.WaitFor(t, 5*time.Second, "the config error in status", func() bool {
		e := g.status(t).Daemon.ConfigError
		return strings.Contains(e, filepath.Join(g.cfg, "b.cue")+":2:13") && strings.Contains(e, "tasks.B.external")
	})
	for _, name := range []string{"A", "B"} {
		if tk := g.task(t, name); tk.Status != "running" {
			t.Fatalf("%s is %v after a broken file, want running", name, tk.Status)
		}
	}
	// Fixing it applies it.
	os.WriteFile(filepath.Join(g.cfg, "b.cue"), []byte(probeFile("B", "fixed")), 0o600)
	testenv.WaitFor(t, 5*time.Second, "the fix applied", func() bool { return lastConfig("B") == "fixed" })
	if e := g.status(t).Daemon.ConfigError; e != "" {
		t.Fatalf("config error still shown: %v", e)
	}
	// disabled: true stops it and keeps its state; enabling resumes it.
	g.count(t, "B")
	os.WriteFile(filepath.Join(g.cfg, "b.cue"), []byte(probeFile("B", "fixed")+"tasks: B: disabled: true\n"), 0o600)
	testenv.WaitFor(t, 5*time.Second, "B disabled", func() bool { return g.task(t, "B").Status == "disabled" })
	os.WriteFile(filepath.Join(g.cfg, "b.cue"), []byte(probeFile("B", "fixed")), 0o600)
	testenv.WaitFor(t, 5*time.Second, "B back", func() bool { return g.task(t, "B").Status == "running" })
	if n := g.count(t, "B"); n != 2 {
		t.Fatalf("count after disable and enable %v, want 2: state lost", n)
	}
	// A removed file stops its tasks.
	os.Remove(filepath.Join(g.cfg, "b.cue"))
	testenv.WaitFor(t, 5*time.Second, "B gone", func() bool { return g.task(t, "B").Name == "" })
	if g.task(t, "A").Status != "running" {
		t.Fatal("A stopped too")
	}
}

// failing is a test kind whose SetConfig fails unless told otherwise.
type failing struct{}

func (failing) Message(Context, Message) error { return nil }
func (failing) SetConfig(_ Context, cfg map[string]any) error {
	if cfg["ok"] != true {
		return fmt.Errorf("told to fail")
	}
	return nil
}

func init() { Register("itest.Failing", func() Task { return failing{} }) }

func TestFailingStartBacksOffThenHoldsUntilCleared(t *testing.T) {
	t.Parallel()
	g := startGitops(t, map[string]string{"f.cue": `tasks: F: {kind: "Failing", restart: {initial: 0.01, max: 0.05, hold_after: 3}}` + "\n"})
	testenv.WaitFor(t, 10*time.Second, "F held", func() bool { return g.task(t, "F").Status == "held" })
	tk := g.task(t, "F")
	if tk.FailuresInARow == nil || *tk.FailuresInARow != 3 || tk.HeldReason != control.HeldRetriesExhausted ||
		!strings.Contains(fmt.Sprint(tk.Conditions), "RetriesExhausted") {
		t.Fatalf("held task %v", tk)
	}
	// clear gives it another chance (it fails again, so it is held again
	// after three more attempts, visibly counted from zero).
	if _, err := control.Request(g.tr, control.DefaultQueue, control.Op{Type: control.Clear, Task: "F"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// A config change lets it start.
	os.WriteFile(filepath.Join(g.cfg, "f.cue"), []byte(`tasks: F: {kind: "Failing", config: ok: true}`+"\n"), 0o600)
	testenv.WaitFor(t, 10*time.Second, "F running", func() bool { return g.task(t, "F").Status == "running" })
	if _, err := control.Request(g.tr, control.DefaultQueue, control.Op{Type: control.Clear, Task: "F"}, 5*time.Second); err == nil ||
		!strings.Contains(err.Error(), "not held") {
		t.Fatalf("clear of a running task: %v", err)
	}
}
