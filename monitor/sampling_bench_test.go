package monitor

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// TestMain: this test binary started with MM_IDLE is an idle Go process,
// a stand-in external for the sampling benchmark.
func TestMain(m *testing.M) {
	if os.Getenv("MM_IDLE") != "" {
		select {}
	}
	os.Exit(m.Run())
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSampling100Externals times one sample of 100 external tasks
// (idle Go processes, each with its queue) as the daemon takes it once a
// sample interval: process CPU, memory, IO, fds and threads, queue fill,
// merged limits and levels, and the daemon's own process. The figure is
// the share of one core that sampling once a second costs. The baseline,
// in the same run, reads the same /proc files of the same processes with
// os.ReadFile and nothing else.
func BenchmarkSampling100Externals(b *testing.B) {
	const n = 100
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	tr, err := transit.Open(transit.Options{Dir: testenv.TransitDir(b)})
	if err != nil {
		b.Fatal(err)
	}
	var pids []int
	var names []string
	for i := range n {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "MM_IDLE=1")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		name := "T" + strconv.Itoa(i)
		if _, err := tr.Queue(name); err != nil {
			b.Fatal(err)
		}
		pids, names = append(pids, cmd.Process.Pid), append(names, name)
	}
	tracker, procs := NewTracker(BoxMemory()), NewProcSampler()
	rs := make([]Reading, 0, n)
	// sample is what the daemon's sampling does with what it knows of
	// its externals (their pids and queues).
	sample := func() {
		now := time.Now()
		rs = rs[:0]
		for i, pid := range pids {
			r := Reading{Task: names[i], Where: External, Pid: pid, Running: true, Limits: tracker.Limits(nil, nil)}
			if ps, err := procs.Sample(pid); err == nil {
				r.Proc = &ps
			}
			if q, err := tr.Lookup(names[i]); err == nil {
				if qs, err := q.Stats(); err == nil {
					r.QueueFill, r.HasQueue = qs.Fill, true
				}
			}
			rs = append(rs, r)
		}
		var self *ProcSample
		if ps, err := procs.Sample(os.Getpid()); err == nil {
			self = &ps
		}
		procs.Sweep()
		tracker.Observe(now, self, rs)
	}
	sample() // the first sample opens the processes
	files := []string{"stat", "statm", "status", "io"}
	bare := func() {
		for _, pid := range pids {
			dir := "/proc/" + strconv.Itoa(pid)
			for _, f := range files {
				if _, err := os.ReadFile(filepath.Join(dir, f)); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := os.ReadDir(dir + "/fd"); err != nil {
				b.Fatal(err)
			}
		}
	}
	// CPU seconds per call, as a share of one core at one call a second.
	// Calls are paced as the daemon's are (at least 100 ms apart, so that
	// every call takes a CPU reading); only CPU time is counted.
	share := func(f func()) float64 {
		const rounds = 20
		var used time.Duration
		for range rounds {
			next := time.Now().Add(100 * time.Millisecond)
			c0 := cpuTime()
			f()
			used += cpuTime() - c0
			time.Sleep(time.Until(next))
		}
		return used.Seconds() / rounds * 100
	}
	b.ResetTimer()
	var ours, base float64
	for range b.N {
		ours += share(sample)
		base += share(bare)
	}
	b.ReportMetric(ours/float64(b.N), "%core@1Hz")
	b.ReportMetric(base/float64(b.N), "bare_%core@1Hz")
	b.ReportMetric(0, "ns/op")
	if got := len(tracker.Snapshot().Tasks); got != n {
		b.Fatalf("sampled %d tasks, want %d", got, n)
	}
	for _, name := range names {
		if m, _ := tracker.Status(name); m[FDs] == 0 {
			b.Fatalf("%s: no fds measured: %v", name, m)
		}
	}
}
