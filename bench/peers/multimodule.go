package peers

import (
	"context"
	"fmt"
	"os"
	"time"

	mm "github.com/multimodule/multimodule"
	"github.com/multimodule/multimodule/runtime"
)

// MultiModule runs the workloads as tasks of one host: messages go task
// to task with ctx.Send, as a user's tasks send them.
type MultiModule struct {
	h    *runtime.Host
	dir  string
	msgs []map[string]any
	done chan struct{}
	// fan is how many fan-out receivers exist (they are started once).
	fan     int
	sink    *counter
	fanLeft fanCount
}

func NewMultiModule() *MultiModule {
	dir, _ := os.MkdirTemp("", "peers-mm")
	h, err := runtime.NewHost(runtime.Options{StateDir: dir, OOB: "debug:2"})
	if err != nil {
		panic(err)
	}
	m := &MultiModule{h: h, dir: dir, msgs: Msgs(), done: make(chan struct{}, 1)}
	m.sink = &counter{m: m}
	m.start("Sink", m.sink)
	m.start("Sender", sender{m})
	m.start("Ping", &pinger{m: m})
	m.start("Pong", ponger{})
	return m
}

func (m *MultiModule) start(name string, t mm.Task) {
	if err := m.h.Start(runtime.TaskSpec{Name: name, New: func() mm.Task { return t }}); err != nil {
		panic(err)
	}
}

// counter signals done after want messages.
type counter struct {
	m         *MultiModule
	want, got int
}

func (c *counter) Message(mm.Context, mm.Message) error {
	if c.got++; c.got == c.want {
		c.m.done <- struct{}{}
	}
	return nil
}

// sender sends n messages to each of the named receivers in turn.
type sender struct{ m *MultiModule }

func (s sender) Message(ctx mm.Context, msg mm.Message) error {
	to := msg["to"].([]string)
	n := msg["n"].(int)
	if len(to) == 1 {
		for i := range n {
			if err := ctx.Send(to[0], s.m.msgs[i&1023]); err != nil {
				return err
			}
		}
		return nil
	}
	for i := range n {
		if err := ctx.Send(to[i%len(to)], s.m.msgs[i&1023]); err != nil {
			return err
		}
	}
	return nil
}

type pinger struct {
	m       *MultiModule
	n, left int
}

func (p *pinger) Message(ctx mm.Context, msg mm.Message) error {
	if n, ok := msg["n"].(int); ok {
		p.left = n
	} else if p.left--; p.left == 0 {
		p.m.done <- struct{}{}
		return nil
	}
	return ctx.Send("Pong", p.m.msgs[0])
}

type ponger struct{}

func (ponger) Message(ctx mm.Context, msg mm.Message) error { return ctx.Send("Ping", msg) }

func (m *MultiModule) OneToOne(n int) {
	// Set before the first message is sent: the mailboxes order the write
	// before the sink's reads.
	m.sink.want, m.sink.got = n, 0
	m.h.Send("Sender", mm.Message{"to": []string{"Sink"}, "n": n})
	<-m.done
}

func (m *MultiModule) PingPong(n int) {
	m.h.Send("Ping", mm.Message{"n": n})
	<-m.done
}

func (m *MultiModule) FanOut(n, actors int) {
	names := make([]string, actors)
	for i := range names {
		names[i] = fmt.Sprintf("Fan%04d", i)
		if i >= m.fan {
			m.start(names[i], &fanSink{m: m})
		}
	}
	m.fan = max(m.fan, actors)
	m.fanLeft.expect(n)
	m.h.Send("Sender", mm.Message{"to": names, "n": n})
	<-m.done
}

func (m *MultiModule) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.h.Shutdown(ctx)
	m.h.Close()
	os.RemoveAll(m.dir)
}

type fanSink struct{ m *MultiModule }

func (f *fanSink) Message(mm.Context, mm.Message) error {
	if f.m.fanLeft.done() {
		f.m.done <- struct{}{}
	}
	return nil
}
