package exec_test

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/multimodule/multimodule/runtime"
	mmexec "github.com/multimodule/multimodule/tasks/exec"
	"github.com/multimodule/multimodule/tasks/router"
)

// catPy answers each message with itself, emitted, and the ack, flushing
// every line (as any handler that answers one message at a time must).
const catPy = `import sys
for line in sys.stdin:
    if line.startswith('{"state"'):
        continue
    sys.stdout.write('{"emit":' + line.rstrip('\n') + ',"ack":true}\n')
    sys.stdout.flush()
`

type sink struct {
	want, got int
	done      chan struct{}
}

func (s *sink) Message(runtime.Context, runtime.Message) error {
	if s.got++; s.got == s.want {
		s.got = 0
		s.done <- struct{}{}
	}
	return nil
}

// BenchmarkExecCat measures messages per second through an Exec task
// running cat-like Python (queued to the task, written to the program,
// acked, emitted through the Router to a sink), against the same program
// fed by a bare pipe in the same run: pipelined (a writer and a reader,
// the program's own limit) and in lockstep (write one, read its answer:
// the round trip an acked handler pays per message).
func BenchmarkExecCat(b *testing.B) {
	py, err := exec.LookPath("python3")
	if err != nil {
		b.Skip("python3 not installed")
	}
	n := max(b.N, 1)
	bare := barePipe(b, py, n, false)
	lockstep := barePipe(b, py, n, true)

	dir := b.TempDir()
	h, err := runtime.NewHost(runtime.Options{StateDir: dir, OOB: "log:" + filepath.Join(dir, "log") + ",debug:2"})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	}()
	s := &sink{want: n, done: make(chan struct{}, 1)}
	routes := map[string]any{"routes": []any{map[string]any{
		"match": map[string]any{"source": "Cat"}, "forwards": []any{map[string]any{"qname": "Sink"}}}}}
	for _, spec := range []runtime.TaskSpec{
		{Name: "Sink", New: func() runtime.Task { return s }},
		{Name: "Router", New: router.New, Config: routes},
		{Name: "Cat", New: mmexec.New, Config: map[string]any{"command": py, "args": []any{"-c", catPy}}},
	} {
		if err := h.Start(spec); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	t0 := time.Now()
	for i := range n {
		if err := h.Send("Cat", runtime.Message{"i": float64(i), "line": "a line of a log file"}); err != nil {
			b.Fatal(err)
		}
	}
	<-s.done
	d := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(n)/d.Seconds(), "exec-msgs/s")
	b.ReportMetric(float64(n)/bare.Seconds(), "bare-pipe-msgs/s")
	b.ReportMetric(float64(n)/lockstep.Seconds(), "bare-lockstep-msgs/s")
}

// barePipe feeds n messages to catPy on a pipe and reads its n answers.
func barePipe(b *testing.B, py string, n int, lockstep bool) time.Duration {
	cmd := exec.Command(py, "-c", catPy)
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer in.Close()
	r := bufio.NewReader(out)
	msg := func(i int) []byte { return fmt.Appendf(nil, "{\"i\":%d,\"line\":\"a line of a log file\"}\n", i) }
	t0 := time.Now()
	if lockstep {
		for i := range n {
			in.Write(msg(i))
			if _, err := r.ReadSlice('\n'); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(t0)
	}
	go func() {
		w := bufio.NewWriter(in)
		for i := range n {
			w.Write(msg(i))
		}
		w.Flush()
	}()
	for range n {
		if _, err := r.ReadSlice('\n'); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(t0)
}
