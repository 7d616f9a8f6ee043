package multimodule

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// quickStart runs the README's quick-start config on the stock daemon,
// with the file it follows, the handler's path and the heartbeat made
// the test's own.
type quickStart struct {
	*extEnv
	log, handler, cfgFile string
	src                   string
}

func newQuickStart(t *testing.T) *quickStart {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed (.ci/run installs it)")
	}
	src, err := os.ReadFile(filepath.Join("examples", "quickstart", "config", "quickstart.cue"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	q := &quickStart{log: filepath.Join(dir, "app.log"), handler: filepath.Join(dir, "handler.py")}
	code, err := os.ReadFile(filepath.Join("examples", "exec", "handler.py"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(q.handler, code, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(q.log, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	q.src = strings.NewReplacer(
		"/tmp/quickstart/app.log", q.log,
		"examples/exec/handler.py", q.handler,
		"every: 10", "every: 0.2",
	).Replace(string(src)) +
		// Faster polls and saves than a person needs, for the test's sake.
		"tasks: Tail: config: poll: 0.02\ntasks: [_]: intervals: save_state: 0.05\n"
	q.extEnv = &extEnv{t: t, bin: buildCmd(t, "./cmd/multimodule"), state: t.TempDir()}
	q.cfg = testenv.WriteFiles(t, map[string]string{"quickstart.cue": q.src})
	q.cfgFile = filepath.Join(q.cfg, "quickstart.cue")
	tdir := testenv.TransitDir(t)
	if q.tr, err = transit.Open(transit.Options{Dir: tdir}); err != nil {
		t.Fatal(err)
	}
	if q.seen, err = q.tr.Queue("Handled"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.killExternals)
	t.Cleanup(func() { killByStateDir(q.handler) }) // the Python handlers
	return q
}

func (q *quickStart) appendLines(from, to int) {
	q.t.Helper()
	f, err := os.OpenFile(q.log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		q.t.Fatal(err)
	}
	defer f.Close()
	for i := from; i <= to; i++ {
		fmt.Fprintf(f, "INFO %d\nERROR %d\n", i, i)
	}
}

// handled counts, by number, the lines that came out of the Python
// handler among the messages from index on; the largest seq (the
// handler's count, kept in its state) is returned too.
func (q *quickStart) handled(from int) (map[int]int, float64) {
	n := map[int]int{}
	var seq float64
	for _, m := range q.got[from:] {
		if m["handled_by"] != "python" {
			continue
		}
		line, _ := m["line"].(string)
		i, err := strconv.Atoi(strings.TrimPrefix(line, "ERROR "))
		if err != nil || !strings.HasPrefix(line, "ERROR ") || m["upper"] != strings.ToUpper(line) {
			q.t.Fatalf("unexpected handler output %v", m)
		}
		n[i]++
		seq = max(seq, m["seq"].(float64))
	}
	return n, seq
}

// waitLines collects until lines from..to each came out at least once
// (counting messages from index on).
func (q *quickStart) waitLines(index, from, to int) map[int]int {
	q.t.Helper()
	var n map[int]int
	testenv.WaitFor(q.t, 30*time.Second, fmt.Sprintf("lines %d..%d out of the handler", from, to), func() bool {
		q.drain()
		n, _ = q.handled(index)
		for i := from; i <= to; i++ {
			if n[i] == 0 {
				return false
			}
		}
		return true
	})
	return n
}

// running waits until the daemon runs task (the file it follows has
// been looked at once then: start_at "end" is the end as of its start).
func (q *quickStart) running(task string) {
	q.t.Helper()
	testenv.WaitFor(q.t, 20*time.Second, task+" running", func() bool { return q.task(task).Name == task })
}

// pythonPids are the running handler processes of this test.
func (q *quickStart) pythonPids() []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), q.handler) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestQuickStart checks issue 16's "Done when" on the stock binary: lines
// appended to the followed file come out of the Python handler; a kill -9
// of the Python process loses none; a restart of the daemon neither
// repeats nor skips one; the Exec task made external moves with its state.
func TestQuickStart(t *testing.T) {
	t.Parallel()
	q := newQuickStart(t)
	d := q.daemon()
	q.running("Tail")

	// Lines come out of the handler, ERROR lines only; the heartbeat runs.
	q.appendLines(1, 5)
	n := q.waitLines(0, 1, 5)
	testenv.WaitFor(t, 10*time.Second, "a heartbeat", func() bool {
		q.drain()
		for _, m := range q.got {
			if m["heartbeat"] == true && m["schedule"] == "beat" {
				return true
			}
		}
		return false
	})
	if len(n) != 5 {
		t.Fatalf("handled %v, want ERROR 1..5", n)
	}

	// kill -9 of the Python process while lines flow: none is lost.
	pids := q.pythonPids()
	if len(pids) != 1 {
		t.Fatalf("python handlers %v, want one", pids)
	}
	q.appendLines(6, 200)
	testenv.WaitFor(t, 10*time.Second, "the handler at work", func() bool {
		q.drain()
		_, seq := q.handled(0)
		return seq >= 20
	})
	syscall.Kill(pids[0], syscall.SIGKILL)
	q.appendLines(201, 220)
	q.waitLines(0, 1, 220)
	testenv.WaitFor(t, 10*time.Second, "a new handler", func() bool {
		p := q.pythonPids()
		return len(p) == 1 && p[0] != pids[0]
	})

	// A daemon restart (SIGTERM, lines appended while it is down, start):
	// the lines after it are exactly those appended since, once each.
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.output())
	}
	q.drain()
	mark := len(q.got)
	q.appendLines(221, 230)
	d = q.daemon()
	q.appendLines(231, 240)
	// Lines come out in the file's order: a line read again after the
	// restart would come before 240.
	q.waitLines(mark, 221, 240)
	n, seqBefore := q.handled(mark)
	for i, c := range n {
		if i < 221 || c != 1 {
			t.Fatalf("after the restart line %d came %d times (want 221..240 once each): %v", i, c, n)
		}
	}

	// The Exec task made external: it moves to its own process with its
	// state (the handler's count goes on), and lines still come out.
	if err := os.WriteFile(q.cfgFile, []byte(q.src+"tasks: Upper: external: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "Upper external", func() bool {
		tk := q.task("Upper")
		return tk.Where == "external" && tk.Pid > 0 && tk.Pid != d.cmd.Process.Pid
	})
	q.drain()
	mark = len(q.got)
	q.appendLines(241, 250)
	q.waitLines(mark, 241, 250)
	_, seqAfter := q.handled(mark)
	if seqAfter < seqBefore+10 {
		t.Fatalf("the handler's count went from %v to %v: its state did not move with it", seqBefore, seqAfter)
	}
	for _, pid := range q.pythonPids() {
		if ppid(pid) == d.cmd.Process.Pid {
			t.Fatalf("a handler still runs under the daemon (pid %d)", pid)
		}
	}
}

// ppid is a process's parent (0 if unknown).
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(fields[1])
	return p
}

func TestListKinds(t *testing.T) {
	var out, errOut testenv.Buffer
	if code := run([]string{"--list-kinds"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for _, b := range builtins {
		found := false
		for _, l := range lines {
			found = found || (strings.HasPrefix(l, b.schema.Kind+" ") && strings.HasSuffix(l, b.about))
		}
		if !found {
			t.Errorf("%s missing from --list-kinds:\n%s", b.schema.Kind, out.String())
		}
	}
}
