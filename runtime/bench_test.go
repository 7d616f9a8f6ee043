package runtime

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// benchMsgs are the small maps both paths carry, allocated up front so the
// benchmark measures delivery, not map construction.
func benchMsgs() []Message {
	msgs := make([]Message, 1024)
	for i := range msgs {
		msgs[i] = Message{"ct": float64(i), "outstr": "howdy", "source": "Example1"}
	}
	return msgs
}

// bareChannel moves n maps from one goroutine to another over a buffered
// channel: the floor any in-process delivery is compared with.
func bareChannel(n int, msgs []Message) time.Duration {
	ch := make(chan Message, 1024)
	done := make(chan struct{})
	go func() {
		sum := 0
		for range n {
			m := <-ch
			sum += len(m)
		}
		_ = sum
		close(done)
	}()
	t0 := time.Now()
	for i := range n {
		ch <- msgs[i&1023]
	}
	<-done
	return time.Since(t0)
}

type benchSender struct{ msgs []Message }

func (s benchSender) Message(ctx Context, m Message) error {
	n := m["n"].(int)
	for i := range n {
		if err := ctx.Send("Sink", s.msgs[i&1023]); err != nil {
			return err
		}
	}
	return nil
}

type benchSink struct {
	want int
	got  int
	done chan struct{}
}

func (s *benchSink) Message(_ Context, m Message) error {
	s.got += len(m) - 2 // touch the map as the bare consumer does
	if s.got == s.want {
		close(s.done)
	}
	return nil
}

// BenchmarkInProcessDelivery measures one task's Send to another task in
// the same process against a bare Go channel carrying the same maps, in the
// same run. Reported: bare-msgs/s, mm-msgs/s and mm/bare, and
// mm-acked-msgs/s: the same with every message in a lineage (what a
// message taken from a queue sets off), the cost of at least once.
func BenchmarkInProcessDelivery(b *testing.B) {
	msgs := benchMsgs()
	h, err := NewHost(Options{StateDir: b.TempDir(), OOB: "debug:2"})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	}()
	n := max(b.N, 1)
	sink := &benchSink{want: n, done: make(chan struct{})}
	for _, spec := range []TaskSpec{
		{Name: "Sink", New: func() Task { return sink }},
		{Name: "Sender", New: func() Task { return benchSender{msgs} }},
	} {
		if err := h.Start(spec); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	bare := bareChannel(n, msgs)
	t0 := time.Now()
	h.Send("Sender", Message{"n": n})
	<-sink.done
	ours := time.Since(t0)
	// The same, with the trigger taken from a queue: every message is a
	// member of its lineage (counted in, counted out), as at least once
	// across in-process hops costs.
	sink.got, sink.done = 0, make(chan struct{})
	lin := newLineage(nil)
	t0 = time.Now()
	if err := h.deliverAll("Sender", []Message{{"n": n}}, lin); err != nil {
		b.Fatal(err)
	}
	<-sink.done
	acked := time.Since(t0)
	lin.done()
	b.StopTimer()

	bareRate := float64(n) / bare.Seconds()
	ourRate := float64(n) / ours.Seconds()
	b.ReportMetric(float64(ours.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(bareRate, "bare-msgs/s")
	b.ReportMetric(ourRate, "mm-msgs/s")
	b.ReportMetric(ourRate/bareRate, "mm/bare")
	b.ReportMetric(float64(n)/acked.Seconds(), "mm-acked-msgs/s")
}

// rss is this process's resident memory in bytes.
func rss(b *testing.B) float64 {
	s, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(s))
	pages, _ := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize())
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idleCPU is the share of one core this process uses over d doing nothing
// but what runs in the background.
func idleCPU(d time.Duration) float64 {
	c0 := cpuTime()
	time.Sleep(d)
	return (cpuTime() - c0).Seconds() / d.Seconds()
}

type idleTask struct{}

func (idleTask) Message(Context, Message) error { return nil }

// BenchmarkScale10000Tasks starts 10,000 internal tasks, each served from
// its own System V queue, and reports the start time, the memory they add
// and the CPU the idle daemon then uses (the inbound's 1 s safety sweep of
// every queue is most of it). The baseline, in the same run, is 10,000
// goroutines each waiting on a channel.
func BenchmarkScale10000Tasks(b *testing.B) {
	const n = 10000
	settle := func() float64 { debug.FreeOSMemory(); return rss(b) }

	base0 := settle()
	t0 := time.Now()
	stop := make(chan struct{})
	chans := make([]chan Message, n)
	var wg sync.WaitGroup
	for i := range chans {
		chans[i] = make(chan Message, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-chans[i]:
			case <-stop:
			}
		}()
	}
	bareStart := time.Since(t0)
	bareRSS := settle() - base0
	bareIdle := idleCPU(3 * time.Second)
	close(stop)
	wg.Wait()

	tr, err := transit.Open(transit.Options{Dir: testenv.TransitDir(b)})
	if err != nil {
		b.Fatal(err)
	}
	h, err := NewHost(Options{StateDir: b.TempDir(), OOB: "debug:2"})
	if err != nil {
		b.Fatal(err)
	}
	in, err := NewInbound(h, tr, "bench.doorbell", func(err error) { b.Error(err) })
	if err != nil {
		b.Fatal(err)
	}
	ours0 := settle()
	b.ResetTimer()
	t0 = time.Now()
	specs := make([]TaskSpec, n)
	for i := range specs {
		specs[i] = TaskSpec{Name: fmt.Sprintf("T%05d", i), New: func() Task { return idleTask{} }}
	}
	for _, err := range h.StartAll(specs) {
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, s := range specs {
		if err := in.ServeTask(s.Name); err != nil {
			b.Fatal(err)
		}
	}
	in.Start()
	ourStart := time.Since(t0)
	b.StopTimer()
	ourRSS := settle() - ours0
	ourIdle := idleCPU(3 * time.Second)
	in.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ourStart.Seconds()*1000, "start-ms")
	b.ReportMetric(bareStart.Seconds()*1000, "bare-start-ms")
	b.ReportMetric(ourRSS/(1<<20), "rss-MiB")
	b.ReportMetric(bareRSS/(1<<20), "bare-rss-MiB")
	b.ReportMetric(ourIdle*100, "idle-%core")
	b.ReportMetric(bareIdle*100, "bare-idle-%core")
}
