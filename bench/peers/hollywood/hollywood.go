// Package hollywood runs the peers' workloads on anthdm/hollywood. It is a
// package of its own, benchmarked in a test binary of its own, because
// hollywood and protoactor-go both register a protobuf file "actor.proto"
// with a message actor.PID, and the protobuf runtime panics at init when
// one binary holds both.
package hollywood

import (
	"strconv"
	"sync/atomic"

	"github.com/anthdm/hollywood/actor"

	"github.com/multimodule/multimodule/bench/peers/workload"
)

// Hollywood runs the workloads on anthdm/hollywood, local actors, as its
// own BenchmarkSendMessageLocal sends (Engine.Send from outside, Context.Send
// between actors).
type Hollywood struct {
	e                *actor.Engine
	msgs             []map[string]any
	done             chan struct{}
	sink, ping, pong *actor.PID
	fans             []*actor.PID
	fanLeft          atomic.Int64
}

// want and start tell the sink and the pinger how many messages make a
// round (as in package peers).
type want struct{ n int }
type start struct{ n int }

func New() *Hollywood {
	e, err := actor.NewEngine(actor.NewEngineConfig())
	if err != nil {
		panic(err)
	}
	h := &Hollywood{e: e, msgs: workload.Msgs(), done: make(chan struct{}, 1)}
	var wantN, got int
	h.sink = e.SpawnFunc(func(c *actor.Context) {
		switch m := c.Message().(type) {
		case want:
			wantN, got = m.n, 0
		case map[string]any:
			if got++; got == wantN {
				h.done <- struct{}{}
			}
		}
	}, "sink")
	h.pong = e.SpawnFunc(func(c *actor.Context) {
		if m, ok := c.Message().(map[string]any); ok {
			c.Send(h.ping, m)
		}
	}, "pong")
	left := 0
	h.ping = e.SpawnFunc(func(c *actor.Context) {
		switch m := c.Message().(type) {
		case start:
			left = m.n
			c.Send(h.pong, h.msgs[0])
		case map[string]any:
			if left--; left == 0 {
				h.done <- struct{}{}
				return
			}
			c.Send(h.pong, m)
		}
	}, "ping")
	return h
}

func (h *Hollywood) OneToOne(n int) {
	h.e.Send(h.sink, want{n})
	for i := range n {
		h.e.Send(h.sink, h.msgs[i&1023])
	}
	<-h.done
}

func (h *Hollywood) PingPong(n int) {
	h.e.Send(h.ping, start{n})
	<-h.done
}

func (h *Hollywood) FanOut(n, actors int) {
	for len(h.fans) < actors {
		h.fans = append(h.fans, h.e.SpawnFunc(func(c *actor.Context) {
			if _, ok := c.Message().(map[string]any); ok && h.fanLeft.Add(-1) == 0 {
				h.done <- struct{}{}
			}
		}, "fan", actor.WithID(strconv.Itoa(len(h.fans)))))
	}
	h.fanLeft.Store(int64(n))
	for i := range n {
		h.e.Send(h.fans[i%actors], h.msgs[i&1023])
	}
	<-h.done
}

func (h *Hollywood) Close() {
	for _, pid := range append([]*actor.PID{h.sink, h.ping, h.pong}, h.fans...) {
		<-h.e.Poison(pid).Done()
	}
}
