package control

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// op is one operation as it arrives: JSON decoded into a message.
func op(t *testing.T, js string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDecodeOpRefusesMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, op, want string
		// replyTo is what the refusal can still be sent to.
		replyTo string
	}{
		{"not an object", `["status"]`, "JSON object", ""},
		{"null", `null`, "JSON object", ""},
		{"no expires", `{"type":"status","reply_to":"r","id":"i"}`, "needs expires", "r"},
		{"expires a string", `{"type":"status","reply_to":"r","expires":"soon"}`, "expires", "r"},
		{"unknown type", `{"type":"format_disk","reply_to":"r","expires":1e12}`, `unknown control type "format_disk"`, "r"},
		{"no type", `{"reply_to":"r","expires":1e12}`, "unknown control type", "r"},
		{"type a number", `{"type":3,"reply_to":"r","expires":1e12}`, "type", "r"},
		{"dry_run a string", `{"type":"reconcile","dry_run":"yes","expires":1e12}`, "dry_run", ""},
		{"exit_externals misspelled", `{"type":"cleanly_exit","exit_external":true,"expires":1e12}`, "exit_external", ""},
		{"clear without task", `{"type":"clear","reply_to":"r","expires":1e12}`, "needs a task", "r"},
		{"task an object", `{"type":"clear","task":{"a":1},"expires":1e12}`, "task", ""},
		{"id a number", `{"type":"status","id":7,"reply_to":"r","expires":1e12}`, "id", "r"},
		{"reply_to a list", `{"type":"status","reply_to":["r"],"expires":1e12}`, "reply_to", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeOp(op(t, tc.op))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			if got.ReplyTo != tc.replyTo {
				t.Fatalf("reply_to %q, want %q", got.ReplyTo, tc.replyTo)
			}
		})
	}
}

func TestOpsRefusesOtherMessages(t *testing.T) {
	for _, m := range []map[string]any{
		nil,
		{},
		{"control": []any{}},
		{EnvelopeKey: "control"},
		{EnvelopeKey: map[string]any{"control": map[string]any{"type": "status"}}},
		{EnvelopeKey: map[string]any{"transform": []any{}}},
	} {
		if _, err := Ops(m); !errors.Is(err, ErrMalformed) {
			t.Errorf("Ops(%v): %v, want ErrMalformed", m, err)
		}
	}
}

// A request survives the trip through a message and JSON (as transit
// carries it) unchanged, and so does a reply.
func TestRoundTrip(t *testing.T) {
	for _, want := range []Op{
		{Type: Status, ID: "i", ReplyTo: "r", Expires: 1712345678.123456},
		{Type: Reconcile, ReplyTo: "r", Expires: 1, DryRun: true},
		{Type: Clear, Task: "Example1", Expires: 2},
		{Type: CleanlyExit, ExitExternals: true, Expires: 3},
	} {
		msg, err := Encode(want)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(msg)
		var wire map[string]any
		json.Unmarshal(b, &wire)
		ops, err := Ops(wire)
		if err != nil || len(ops) != 1 {
			t.Fatalf("Ops: %v, %d ops", err, len(ops))
		}
		got, err := DecodeOp(ops[0])
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}

	f := false
	n := uint64(0)
	reply := Reply{Type: Status, ID: "i", OK: true, Status: &StatusReply{
		Daemon: DaemonStatus{Pid: 42, ConfigDir: "c", Metrics: map[string]float64{"cpu": 0.5}, Levels: map[string]string{}},
		Tasks: []TaskStatus{{Name: "A", Where: "internal", Status: "held", External: &f, MessagesIn: &n,
			HeldReason: HeldFailsafe, HoldMessage: "failsafe: memory 300MiB reached 200MiB",
			Conditions: []Condition{{Type: "Stalled", Status: "True", Reason: HeldFailsafe}},
			Queue:      &QueueStatus{Messages: 1, Bytes: 10, Capacity: 100, Fill: 0.1}}},
	}, Results: []ActionResult{{Task: "A", Action: "+ start A (internal)", Error: "no"}}}
	msg, err := reply.Message()
	if err != nil {
		t.Fatal(err)
	}
	// Fields that are left out when they do not apply stay out; a false or
	// zero that applies stays in.
	task := msg["status"].(map[string]any)["tasks"].([]any)[0].(map[string]any)
	for _, k := range []string{"pid", "disabled", "generation", "applied_external", "metrics"} {
		if _, ok := task[k]; ok {
			t.Errorf("%s present, want it left out", k)
		}
	}
	if task["external"] != false || task["messages_in"] != 0.0 || task["held_reason"] != "Failsafe" {
		t.Errorf("task %v", task)
	}
	got, err := DecodeReply(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, reply) {
		t.Fatalf("got %+v, want %+v", got, reply)
	}
}

func TestDecodeReplyRefusesWrongTypes(t *testing.T) {
	for _, m := range []map[string]any{
		{"type": "status", "ok": "yes"},
		{"type": "status", "ok": true, "status": []any{}},
		{"type": "status", "ok": true, "status": map[string]any{"tasks": map[string]any{}}},
	} {
		if _, err := DecodeReply(m); err == nil {
			t.Errorf("DecodeReply(%v) accepted it", m)
		}
	}
}

func TestHoldLabel(t *testing.T) {
	for _, tc := range []struct{ why, msg, want string }{
		{HeldFailsafe, "failsafe: memory 300MiB reached 200MiB", "failsafe: memory 300MiB reached 200MiB"},
		{HeldFailsafe, "memory 300MiB reached 200MiB", "failsafe: memory 300MiB reached 200MiB"},
		{HeldRetriesExhausted, "+ start X (external): exit 1", "retries exhausted: + start X (external): exit 1"},
		{"", "boom", "retries exhausted: boom"}, // a daemon that did not say why
		{HeldFailsafe, "", "failsafe"},
	} {
		if got := HoldLabel(tc.why, tc.msg); got != tc.want {
			t.Errorf("HoldLabel(%q, %q) = %q, want %q", tc.why, tc.msg, got, tc.want)
		}
	}
}
