package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/multimodule/multimodule/transit"
)

// request sends one control operation to the daemon and waits for its
// reply on a private queue, removed afterwards. The request expires with
// the wait, so a daemon started later never acts on it.
func (g *globalOptions) request(op map[string]any) (map[string]any, error) {
	tr, err := g.transit()
	if err != nil {
		return nil, err
	}
	var r [4]byte
	rand.Read(r[:])
	replyName := fmt.Sprintf("mmctl-reply-%d-%s", os.Getpid(), hex.EncodeToString(r[:]))
	reply, err := tr.Queue(replyName)
	if err != nil {
		return nil, err
	}
	defer tr.Remove(replyName)
	op["reply_to"] = replyName
	op["id"] = replyName
	op["expires"] = float64(time.Now().Add(g.timeout).UnixMicro()) / 1e6
	if err := tr.Send(g.controlQueue, map[string]any{".multimodule": map[string]any{"control": []any{op}}}); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(g.timeout)
	backoff := time.Millisecond
	for {
		d, err := reply.Receive(false)
		if err != nil && !errors.Is(err, transit.ErrEmpty) {
			return nil, err
		}
		for _, m := range d.Msgs {
			if m["id"] != replyName {
				continue
			}
			if ok, _ := m["ok"].(bool); !ok {
				return m, fmt.Errorf("%s: %v", op["type"], m["error"])
			}
			return m, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no reply on control queue %s within %v: is a multimodule daemon running with -q %s -T %s?",
				g.controlQueue, g.timeout, g.controlQueue, tr.Dir())
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 20*time.Millisecond)
	}
}
