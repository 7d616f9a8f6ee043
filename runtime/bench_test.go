package runtime

import (
	"context"
	"testing"
	"time"
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
// same run. Reported: bare-msgs/s, mm-msgs/s and mm/bare.
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
	b.StopTimer()

	bareRate := float64(n) / bare.Seconds()
	ourRate := float64(n) / ours.Seconds()
	b.ReportMetric(float64(ours.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(bareRate, "bare-msgs/s")
	b.ReportMetric(ourRate, "mm-msgs/s")
	b.ReportMetric(ourRate/bareRate, "mm/bare")
}
