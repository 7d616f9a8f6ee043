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
	"github.com/multimodule/multimodule/transit"
)

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
func procRSS(b testing.TB, pid int) float64 {
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
		reply, err := control.Request(tr, control.DefaultQueue, control.Op{Type: control.Status}, 5*time.Second)
		if err != nil || reply.Status == nil {
			continue
		}
		pids = pids[:0]
		for _, t := range reply.Status.Tasks {
			if t.Status == "running" && t.Where == "external" {
				pids = append(pids, t.Pid)
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

	control.Request(tr, control.DefaultQueue, control.Op{Type: control.CleanlyExit, ExitExternals: true}, 5*time.Second)
	waitExit(b, d)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(start.Seconds()*1000, "start-all-ms")
	b.ReportMetric(bareStart.Seconds()*1000, "bare-exec-all-ms")
	b.ReportMetric(rssMiB, "daemon-rss-MiB")
	b.ReportMetric(extMiB, "one-external-rss-MiB")
	b.ReportMetric(idle*100, "daemon-idle-%core")
	b.ReportMetric(bare*100, "bare-proc-reads-%core@1Hz")
}

// BenchmarkScale10000IdleTasks starts a daemon (testdata/extprog) hosting
// 10,000 stateless internal tasks and reports the time until all run and
// the CPU the whole daemon then uses while nothing happens (its sampling,
// monitoring and wake-ups included, as top shows it). The baseline, over
// the same seconds, is an idle Go process (this test binary parked).
func BenchmarkScale10000IdleTasks(b *testing.B) {
	const n, files = 10000, 100
	bin := buildExtprog(b)
	state := b.TempDir()
	cfg := map[string]string{}
	for f := range files {
		var s strings.Builder
		for i := f * n / files; i < (f+1)*n/files; i++ {
			fmt.Fprintf(&s, "tasks: S%05d: {kind: \"Sink\"}\n", i)
		}
		cfg[fmt.Sprintf("f%03d.cue", f)] = s.String()
	}
	cfgDir := testenv.WriteFiles(b, cfg)
	tr, err := transit.Open(transit.Options{Dir: testenv.TransitDir(b)})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	d := exec.Command(bin, "-c", cfgDir, "-s", state, "-T", tr.Dir(), "-p", "acme", "--load-timeout", "5m",
		"-o", "log:"+filepath.Join(state, "log"))
	if err := d.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Process.Kill(); d.Wait() })
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("not all %d tasks running", n)
		}
		reply, err := control.Request(tr, control.DefaultQueue, control.Op{Type: control.Status}, 10*time.Second)
		if err != nil || reply.Status == nil {
			continue
		}
		running := 0
		for _, t := range reply.Status.Tasks {
			if t.Status == "running" {
				running++
			}
		}
		if running == n {
			break
		}
	}
	start := time.Since(t0)
	idle := exec.Command(os.Args[0], "-test.run=^$")
	idle.Env = append(os.Environ(), "MM_IDLE=1")
	if err := idle.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { idle.Process.Kill(); idle.Wait() })
	time.Sleep(2 * time.Second) // both past their start
	b.ResetTimer()
	const over = 20 * time.Second
	c0, i0 := procCPU(b, d.Process.Pid), procCPU(b, idle.Process.Pid)
	time.Sleep(over)
	ours := (procCPU(b, d.Process.Pid) - c0).Seconds() / over.Seconds()
	bare := (procCPU(b, idle.Process.Pid) - i0).Seconds() / over.Seconds()
	b.StopTimer()
	rssMiB := procRSS(b, d.Process.Pid) / (1 << 20)
	d.Process.Signal(unix.SIGTERM)
	waitExit(b, d)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(start.Seconds()*1000, "start-all-ms")
	b.ReportMetric(rssMiB, "daemon-rss-MiB")
	b.ReportMetric(ours*100, "daemon-idle-%core")
	b.ReportMetric(bare*100, "idle-process-%core")
}

// waitExit waits for the daemon d, told to stop, to exit.
func waitExit(b *testing.B, d *exec.Cmd) {
	b.Helper()
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatal("the daemon did not exit")
	}
}
