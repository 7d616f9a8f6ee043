package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/transit"
)

// errNoTransitDir is returned by the commands that only read when the
// transit dir does not exist: they create nothing (a typo in -T must not
// leave a directory behind).
var errNoTransitDir = errors.New("no such transit dir")

// existingTransit opens the transit dir only if it exists.
func (g *globalOptions) existingTransit() (*transit.Transit, error) {
	if _, err := os.Stat(g.transitDir); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w %s (nothing was created: is -T right?)", errNoTransitDir, g.transitDir)
	} else if err != nil {
		return nil, fmt.Errorf("transit dir: %w", err)
	}
	return g.transit()
}

// request sends one control operation to the daemon and waits for its
// reply. With no daemon serving the control queue it fails at once, and
// sends nothing that would wait in the queue.
func (g *globalOptions) request(op control.Op) (control.Reply, error) {
	tr, err := g.existingTransit()
	if err != nil {
		return control.Reply{}, fmt.Errorf("no daemon: %w", err)
	}
	if !tr.Served(g.controlQueue) {
		return control.Reply{}, fmt.Errorf("no daemon serves control queue %s in %s: is multimodule running with the same -q and -T?",
			g.controlQueue, tr.Dir())
	}
	return control.Request(tr, g.controlQueue, op, g.timeout)
}

// oneOff asks the daemon for a one-off action on a task (restart, stop,
// start) and says what it does. status shows the action until it is done.
func (g *globalOptions) oneOff(t control.OpType, task, doing string) error {
	if _, err := g.request(control.Op{Type: t, Task: task}); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%s: %s (mmctl status %s shows when it is done)\n", task, doing, task)
	return nil
}

// status asks the daemon for its status.
func (g *globalOptions) status() (*control.StatusReply, error) {
	reply, err := g.request(control.Op{Type: control.Status})
	if err != nil {
		return nil, err
	}
	if reply.Status == nil {
		return nil, errors.New("the daemon's status reply has no status")
	}
	return reply.Status, nil
}
