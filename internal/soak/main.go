// Command soak runs a daemon (testdata/extprog) under steady traffic while
// it kills external processes and the daemon with SIGKILL at random, flips
// a task between internal and external, writes broken and fixed config
// files and fills queues. At the end it checks that every message that
// reached a kernel queue was handled, that no task's state went back more
// than one save interval, that no process, queue or spill file is left
// and that the daemon's memory and fds stayed flat. `make soak`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/transit"
)

// The tasks under traffic: A internal, B external, F flipped between the
// two, C at the end of an in-process chain (its messages are sent to the
// Router, which forwards them to H1, H1 to H2, H2 to C, all in the
// daemon). All four are acme.Counter: each message is counted in the
// task's state and reported to the queue Seen with the count.
var tasks = []string{"A", "B", "F", "C"}

const saveEvery = 0.5 // seconds: the tasks' save_state

// activeGap is the longest gap between two reports of a task that counts
// as working time: traffic is 100 messages a second.
const activeGap = 100 * time.Millisecond

func config(flipped bool) string {
	return fmt.Sprintf(`tasks: A: {kind: "Counter", intervals: save_state: %[1]v}
tasks: B: {kind: "Counter", external: true, intervals: save_state: %[1]v}
tasks: F: {kind: "Counter", external: %[2]v, intervals: save_state: %[1]v}
tasks: C: {kind: "Counter", intervals: save_state: %[1]v}
tasks: H1: {kind: "Relay", config: to: "H2"}
tasks: H2: {kind: "Relay", config: to: "C"}
tasks: Router: config: routes: [{match: chain: true, forwards: [{qname: "H1"}]}]
daemon: sample_every: 0.5
`, saveEvery, flipped)
}

type soak struct {
	paths paths
	tr    *transit.Transit
	rng   *rand.Rand // the main loop's, from the seed

	stopCollect chan struct{}

	mu      sync.Mutex
	daemon  *exec.Cmd
	msgs    ledger     // under mu
	regress regression // under mu

	// The main loop's own, read by verdict once it is over.
	faults faultTally
	usage  daemonUsage
}

// paths are where the run lives, all under root.
type paths struct {
	bin, root, cfg, state string
}

// ledger is every message sent, and what became of it.
type ledger struct {
	next map[string]int // the next message number, by task
	// sent are the messages each task's queue accepted; seen what the
	// tasks reported handling, with how often.
	sent, sendFailed map[string]int
	seen             map[string]map[int]int
}

// regression is how far each task's state went back.
type regression struct {
	// counts: per task, the task's active time when each state count was
	// first reported. Active time runs only while the task reports (gaps
	// over activeGap, when it was down, do not count): "state goes back at
	// most one save interval" is about the time it was working.
	counts     map[string]map[int]time.Duration
	active     map[string]time.Duration
	maxCount   map[string]int
	lastReport map[string]time.Time
	// worst state regression: how old the state a task went back to was.
	worstBack     time.Duration
	worstBackTask string
}

// faultTally counts the faults the run caused.
type faultTally struct {
	kills, daemonKills, flips, broken, fills int
}

// daemonUsage is the daemon's resident memory (MiB) and open fds, sampled.
type daemonUsage struct {
	rss, fds []float64
}

func main() {
	duration := flag.Duration("duration", 10*time.Minute, "how long the faults go on")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "random seed (printed, to replay a run)")
	flag.BoolVar(&keep, "keep", false, "keep the run's directory (logs, state) for a look")
	flag.Parse()
	if err := run(*duration, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, seed uint64) error {
	root, err := os.MkdirTemp("", "mm-soak")
	if err != nil {
		return err
	}
	s := &soak{
		paths: paths{root: root, cfg: filepath.Join(root, "config"), state: filepath.Join(root, "state"),
			bin: filepath.Join(root, "extprog")},
		rng:         rand.New(rand.NewPCG(seed, seed)),
		stopCollect: make(chan struct{}),
		msgs: ledger{next: map[string]int{},
			sent: map[string]int{}, sendFailed: map[string]int{}, seen: map[string]map[int]int{}},
		regress: regression{counts: map[string]map[int]time.Duration{}, active: map[string]time.Duration{},
			maxCount: map[string]int{}, lastReport: map[string]time.Time{}},
	}
	fmt.Printf("soak: seed %d, %v of faults, in %s\n", seed, duration, root)
	defer s.cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	build := exec.Command("go", "build", "-o", s.paths.bin, ".")
	build.Dir = "testdata/extprog"
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building testdata/extprog: %v\n%s", err, out)
	}
	os.MkdirAll(s.paths.cfg, 0o700)
	if err := os.WriteFile(filepath.Join(s.paths.cfg, "a.cue"), []byte(config(false)), 0o600); err != nil {
		return err
	}
	if s.tr, err = transit.Open(transit.Options{Dir: filepath.Join(root, "transit")}); err != nil {
		return err
	}
	seenQ, err := s.tr.Queue("Seen")
	if err != nil {
		return err
	}
	if err := s.startDaemon(); err != nil {
		return err
	}

	var wg sync.WaitGroup
	done := make(chan struct{})
	for _, t := range tasks {
		wg.Add(1)
		go func() { defer wg.Done(); s.traffic(t, done) }()
	}
	collectDone := make(chan struct{})
	go func() { s.collect(seenQ); close(collectDone) }()

	end := time.Now().Add(duration)
	flipped := false
	for time.Now().Before(end) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(1000+s.rng.IntN(2000)) * time.Millisecond):
		}
		s.sampleDaemon()
		switch n := s.rng.IntN(10); {
		case n < 4:
			s.killExternal()
		case n < 5:
			if err := s.killDaemon(); err != nil {
				return err
			}
		case n < 7:
			flipped = !flipped
			os.WriteFile(filepath.Join(s.paths.cfg, "a.cue"), []byte(config(flipped)), 0o600)
			s.faults.flips++
		case n < 8:
			bad := filepath.Join(s.paths.cfg, "broken.cue")
			os.WriteFile(bad, []byte("tasks: X: {kind: \n"), 0o600)
			time.Sleep(300 * time.Millisecond)
			os.Remove(bad)
			s.faults.broken++
		default:
			s.fill()
		}
	}
	close(done)
	wg.Wait()
	fmt.Println("soak: faults over; waiting for every message sent to be handled")
	// A task the kills drove into a crash loop is held, its messages
	// waiting in its queue: release it, as an operator would.
	for _, t := range tasks {
		control.Request(s.tr, control.DefaultQueue, control.Op{Type: control.Clear, Task: t}, 5*time.Second)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && s.missing() > 0 {
		time.Sleep(200 * time.Millisecond)
	}
	control.Request(s.tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit, ExitExternals: true}, 5*time.Second)
	s.waitDaemon(30 * time.Second)
	close(s.stopCollect)
	<-collectDone
	return s.verdict()
}

func (s *soak) startDaemon() error {
	logf, err := os.OpenFile(filepath.Join(s.paths.root, "daemon.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.paths.bin, "-c", s.paths.cfg, "-s", s.paths.state, "-T", s.tr.Dir(), "-p", "acme", "-o", "log:1,alert:1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	s.mu.Lock()
	s.daemon = cmd
	s.mu.Unlock()
	return nil
}

func (s *soak) waitDaemon(d time.Duration) {
	s.mu.Lock()
	pid := s.daemon.Process.Pid
	s.mu.Unlock()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(b), ") Z ") {
			return
		}
	}
}

// traffic sends {"i": n} to task every 10 ms; a message the queue does not
// accept (full after its wait) is not counted as sent.
func (s *soak) traffic(task string, done <-chan struct{}) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		s.send(task)
	}
}

func (s *soak) send(task string) {
	s.mu.Lock()
	s.msgs.next[task]++
	n := s.msgs.next[task]
	s.mu.Unlock()
	queue, msg := task, map[string]any{"i": float64(n)}
	if task == "C" { // by way of the chain
		queue, msg["chain"] = "Router", true
	}
	err := s.tr.Send(queue, msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.msgs.sendFailed[task]++
		return
	}
	s.msgs.sent[task]++
	if s.msgs.seen[task] == nil {
		s.msgs.seen[task] = map[int]int{}
	}
	if _, ok := s.msgs.seen[task][n]; !ok {
		s.msgs.seen[task][n] = 0 // sent, not yet seen
	}
}

// fill sends a burst to A as fast as the queue takes it.
func (s *soak) fill() {
	for range 2000 {
		s.send("A")
	}
	s.faults.fills++
}

// collect reads the tasks' reports from Seen.
func (s *soak) collect(q *transit.Queue) {
	for {
		d, err := q.Receive(false)
		if err != nil || len(d.Msgs) == 0 {
			select {
			case <-s.stopCollect:
				return
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		now := time.Now()
		s.mu.Lock()
		for _, m := range d.Msgs {
			task, _ := m["task"].(string)
			i, _ := m["i"].(float64)
			c, _ := m["count"].(float64)
			if s.msgs.seen[task] == nil {
				s.msgs.seen[task] = map[int]int{}
			}
			s.msgs.seen[task][int(i)]++
			if s.regress.counts[task] == nil {
				s.regress.counts[task] = map[int]time.Duration{}
			}
			if last := s.regress.lastReport[task]; !last.IsZero() {
				s.regress.active[task] += min(now.Sub(last), activeGap)
			}
			count := int(c)
			if count < s.regress.maxCount[task] {
				// The state went back: to a count first reached how much
				// working time before the last report?
				if first, ok := s.regress.counts[task][count]; ok {
					if back := s.regress.active[task] - first; back > s.regress.worstBack {
						s.regress.worstBack, s.regress.worstBackTask = back, task
					}
				}
				// The counts above it are reached again from now on.
				for c := count + 1; c <= s.regress.maxCount[task]; c++ {
					delete(s.regress.counts[task], c)
				}
				s.regress.maxCount[task] = count
			}
			if _, ok := s.regress.counts[task][count]; !ok {
				s.regress.counts[task][count] = s.regress.active[task]
			}
			s.regress.maxCount[task] = max(s.regress.maxCount[task], count)
			s.regress.lastReport[task] = now
		}
		s.mu.Unlock()
	}
}

// missing counts the messages sent but not yet reported handled.
func (s *soak) missing() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, seen := range s.msgs.seen {
		for _, c := range seen {
			if c == 0 {
				n++
			}
		}
	}
	return n
}

// externalPids lists the -m processes of this soak.
func (s *soak) externalPids() []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), s.paths.state) && strings.Contains(string(b), "-m\x00") {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

func (s *soak) killExternal() {
	pids := s.externalPids()
	if len(pids) == 0 {
		return
	}
	syscall.Kill(pids[s.rng.IntN(len(pids))], syscall.SIGKILL)
	s.faults.kills++
}

func (s *soak) killDaemon() error {
	s.mu.Lock()
	d := s.daemon
	s.mu.Unlock()
	d.Process.Kill()
	s.waitDaemon(10 * time.Second)
	s.faults.daemonKills++
	time.Sleep(time.Duration(s.rng.IntN(1000)) * time.Millisecond) // down a while: messages wait
	return s.startDaemon()
}

// sampleDaemon records the daemon's resident memory and open fds.
func (s *soak) sampleDaemon() {
	s.mu.Lock()
	pid := s.daemon.Process.Pid
	s.mu.Unlock()
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid)); err == nil {
		pages, _ := strconv.ParseFloat(strings.Fields(string(b))[1], 64)
		s.usage.rss = append(s.usage.rss, pages*float64(os.Getpagesize())/(1<<20))
	}
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.usage.fds = append(s.usage.fds, float64(len(fds)))
	}
}

func (s *soak) verdict() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var problems []error
	sent, handled, lost, dups := 0, 0, 0, 0
	for _, t := range tasks {
		sent += s.msgs.sent[t]
		for i, c := range s.msgs.seen[t] {
			switch {
			case c == 0:
				lost++
				if lost <= 10 {
					fmt.Printf("soak: lost: %s message %d\n", t, i)
				}
			case c > 1:
				dups += c - 1
			}
			if c > 0 {
				handled++
			}
		}
	}
	if lost > 0 {
		problems = append(problems, fmt.Errorf("%d messages accepted by a queue were never handled", lost))
	}
	if limit := time.Duration(saveEvery*float64(time.Second)) + 200*time.Millisecond; s.regress.worstBack > limit { // slack: report timing
		problems = append(problems, fmt.Errorf("task %s's state went back %v (save interval %vs)", s.regress.worstBackTask, s.regress.worstBack.Round(time.Millisecond), saveEvery))
	}
	if pids := s.externalPids(); len(pids) > 0 {
		problems = append(problems, fmt.Errorf("processes left: %v", pids))
	}
	names, _ := s.tr.Names()
	want := map[string]bool{"A": true, "B": true, "F": true, "C": true, "H1": true, "H2": true, "Seen": true, "Router": true, "MultiModule_control": true,
		"MultiModule_control.doorbell": true, "MultiModule_control.oob": true, transit.DeadLetterQueue: true}
	for _, n := range names {
		if !want[n] && !strings.HasPrefix(n, "mmctl-") && !strings.HasPrefix(n, "reply") {
			problems = append(problems, fmt.Errorf("unexpected queue left: %s", n))
		}
	}
	spills, _ := filepath.Glob(filepath.Join(s.tr.Dir(), ".spill", "*", "*"))
	if len(spills) > 0 {
		problems = append(problems, fmt.Errorf("%d spill files left", len(spills)))
	}
	fmt.Printf("soak: sent %d (queue full: %d), handled %d, lost %d, handled twice %d\n", sent, sumMap(s.msgs.sendFailed), handled, lost, dups)
	fmt.Printf("soak: kills of externals %d, of the daemon %d, flips %d, broken configs %d, queue fills %d\n",
		s.faults.kills, s.faults.daemonKills, s.faults.flips, s.faults.broken, s.faults.fills)
	rss, fds := s.usage.rss, s.usage.fds
	fmt.Printf("soak: worst state regression %v of working time (task %s); daemon RSS %s MiB, fds %s\n",
		s.regress.worstBack.Round(time.Millisecond), s.regress.worstBackTask, spread(rss), spread(fds))
	if len(rss) > 4 && quarterMax(rss[len(rss)*3/4:]) > 2*quarterMax(rss[:len(rss)/4])+10 {
		problems = append(problems, fmt.Errorf("the daemon's memory grew: %s MiB", spread(rss)))
	}
	if len(fds) > 4 && quarterMax(fds[len(fds)*3/4:]) > quarterMax(fds[:len(fds)/4])+10 {
		problems = append(problems, fmt.Errorf("the daemon's fds grew: %s", spread(fds)))
	}
	return errors.Join(problems...)
}

func sumMap(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func quarterMax(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func spread(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return fmt.Sprintf("%.0f-%.0f", lo, hi)
}

// keep leaves the run's directory in place.
var keep bool

// cleanup kills whatever is left and removes the queues and files.
func (s *soak) cleanup() {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), s.paths.state) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if s.tr != nil {
		s.tr.RemoveAll()
	}
	if !keep {
		os.RemoveAll(s.paths.root)
	}
}
