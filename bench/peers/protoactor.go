package peers

import (
	"io"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
)

// ProtoActor runs the workloads on asynkron/protoactor-go, local actors.
type ProtoActor struct {
	sys              *actor.ActorSystem
	msgs             []map[string]any
	done             chan struct{}
	sink, ping, pong *actor.PID
	fans             []*actor.PID
	fanLeft          fanCount
}

type want struct{ n int }
type start struct{ n int }

func NewProtoActor() *ProtoActor {
	quiet := actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	})
	p := &ProtoActor{sys: actor.NewActorSystem(quiet), msgs: Msgs(), done: make(chan struct{}, 1)}
	root := p.sys.Root
	var wantN, got int
	p.sink = root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case want:
			wantN, got = m.n, 0
		case map[string]any:
			if got++; got == wantN {
				p.done <- struct{}{}
			}
		}
	}))
	p.pong = root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if m, ok := c.Message().(map[string]any); ok {
			c.Send(p.ping, m)
		}
	}))
	left := 0
	p.ping = root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case start:
			left = m.n
			c.Send(p.pong, p.msgs[0])
		case map[string]any:
			if left--; left == 0 {
				p.done <- struct{}{}
				return
			}
			c.Send(p.pong, m)
		}
	}))
	return p
}

func (p *ProtoActor) OneToOne(n int) {
	root := p.sys.Root
	root.Send(p.sink, want{n})
	for i := range n {
		root.Send(p.sink, p.msgs[i&1023])
	}
	<-p.done
}

func (p *ProtoActor) PingPong(n int) {
	p.sys.Root.Send(p.ping, start{n})
	<-p.done
}

func (p *ProtoActor) FanOut(n, actors int) {
	root := p.sys.Root
	for len(p.fans) < actors {
		p.fans = append(p.fans, root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
			if _, ok := c.Message().(map[string]any); ok && p.fanLeft.done() {
				p.done <- struct{}{}
			}
		})))
	}
	p.fanLeft.expect(n)
	for i := range n {
		root.Send(p.fans[i%actors], p.msgs[i&1023])
	}
	<-p.done
}

func (p *ProtoActor) Close() { p.sys.Shutdown() }
