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
		{"exit_externals a number", `{"type":"cleanly_exit","exit_externals":1,"reply_to":"r","expires":1e12}`, "exit_externals", "r"},
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
		Tasks: []TaskStatus{{Name: "A", Where: "internal", Status: "held",
			DesiredSpec:    DesiredSpec{External: &f},
			ReconcileState: ReconcileState{HeldReason: HeldFailsafe, HoldMessage: "failsafe: memory 300MiB reached 200MiB"},
			Conditions:     []Condition{{Type: "Stalled", Status: "True", Reason: HeldFailsafe}},
			HostReport:     HostReport{MessagesIn: &n},
			Queue:          &QueueStatus{Messages: 1, Bytes: 10, Capacity: 100, Fill: 0.1}}},
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

// A fully populated TaskStatus marshals to exactly this JSON: every field,
// under its wire name, in this order (what `mmctl status -o json` prints),
// and reads back the same. The JSON is the protocol, so it is spelled out
// here rather than derived from the type.
func TestTaskStatusJSON(t *testing.T) {
	yes, no := true, false
	gen, obs := int64(3), int64(2)
	fails := 1
	in, out, f, sf, depth, sgen := uint64(10), uint64(9), uint64(2), uint64(1), uint64(4), uint64(7)
	busy := 0.25
	ts := TaskStatus{
		Name: "A", Where: "external", Status: "held", Running: true, Pid: 1234, UptimeS: 5.5,
		DesiredSpec: DesiredSpec{SpecKind: "Router", SpecHash: "h2", External: &yes, Disabled: &no},
		AppliedSpec: AppliedSpec{AppliedHash: "h1", AppliedKind: "Hog", AppliedExternal: &no, Applied: json.RawMessage(`{"kind":"Hog"}`)},
		ReconcileState: ReconcileState{
			Generation: &gen, ObservedGeneration: &obs, FailuresInARow: &fails, Restarts: &fails, LastError: "exit 1",
			HeldReason: HeldFailsafe, HoldMessage: "failsafe: memory 300MiB reached 200MiB",
		},
		Conditions: []Condition{{Type: "Stalled", Status: "True", Reason: HeldFailsafe, Message: "m"}},
		HostReport: HostReport{
			Kind: "Hog", Stateful: &yes, MessagesIn: &in, MessagesOut: &out, Failures: &f,
			SendFailures: &sf, MailboxDepth: &depth, BusyS: &busy, StateGeneration: &sgen,
		},
		Metrics: map[string]float64{"cpu": 0.5},
		Levels:  map[string]string{"memory": "critical"},
		Queue:   &QueueStatus{Messages: 1, Bytes: 10, Capacity: 100, Fill: 0.1},
	}
	const want = `{"name":"A","where":"external","status":"held","running":true,"pid":1234,"uptime_s":5.5,` +
		`"spec_kind":"Router","spec_hash":"h2","external":true,"disabled":false,` +
		`"applied_hash":"h1","applied_kind":"Hog","applied_external":false,"applied_spec":{"kind":"Hog"},` +
		`"generation":3,"observed_generation":2,"failures_in_a_row":1,"restarts":1,"last_error":"exit 1",` +
		`"held_reason":"Failsafe","hold_message":"failsafe: memory 300MiB reached 200MiB",` +
		`"conditions":[{"type":"Stalled","status":"True","reason":"Failsafe","message":"m"}],` +
		`"kind":"Hog","stateful":true,"messages_in":10,"messages_out":9,"failures":2,` +
		`"send_failures":1,"mailbox_depth":4,"busy_s":0.25,"state_generation":7,` +
		`"metrics":{"cpu":0.5},"levels":{"memory":"critical"},` +
		`"queue":{"messages":1,"bytes":10,"capacity":100,"fill":0.1}}`
	b, err := json.Marshal(ts)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var got TaskStatus
	if err := json.Unmarshal([]byte(want), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ts) {
		t.Fatalf("read back %+v, want %+v", got, ts)
	}

	// Left out when it does not apply: a bare task is its name, where,
	// status and (never left out) conditions.
	b, err = json.Marshal(TaskStatus{Name: "B", Where: "internal", Status: "stopped"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"B","where":"internal","status":"stopped","running":false,"conditions":null}`; string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}
