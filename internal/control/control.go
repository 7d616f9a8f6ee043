// Package control is the client side of the daemon's control queue, for
// mmctl and the tests.
package control

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/multimodule/multimodule/transit"
)

// Request sends one control operation (op["type"] and its arguments) to
// the daemon on queue and waits up to timeout for the reply, on a private
// queue removed afterwards. The request expires with the wait, so a
// daemon started later never acts on it. A reply with ok false is
// returned with an error.
func Request(tr *transit.Transit, queue string, op map[string]any, timeout time.Duration) (map[string]any, error) {
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
	op["expires"] = float64(time.Now().Add(timeout).UnixMicro()) / 1e6
	if err := tr.Send(queue, map[string]any{".multimodule": map[string]any{"control": []any{op}}}); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
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
				queue, timeout, queue, tr.Dir())
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 20*time.Millisecond)
	}
}

// DefaultQueue is the daemon's control queue unless -q says otherwise.
const DefaultQueue = "MultiModule_control"

// OOBQueue is where external processes send the daemon their out-of-band
// records and reports: beside the control queue, never mixed with it.
func OOBQueue(controlQueue string) string { return controlQueue + ".oob" }

// Keys of what an external process sends to OOBQueue, signed with its
// spec token.
const (
	FromKey   = "from_task"
	TokenKey  = "token"
	ReportKey = ".multimodule_report"
)
