package peers

import (
	"ergo.services/ergo"
	"ergo.services/ergo/act"
	"ergo.services/ergo/gen"
)

// Ergo runs the workloads on ergo-services/ergo, local processes of one
// node with networking and logging off (as its own ping benchmark runs):
// Node.Send from outside, Process.Send between actors.
type Ergo struct {
	node             gen.Node
	msgs             []map[string]any
	done             chan struct{}
	sink, ping, pong gen.PID
	fans             []gen.PID
	fanLeft          fanCount
}

// ergoActor is every actor of the workloads: handle says what it does
// with each message (it may send with the process it is given).
type ergoActor struct {
	act.Actor
	handle func(p gen.Process, m any)
}

func (a *ergoActor) HandleMessage(_ gen.PID, m any) error {
	a.handle(a, m)
	return nil
}

func NewErgo() *Ergo {
	node, err := ergo.StartNode("peers@localhost", gen.NodeOptions{
		Network: gen.NetworkOptions{Mode: gen.NetworkModeDisabled},
		Log:     gen.LogOptions{Level: gen.LogLevelDisabled},
	})
	if err != nil {
		panic(err)
	}
	r := &Ergo{node: node, msgs: Msgs(), done: make(chan struct{}, 1)}
	var wantN, got int
	r.sink = r.spawn(func(_ gen.Process, m any) {
		switch m := m.(type) {
		case want:
			wantN, got = m.n, 0
		case map[string]any:
			if got++; got == wantN {
				r.done <- struct{}{}
			}
		}
	})
	r.pong = r.spawn(func(p gen.Process, m any) {
		if m, ok := m.(map[string]any); ok {
			_ = p.Send(r.ping, m)
		}
	})
	left := 0
	r.ping = r.spawn(func(p gen.Process, m any) {
		switch m := m.(type) {
		case start:
			left = m.n
			_ = p.Send(r.pong, r.msgs[0])
		case map[string]any:
			if left--; left == 0 {
				r.done <- struct{}{}
				return
			}
			_ = p.Send(r.pong, m)
		}
	})
	return r
}

func (r *Ergo) spawn(handle func(gen.Process, any)) gen.PID {
	pid, err := r.node.Spawn(func() gen.ProcessBehavior { return &ergoActor{handle: handle} }, gen.ProcessOptions{})
	if err != nil {
		panic(err)
	}
	return pid
}

func (r *Ergo) OneToOne(n int) {
	r.send(r.sink, want{n})
	for i := range n {
		r.send(r.sink, r.msgs[i&1023])
	}
	<-r.done
}

func (r *Ergo) PingPong(n int) {
	r.send(r.ping, start{n})
	<-r.done
}

func (r *Ergo) FanOut(n, actors int) {
	for len(r.fans) < actors {
		r.fans = append(r.fans, r.spawn(func(_ gen.Process, m any) {
			if _, ok := m.(map[string]any); ok && r.fanLeft.done() {
				r.done <- struct{}{}
			}
		}))
	}
	r.fanLeft.expect(n)
	for i := range n {
		r.send(r.fans[i%actors], r.msgs[i&1023])
	}
	<-r.done
}

// send from outside any process; a local send fails only if the process
// is gone, which would hang the workload anyway.
func (r *Ergo) send(to gen.PID, m any) {
	if err := r.node.Send(to, m); err != nil {
		panic(err)
	}
}

func (r *Ergo) Close() { r.node.StopForce() }
