package multimodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
)

// buildCmd builds a command of this module, once per test binary run.
func buildCmd(t testing.TB, pkg string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds binaries")
	}
	return builds.get(t, pkg, ".")
}

// builds are the programs the tests built, shared by every test of this
// run (TestMain removes them).
var builds = &buildCache{m: map[string]*build{}}

type buildCache struct {
	mu  sync.Mutex
	dir string
	m   map[string]*build
}

type build struct {
	once sync.Once
	bin  string
	err  error
}

// get builds pkg (run in dir) the first time it is asked for.
func (c *buildCache) get(t testing.TB, pkg, dir string) string {
	t.Helper()
	c.mu.Lock()
	b := c.m[dir+"\x00"+pkg]
	if b == nil {
		b = &build{}
		c.m[dir+"\x00"+pkg] = b
	}
	c.mu.Unlock()
	b.once.Do(func() {
		name := filepath.Base(pkg)
		if pkg == "." {
			name = filepath.Base(dir)
		}
		b.bin = filepath.Join(c.dir, name)
		cmd := exec.Command("go", "build", "-o", b.bin, pkg)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// proc is a started program whose stderr lines are collected.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan error
	// over is closed when it has exited (done then holds how).
	over chan struct{}
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan error, 1), over: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill() })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		p.done <- p.cmd.Wait()
		close(p.over)
	}()
	return p
}

// exited says whether it has exited.
func (p *proc) exited() bool {
	select {
	case <-p.over:
		return true
	default:
		return false
	}
}

func (p *proc) has(line string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if l == line {
			return true
		}
	}
	return false
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// wait waits for its exit: a daemon's orderly shutdown takes at most
// daemon.ShutdownTimeout and runtime.SaveGrace (15 s); the rest is room
// for a loaded machine.
func (p *proc) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit within 30s\n%s", p.output())
		return nil
	}
}

func mmctlRun(t *testing.T, bin, dir string, argv ...string) string {
	t.Helper()
	out, err := exec.Command(bin, append([]string{"-T", dir}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mmctl %v: %v\n%s", argv, err, out)
	}
	return string(out)
}

func TestCounterDaemonWithMmctl(t *testing.T) {
	t.Parallel()
	counter := buildCmd(t, "./examples/counter")
	mmctl := buildCmd(t, "./cmd/mmctl")
	dir := testenv.TransitDir(t)
	seed, err := os.ReadFile("examples/counter/config/example.cue")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.WriteFiles(t, map[string]string{
		"example.cue": string(seed),
		"fast.cue":    "tasks: Example1: intervals: tick: 0.05\n",
	})

	// Sent while no daemon runs: it waits in Example2's queue.
	mmctlRun(t, mmctl, dir, "send", "--create", "Example2", `{"ct": 42, "outstr": "sent while down"}`)

	d := startProc(t, counter, "-c", cfg, "-s", t.TempDir(), "-T", dir, "-p", "examples")
	testenv.WaitFor(t, 10*time.Second, "the message sent while down", func() bool {
		return d.has("Example2: received a message: 42 (sent while down)")
	})
	testenv.WaitFor(t, 10*time.Second, "counting", func() bool {
		return d.has("Example2: received a message: 3 (howdy)")
	})
	mmctlRun(t, mmctl, dir, "send", "Example1", `{"new_ct": 999}`)
	testenv.WaitFor(t, 10*time.Second, "999 then 1000", func() bool {
		return d.has("Example2: received a message: 999 (howdy)") && d.has("Example2: received a message: 1000 (howdy)")
	})

	var st struct {
		Daemon map[string]any   `json:"daemon"`
		Tasks  []map[string]any `json:"tasks"`
	}
	if err := json.Unmarshal([]byte(mmctlRun(t, mmctl, dir, "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Tasks) != 3 || st.Daemon["pid"] != float64(d.cmd.Process.Pid) {
		t.Fatalf("status %+v", st)
	}
	for _, task := range st.Tasks {
		if task["status"] != "running" || task["where"] != "internal" {
			t.Fatalf("task %v", task)
		}
	}

	mmctlRun(t, mmctl, dir, "shutdown")
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon after mmctl shutdown: %v\n%s", err, d.output())
	}
}

func TestSIGTERMStopsTheDaemonInOrder(t *testing.T) {
	t.Parallel()
	counter := buildCmd(t, "./examples/counter")
	dir := testenv.TransitDir(t)
	d := startProc(t, counter, "-c", "examples/counter/config", "-s", t.TempDir(), "-T", dir, "-p", "examples")
	testenv.WaitFor(t, 10*time.Second, "the first count", func() bool {
		return d.has("Example2: received a message: 1 (howdy)")
	})
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.output())
	}
}
