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

// Request sends req to the daemon on queue and waits up to timeout for
// the reply, on a private queue removed afterwards. It sets req's ID,
// ReplyTo and Expires: the request expires with the wait, so a daemon
// started later never acts on it. A reply with OK false is returned with
// an error.
func Request(tr *transit.Transit, queue string, req Op, timeout time.Duration) (Reply, error) {
	var r [4]byte
	rand.Read(r[:])
	replyName := fmt.Sprintf("mmctl-reply-%d-%s", os.Getpid(), hex.EncodeToString(r[:]))
	replyQ, err := tr.Queue(replyName)
	if err != nil {
		return Reply{}, err
	}
	defer tr.Remove(replyName)
	req.ReplyTo, req.ID = replyName, replyName
	req.Expires = float64(time.Now().Add(timeout).UnixMicro()) / 1e6
	msg, err := Encode(req)
	if err != nil {
		return Reply{}, err
	}
	if err := tr.Send(queue, msg); err != nil {
		return Reply{}, err
	}
	deadline := time.Now().Add(timeout)
	backoff := time.Millisecond
	for {
		d, err := replyQ.Receive(false)
		if err != nil && !errors.Is(err, transit.ErrEmpty) {
			return Reply{}, err
		}
		for _, m := range d.Msgs {
			if m["id"] != replyName {
				continue
			}
			reply, err := DecodeReply(m)
			if err != nil {
				return Reply{}, err
			}
			if !reply.OK {
				return reply, fmt.Errorf("%s: %s", req.Type, reply.Error)
			}
			return reply, nil
		}
		if time.Now().After(deadline) {
			return Reply{}, fmt.Errorf("no reply on control queue %s within %v: is a multimodule daemon running with -q %s -T %s?",
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
