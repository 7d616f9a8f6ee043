package main

import "github.com/multimodule/multimodule/internal/control"

// request sends one control operation to the daemon and waits for its
// reply.
func (g *globalOptions) request(op map[string]any) (map[string]any, error) {
	tr, err := g.transit()
	if err != nil {
		return nil, err
	}
	return control.Request(tr, g.controlQueue, op, g.timeout)
}
