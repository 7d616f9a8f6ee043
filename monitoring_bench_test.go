package multimodule

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSampling100Externals times one sample of 100 external tasks
// (idle Go processes, each with its queue) as the daemon takes it once a
// sample interval: process CPU, memory, IO, fds and threads, queue fill,
// levels. The figure is the share of one core that sampling once a second
// costs. The baseline, in the same run, reads the same /proc files of the
// same processes with os.ReadFile and nothing else.
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
	host, err := runtime.NewHost(runtime.Options{StateDir: b.TempDir(), OOB: "log:2,debug:2"})
	if err != nil {
		b.Fatal(err)
	}
	cfg := &schema.Config{Tasks: map[string]schema.TaskSpec{}, Daemon: schema.DaemonSpec{SampleEvery: 1}}
	d := &daemon{host: host, tr: tr, ch: host.Channels(), mon: newTaskMonitor(), desired: cfg,
		observed: map[string]reconcile.Observed{}, externals: map[string]*externalProc{}, tasks: map[string]*taskState{}}
	var pids []int
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
		start, err := procStart(cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		pids = append(pids, cmd.Process.Pid)
		cfg.Tasks[name] = schema.TaskSpec{Name: name, External: true}
		d.tasks[name] = &taskState{}
		d.observed[name] = reconcile.Observed{Name: name, External: true}
		d.externals[name] = &externalProc{Pid: cmd.Process.Pid, Start: start}
	}
	d.sample() // the first sample opens the processes
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
		ours += share(d.sample)
		base += share(bare)
	}
	b.ReportMetric(ours/float64(b.N), "%core@1Hz")
	b.ReportMetric(base/float64(b.N), "bare_%core@1Hz")
	b.ReportMetric(0, "ns/op")
	if len(d.mon.tasks) != n {
		b.Fatalf("sampled %d tasks, want %d", len(d.mon.tasks), n)
	}
}

// procCPU is the CPU time a process has used (from /proc, in clock ticks
// of 10 ms).
func procCPU(b *testing.B, pid int) time.Duration {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+1:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// procRSS is a process's resident memory in bytes.
func procRSS(b *testing.B, pid int) float64 {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		b.Fatal(err)
	}
	pages, _ := strconv.ParseFloat(strings.Fields(string(s))[1], 64)
	return pages * float64(os.Getpagesize())
}

// BenchmarkScale200Externals starts a daemon (testdata/extprog) with 200
// external stateful tasks and reports the time until all run, the
// daemon's resident memory, and the CPU the idle daemon uses to supervise,
// sample and take the reports of 200 processes once a second. Baselines
// from the same run: exec of the same binary 200 times (printing its
// usage), the memory of one external (the same binary hosting one task),
// and bare reads of the /proc files sampling needs for the same
// 200 processes once a second.
func BenchmarkScale200Externals(b *testing.B) {
	const n = 200
	bin := buildExtprog(b)
	state := b.TempDir()
	b.Cleanup(func() { killByStateDir(state) })
	var cfg strings.Builder
	for i := range n {
		fmt.Fprintf(&cfg, "tasks: C%03d: {kind: \"Counter\", external: true}\n", i)
	}
	cfgDir := testenv.WriteFiles(b, map[string]string{"a.cue": cfg.String()})
	tr, err := transit.Open(transit.Options{Dir: testenv.TransitDir(b)})
	if err != nil {
		b.Fatal(err)
	}

	t0 := time.Now()
	for range n {
		if err := exec.Command(bin, "-h").Run(); err != nil && !isExit(err) {
			b.Fatal(err)
		}
	}
	bareStart := time.Since(t0)

	t0 = time.Now()
	d := exec.Command(bin, "-c", cfgDir, "-s", state, "-T", tr.Dir(), "-p", "acme", "-o", "log:"+filepath.Join(state, "log"))
	if err := d.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Process.Kill(); d.Wait() })
	var pids []int
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("not all %d externals running: %d", n, len(pids))
		}
		reply, err := control.Request(tr, DefaultControlQueue, map[string]any{"type": "status"}, 5*time.Second)
		if err != nil {
			continue
		}
		pids = pids[:0]
		for _, x := range reply["status"].(map[string]any)["tasks"].([]any) {
			if t := x.(map[string]any); t["status"] == "running" && t["where"] == "external" {
				pids = append(pids, int(t["pid"].(float64)))
			}
		}
		if len(pids) == n {
			break
		}
	}
	start := time.Since(t0)
	b.ResetTimer()
	c0 := procCPU(b, d.Process.Pid)
	time.Sleep(10 * time.Second)
	idle := (procCPU(b, d.Process.Pid) - c0).Seconds() / 10
	rssMiB := procRSS(b, d.Process.Pid) / (1 << 20)
	extMiB := procRSS(b, pids[0]) / (1 << 20) // the same binary hosting one task
	b.StopTimer()
	// The bare floor: the /proc files sampling reads, once, for each.
	c1 := cpuTime()
	for _, pid := range pids {
		for _, f := range []string{"stat", "statm", "status", "io"} {
			os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		}
		os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	}
	bare := (cpuTime() - c1).Seconds()

	control.Request(tr, DefaultControlQueue, map[string]any{"type": "cleanly_exit", "exit_externals": true}, 5*time.Second)
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatal("the daemon did not exit")
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(start.Seconds()*1000, "start-all-ms")
	b.ReportMetric(bareStart.Seconds()*1000, "bare-exec-all-ms")
	b.ReportMetric(rssMiB, "daemon-rss-MiB")
	b.ReportMetric(extMiB, "one-external-rss-MiB")
	b.ReportMetric(idle*100, "daemon-idle-%core")
	b.ReportMetric(bare*100, "bare-proc-reads-%core@1Hz")
}
