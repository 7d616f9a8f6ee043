package main

import (
	"fmt"

	"github.com/multimodule/multimodule/internal/control"
)

// request sends one control operation to the daemon and waits for its
// reply. With no daemon serving the control queue it fails at once, and
// sends nothing that would wait in the queue.
func (g *globalOptions) request(op control.Op) (control.Reply, error) {
	tr, err := g.transit()
	if err != nil {
		return control.Reply{}, err
	}
	if !tr.Served(g.controlQueue) {
		return control.Reply{}, fmt.Errorf("no daemon serves control queue %s in %s: is multimodule running with the same -q and -T?",
			g.controlQueue, tr.Dir())
	}
	return control.Request(tr, g.controlQueue, op, g.timeout)
}
