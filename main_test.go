package multimodule

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// daemon runs run() in this process with its own signal channel.
type testDaemon struct {
	sig            chan os.Signal
	stdout, stderr *testenv.Buffer
	code           chan int
}

func startDaemon(t testing.TB, args ...string) *testDaemon {
	t.Helper()
	d := &testDaemon{sig: make(chan os.Signal, 2), stdout: &testenv.Buffer{}, stderr: &testenv.Buffer{}, code: make(chan int, 1)}
	go func() { d.code <- run(args, d.sig, d.stdout, d.stderr) }()
	return d
}

// waitRunning waits until the daemon says it runs.
func (d *testDaemon) waitRunning(t testing.TB, what string) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, what, func() bool {
		return strings.Contains(d.stdout.String(), "multimodule running")
	})
}

func (d *testDaemon) exitCode(t testing.TB) int {
	t.Helper()
	select {
	case c := <-d.code:
		return c
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not exit")
		return -1
	}
}

func TestStartFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		files map[string]string
		args  []string
		code  int
		want  []string
	}{
		{"config error with position",
			map[string]string{"a.cue": "tasks: Router: {}\ntasks: E: external: \"yes\"\n"}, nil, 1,
			[]string{"a.cue:2:21", "tasks.E.external"}},
		{"syntax error with position",
			map[string]string{"a.cue": "tasks: {\n"}, nil, 1,
			[]string{"a.cue:1:"}},
		{"unknown kind names the namespaces",
			map[string]string{"a.cue": "tasks: Nope: {}\n"}, []string{"-p", "acme,examples"}, 1,
			[]string{"task Nope", "unknown task kind \"Nope\"", "searched builtin.Nope, acme.Nope, examples.Nope"}},
		{"unknown kind lists the kinds and the -p that finds it",
			map[string]string{"a.cue": "tasks: Probe: {}\n"}, nil, 1,
			[]string{"task Probe", "unknown task kind \"Probe\": searched builtin.Probe;", "registered kinds: builtin.", "itest.Probe is registered: run with -p itest"}},
		{"operator typo in a route is one line",
			map[string]string{"a.cue": "tasks: Router: config: routes: [{match: {$gtt: 5}}]\n"}, nil, 1,
			[]string{"a.cue:1:42: tasks.Router.config.routes.0.match.$gtt: unknown operator $gtt (want $re,"}},
		{"invalid task name says what is allowed",
			map[string]string{"a.cue": "tasks: \"my task\": {}\n"}, nil, 1,
			[]string{"a.cue:1:8: ", "task name \"my task\" not allowed: a task name is a letter or _"}},
		{"unknown qualified kind",
			map[string]string{"a.cue": "tasks: X: kind: \"acme.Nope\"\n"}, nil, 1,
			[]string{"task X", "\"acme.Nope\""}},
		{"missing config dir", nil, []string{"-c", "/nonexistent/mm-config"}, 1,
			[]string{"/nonexistent/mm-config"}},
		{"no config flag", nil, []string{}, 2, []string{"pass -c DIR"}},
		{"bad log level", map[string]string{}, []string{"-d", "loud"}, 2, []string{"log level \"loud\""}},
		{"bad oob", map[string]string{}, []string{"-o", "gossip:1"}, 2, []string{"unknown channel \"gossip\""}},
		{"unknown flag", nil, []string{"-z"}, 2, []string{"flag provided but not defined: -z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"-T", testenv.TransitDir(t)}, tt.args...)
			if tt.files != nil {
				args = append([]string{"-c", testenv.WriteFiles(t, tt.files), "-s", t.TempDir()}, args...)
			}
			var out, errb bytes.Buffer
			sig := make(chan os.Signal)
			code := run(args, sig, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstderr:\n%s", code, tt.code, errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errb.String(), w) {
					t.Fatalf("stderr lacks %q:\n%s", w, errb.String())
				}
			}
		})
	}
}

const routerOnly = "tasks: Router: config: routes: []\n"

func TestSecondDaemonOnSameStateDirRefuses(t *testing.T) {
	t.Parallel()
	cfg := testenv.WriteFiles(t, map[string]string{"a.cue": routerOnly})
	state := t.TempDir()
	tdir := testenv.TransitDir(t)
	first := startDaemon(t, "-c", cfg, "-s", state, "-T", tdir)
	first.waitRunning(t, "first daemon running")
	var out, errb bytes.Buffer
	if code := run([]string{"-c", cfg, "-s", state, "-T", tdir}, make(chan os.Signal), &out, &errb); code != 1 {
		t.Fatalf("second daemon exit %d, want 1", code)
	}
	if want := fmt.Sprintf("in use by another daemon: %s (held by pid %d)", state, os.Getpid()); !strings.Contains(errb.String(), want) {
		t.Fatalf("second daemon said:\n%s\nwant %q", errb.String(), want)
	}
	first.sig <- syscall.SIGTERM
	if code := first.exitCode(t); code != 0 {
		t.Fatalf("first daemon exit %d\n%s", code, first.stderr.String())
	}
}

// Two daemons with their own state dirs on one transit dir would serve
// one control queue, each taking requests meant for the other: the second
// refuses to start, and the first is undisturbed.
func TestSecondDaemonOnSameControlQueueRefuses(t *testing.T) {
	t.Parallel()
	cfg := testenv.WriteFiles(t, map[string]string{"a.cue": routerOnly})
	state := t.TempDir()
	tdir := testenv.TransitDir(t)
	first := startDaemon(t, "-c", cfg, "-s", state, "-T", tdir)
	first.waitRunning(t, "first daemon running")
	var out, errb bytes.Buffer
	if code := run([]string{"-c", cfg, "-s", t.TempDir(), "-T", tdir}, make(chan os.Signal), &out, &errb); code != 1 {
		t.Fatalf("second daemon exit %d, want 1\n%s", code, errb.String())
	}
	want := fmt.Sprintf("control queue %s in %s is served by another daemon: pid %d, state dir %s",
		control.DefaultQueue, tdir, os.Getpid(), state)
	if !strings.Contains(errb.String(), want) {
		t.Fatalf("second daemon said:\n%s\nwant %q", errb.String(), want)
	}
	tr, err := transit.Open(transit.Options{Dir: tdir})
	if err != nil {
		t.Fatal(err)
	}
	reply, err := control.Request(tr, control.DefaultQueue, control.Op{Type: control.Status}, 5*time.Second)
	if err != nil {
		t.Fatalf("the first daemon after the second gave up: %v", err)
	}
	if reply.Status == nil || reply.Status.Daemon.StateDir != state {
		t.Fatalf("status from the wrong daemon: %+v", reply.Status)
	}
	first.sig <- syscall.SIGTERM
	if code := first.exitCode(t); code != 0 {
		t.Fatalf("first daemon exit %d\n%s", code, first.stderr.String())
	}
	// Released on shutdown: a daemon may serve the queue again.
	again := startDaemon(t, "-c", cfg, "-s", t.TempDir(), "-T", tdir)
	again.waitRunning(t, "a daemon after the first")
	again.sig <- syscall.SIGTERM
	if code := again.exitCode(t); code != 0 {
		t.Fatalf("daemon exit %d\n%s", code, again.stderr.String())
	}
}

// buildExtprog builds the program in testdata/extprog, which lives outside
// this module and imports it as a user's daemon does.
func buildExtprog(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a separate program")
	}
	return builds.get(t, ".", filepath.Join("testdata", "extprog"))
}

// counts are the numbers the extprog's Sink printed.
func (p *proc) counts() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for _, line := range p.lines {
		if s, ok := strings.CutPrefix(line, "sink: "); ok {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func TestUserProgramStateContinuesAcrossSIGINT(t *testing.T) {
	t.Parallel()
	bin := buildExtprog(t)
	// Save rarely: the count must survive because shutdown saves, not
	// because a periodic save happened to run.
	cfg := testenv.WriteFiles(t, map[string]string{"a.cue": `
tasks: Ticker: intervals: {tick: 0.02, save_state: 3600}
tasks: Sink: {}
tasks: Router: config: routes: [{match: source: "Ticker", forwards: [{qname: "Sink"}]}]
`})
	args := []string{"-c", cfg, "-s", t.TempDir(), "-p", "acme", "-o", "debug:2", "-T", testenv.TransitDir(t)}

	var all []int
	for round := range 3 {
		p := startProc(t, bin, args...)
		testenv.WaitFor(t, 10*time.Second, "five more counts", func() bool { return len(p.counts()) >= 5 })
		p.cmd.Process.Signal(syscall.SIGINT)
		if err := p.wait(t); err != nil {
			t.Fatalf("exit after SIGINT: %v\n%s", err, p.output())
		}
		got := p.counts()
		if round > 0 && got[0] != all[len(all)-1]+1 {
			t.Fatalf("round %d started at %d after %d: a gap or a repeat", round, got[0], all[len(all)-1])
		}
		all = append(all, got...)
	}
	for i, n := range all {
		if n != i+1 {
			t.Fatalf("counts %v: want 1..%d with no gap and no repeat", all, len(all))
		}
	}
}
