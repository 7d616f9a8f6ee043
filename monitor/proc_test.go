package monitor

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
)

func TestProcSamplerMeasuresARealProcess(t *testing.T) {
	t.Parallel()
	// A shell that spins: about one core.
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := NewProcSampler()
	if _, err := s.Sample(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// CPU time is counted in clock ticks: a rate needs an interval much
	// longer than a tick.
	var got ProcSample
	last := time.Now()
	testenv.WaitFor(t, 10*time.Second, "the spinning shell to show CPU", func() bool {
		if time.Since(last) < 300*time.Millisecond {
			return false
		}
		last = time.Now()
		var err error
		if got, err = s.Sample(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		return got.HasCPU && got.CPU > 0.5
	})
	if got.CPU > 1.2 || got.Memory <= 0 || got.Threads != 1 || got.FDs < 3 {
		t.Fatalf("sample of a one-thread spinning shell: %+v", got)
	}
	// Our own process opens a file: its fd count goes up by one.
	self, err := s.Sample(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		f, err := os.Open(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	after, _ := s.Sample(os.Getpid())
	if after.FDs < self.FDs+15 { // the runtime may close one or two meanwhile
		t.Fatalf("fds %v then %v after opening 20 files", self.FDs, after.FDs)
	}
	// A gone process is an error, and Sweep forgets what was not sampled.
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := s.Sample(cmd.Process.Pid); err == nil {
		t.Fatal("sampled a process that exited")
	}
	s.Sweep()
	s.Sweep()
	if len(s.procs) != 0 {
		t.Fatalf("%d processes kept after two sweeps without samples", len(s.procs))
	}
}
