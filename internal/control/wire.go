package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/transit"
)

// The control protocol: what mmctl (and the tests) send on the daemon's
// control queue and what the daemon answers. Both sides use these types,
// so a field is named in one place only. The JSON names are the protocol
// on the wire (and what `mmctl status -o json` prints): keep them.

// EnvelopeKey is the key of a control message's envelope:
//
//	{".multimodule": {"control": [request, ...]}}
const EnvelopeKey = ".multimodule"

// OpType says what a control request asks for.
type OpType string

// The control requests the daemon answers.
const (
	Status      OpType = "status"
	Reconcile   OpType = "reconcile"    // DryRun: only say what would be done
	Clear       OpType = "clear"        // Task: give a held task another chance
	CleanlyExit OpType = "cleanly_exit" // ExitExternals: stop the externals too
	// One-off actions on Task (reconcile.OneOff): restart it, stop it
	// until start, start it again.
	RestartTask OpType = "restart"
	StopTask    OpType = "stop"
	StartTask   OpType = "start"
)

// Valid reports whether the daemon knows t.
func (t OpType) Valid() bool {
	switch t {
	case Status, Reconcile, Clear, CleanlyExit, RestartTask, StopTask, StartTask:
		return true
	}
	return false
}

// Op is one control operation, a request to the daemon. (Request is the
// function that sends one and waits for its Reply.)
type Op struct {
	Type OpType `json:"type"`
	// ID comes back in the reply, to match it to the request.
	ID string `json:"id,omitempty"`
	// ReplyTo is the queue the reply goes to; without one there is none.
	ReplyTo string `json:"reply_to,omitempty"`
	// Expires is until when the request stands, in unix seconds: one left
	// in the queue while no daemon ran must never act on a daemon started
	// later. Required.
	Expires       float64 `json:"expires"`
	DryRun        bool    `json:"dry_run,omitempty"`
	Task          string  `json:"task,omitempty"`
	ExitExternals bool    `json:"exit_externals,omitempty"`
}

// Reply answers one Op.
type Reply struct {
	Type    OpType         `json:"type"`
	ID      string         `json:"id,omitempty"`
	OK      bool           `json:"ok"`
	Error   string         `json:"error,omitempty"`
	Status  *StatusReply   `json:"status,omitempty"`
	Results []ActionResult `json:"results,omitempty"`
}

// ActionResult is what reconciling did (or, dry, would do) to one task.
type ActionResult struct {
	Task   string `json:"task"`
	Action string `json:"action"`
	Error  string `json:"error,omitempty"`
}

// StatusReply is what `mmctl status` shows: the daemon, and every task
// that runs or is wanted.
type StatusReply struct {
	Daemon DaemonStatus `json:"daemon"`
	Tasks  []TaskStatus `json:"tasks"`
	// Plan is what the daemon has yet to do, as mmctl diff shows it: held
	// tasks, changes waiting out their backoff, stops under way, removals
	// waiting to be confirmed.
	Plan []ActionResult `json:"plan"`
}

// DaemonStatus describes the daemon itself.
type DaemonStatus struct {
	Pid     int     `json:"pid"`
	Started string  `json:"started"` // RFC 3339, UTC
	UptimeS float64 `json:"uptime_s"`
	// ConfigError is why the config dir does not load now ("" when it
	// does); the tasks run on the last good config meanwhile.
	ConfigDir    string             `json:"config_dir"`
	ConfigHash   string             `json:"config_hash"`
	ConfigError  string             `json:"config_error"`
	StateDir     string             `json:"state_dir"`
	TransitDir   string             `json:"transit_dir"`
	ControlQueue string             `json:"control_queue"`
	DeadLetters  uint64             `json:"dead_letters"`
	Metrics      map[string]float64 `json:"metrics"`
	Levels       map[string]string  `json:"levels"`
}

// Why a task is held, as its held_reason and Stalled condition say.
const (
	HeldFailsafe         = reconcile.HoldFailsafe
	HeldRetriesExhausted = reconcile.HoldRetries
	// HeldStopped: stopped by mmctl stop, until mmctl start.
	HeldStopped = reconcile.HoldStopped
)

// TaskStatus is one task. A field that applies only sometimes is left
// out when it does not apply; those whose zero means something (a false
// external, no failures yet) are pointers so that "not applicable" and
// "zero" stay apart, as they were in the maps of earlier versions.
//
// The fields are grouped by when they apply into embedded structs.
// encoding/json promotes an embedded struct's fields, in place, so the
// JSON is flat and the same as before the grouping (TestTaskStatusJSON
// keeps it so), and t.SpecHash and the like still read as one name.
// Only a composite literal spells the group out.
type TaskStatus struct {
	Name   string `json:"name"`
	Where  string `json:"where"` // internal or external
	Status string `json:"status"`
	// Running says whether something runs under the name now, whatever
	// Status says: a held task may still run its last good spec, and a
	// stopping one drains.
	Running bool `json:"running"`
	// Pid and UptimeS: while it runs (an external's uptime counts from
	// its process's start, so adoption by a new daemon keeps it).
	Pid     int     `json:"pid,omitempty"`
	UptimeS float64 `json:"uptime_s,omitempty"`

	DesiredSpec
	AppliedSpec
	ReconcileState

	Conditions []Condition `json:"conditions"`

	HostReport

	Metrics map[string]float64 `json:"metrics,omitempty"`
	// Levels are the metrics not at ok, by name.
	Levels map[string]string `json:"levels,omitempty"`
	Queue  *QueueStatus      `json:"queue,omitempty"`
}

// DesiredSpec is the task as the config wants it; present when the config
// has the task.
type DesiredSpec struct {
	SpecKind string `json:"spec_kind,omitempty"`
	SpecHash string `json:"spec_hash,omitempty"`
	External *bool  `json:"external,omitempty"`
	Disabled *bool  `json:"disabled,omitempty"`
}

// AppliedSpec is the spec the task last ran with; present when something
// was applied.
type AppliedSpec struct {
	AppliedHash     string `json:"applied_hash,omitempty"`
	AppliedKind     string `json:"applied_kind,omitempty"`
	AppliedExternal *bool  `json:"applied_external,omitempty"`
	// Applied is the whole spec it runs with (kind, external, disabled,
	// config, intervals, limits, restart), when the daemon knows it (not
	// for an external adopted from an earlier daemon): mmctl diff shows
	// which fields a change moves.
	Applied json.RawMessage `json:"applied_spec,omitempty"`
}

// ReconcileState is the controller's bookkeeping; present once the task
// was known, the hold only while it is held.
type ReconcileState struct {
	Generation         *int64 `json:"generation,omitempty"`
	ObservedGeneration *int64 `json:"observed_generation,omitempty"`
	FailuresInARow     *int   `json:"failures_in_a_row,omitempty"`
	// Restarts counts the exits nobody asked for within the restart
	// window (10 minutes).
	Restarts  *int   `json:"restarts,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// HeldReason is HeldFailsafe or HeldRetriesExhausted while held;
	// HoldMessage says what happened.
	HeldReason  string `json:"held_reason,omitempty"`
	HoldMessage string `json:"hold_message,omitempty"`
	// Action is the last one-off action asked of the task (mmctl restart,
	// stop, start), when and whether it is done: "restart at
	// 2026-01-02T15:04:05Z (done)".
	Action string `json:"action,omitempty"`
}

// HostReport is what the host reports; present while the task runs (for
// an external, the counters its process last reported).
type HostReport struct {
	Kind            string   `json:"kind,omitempty"`
	Stateful        *bool    `json:"stateful,omitempty"`
	MessagesIn      *uint64  `json:"messages_in,omitempty"`
	MessagesOut     *uint64  `json:"messages_out,omitempty"`
	Failures        *uint64  `json:"failures,omitempty"`
	SendFailures    *uint64  `json:"send_failures,omitempty"`
	MailboxDepth    *uint64  `json:"mailbox_depth,omitempty"`
	BusyS           *float64 `json:"busy_s,omitempty"`
	StateGeneration *uint64  `json:"state_generation,omitempty"`
}

// Condition is one of a task's conditions, as Kubernetes reports them.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"` // True or False
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// QueueStatus is a task's System V queue.
type QueueStatus struct {
	Messages uint64  `json:"messages"`
	Bytes    uint64  `json:"bytes"`
	Capacity uint64  `json:"capacity"`
	Fill     float64 `json:"fill"`
}

// Condition returns the condition of type typ, if the task has one.
func (t TaskStatus) Condition(typ string) (Condition, bool) {
	for _, c := range t.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return Condition{}, false
}

// HoldLabel is how a plan shows why a task is held (inside
// `! held NAME (...)`), for the daemon and mmctl diff alike: why is
// HeldFailsafe or HeldRetriesExhausted, message what happened.
func HoldLabel(why, message string) string {
	return reconcile.Hold{Why: why, Message: message}.Label()
}

// ErrMalformed is wrapped by every error about a control message that is
// not one: the daemon refuses it and says why.
var ErrMalformed = errors.New("malformed control request")

// Encode is the control message that carries ops.
func Encode(ops ...Op) (map[string]any, error) {
	list := make([]any, len(ops))
	for i, op := range ops {
		m, err := toMap(op)
		if err != nil {
			return nil, err
		}
		list[i] = m
	}
	return map[string]any{EnvelopeKey: map[string]any{"control": list}}, nil
}

// Ops returns the operations of a control message, each to be decoded
// with DecodeOp.
func Ops(msg map[string]any) ([]any, error) {
	env, _ := msg[EnvelopeKey].(map[string]any)
	ops, ok := env["control"].([]any)
	if !ok {
		return nil, fmt.Errorf(`%w: want {%q: {"control": [...]}}`, ErrMalformed, EnvelopeKey)
	}
	return ops, nil
}

// DecodeOp decodes and checks one operation of a control message.
// When it fails, the Op still carries whatever ReplyTo, ID and Type
// could be read, so that the refusal can be answered.
func DecodeOp(op any) (Op, error) {
	m, ok := op.(map[string]any)
	if !ok {
		return Op{}, fmt.Errorf("%w: an operation is a JSON object, not %T", ErrMalformed, op)
	}
	var r Op
	// Lenient first: only what the reply needs.
	r.ReplyTo, _ = m["reply_to"].(string)
	r.ID, _ = m["id"].(string)
	t, _ := m["type"].(string)
	r.Type = OpType(t)

	// Then strict: a misspelled or mistyped field (exit_external: true,
	// dry_run: "yes") must not silently mean its zero.
	var strict struct {
		Op
		Expires *float64 `json:"expires"`
	}
	b, err := json.Marshal(m)
	if err != nil {
		return r, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&strict); err != nil {
		return r, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case strict.Expires == nil:
		return r, fmt.Errorf("%w: a control request needs expires (unix seconds)", ErrMalformed)
	case math.IsNaN(*strict.Expires) || math.IsInf(*strict.Expires, 0):
		return r, fmt.Errorf("%w: expires %v is not a time", ErrMalformed, *strict.Expires)
	case !strict.Type.Valid():
		return r, fmt.Errorf("%w: unknown control type %q (want status, reconcile, clear, cleanly_exit, restart, stop, start)", ErrMalformed, transit.Excerpt(string(strict.Type)))
	case strict.Task == "" && (strict.Type == Clear || strict.Type == RestartTask || strict.Type == StopTask || strict.Type == StartTask):
		return r, fmt.Errorf("%w: %s needs a task", ErrMalformed, strict.Type)
	}
	r = strict.Op
	r.Expires = *strict.Expires
	return r, nil
}

// Message is the reply as a message.
func (r Reply) Message() (map[string]any, error) { return toMap(r) }

// DecodeReply reads a reply message.
func DecodeReply(msg map[string]any) (Reply, error) {
	var r Reply
	b, err := json.Marshal(msg)
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		return Reply{}, fmt.Errorf("control reply: %w", err)
	}
	return r, nil
}

// toMap turns a typed value into a message, as transit carries them.
func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}
