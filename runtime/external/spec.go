// Package external runs stateful tasks in processes of their own: the
// daemon's side (spawn, adopt, stop, reconfigure, exits reported as
// events) and the process's side (-m TASK).
package external

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/multimodule/multimodule/schema"
)

// Spec is what the daemon hands an external process: its stateful task
// and every stateless task it may run locally, as the daemon applied
// them. It is written to STATE/external/TASK.json before the process
// starts, and sent on the task's queue on every change, in order with
// the task's messages.
type Spec struct {
	Task      NamedSpec   `json:"task"`
	Stateless []NamedSpec `json:"stateless"`
	// Token is a secret shared through the (private) spec file: a config
	// message on the task's queue must carry it, so that whoever can write
	// to the queue cannot reconfigure the process. It also signs what the
	// process sends the daemon (reports and out-of-band records).
	Token string `json:"token"`
	// ReportEvery is the seconds between two reports of the task's
	// counters to the daemon.
	ReportEvery float64 `json:"report_every"`
	// MaxQueues bounds the queues the process creates on demand by
	// sending (daemon: max_queues; 0: transit's default).
	MaxQueues int `json:"max_queues,omitempty"`
}

// NamedSpec is one task's spec with the name and hash JSON leaves out.
type NamedSpec struct {
	Name string          `json:"name"`
	Hash string          `json:"hash"`
	Spec schema.TaskSpec `json:"spec"`
}

// Named pairs a spec with its name and hash.
func Named(name string, t schema.TaskSpec) NamedSpec { return NamedSpec{name, t.Hash, t} }

// Dir is where the daemon keeps what it knows of external processes.
func Dir(stateDir string) string { return filepath.Join(stateDir, "external") }

// SpecPath is the file that hands task's process its Spec.
func SpecPath(stateDir, task string) string {
	return filepath.Join(Dir(stateDir), task+".json")
}

// ReadSpec reads the spec last handed to task's process.
func ReadSpec(stateDir, task string) (Spec, error) {
	var spec Spec
	b, err := os.ReadFile(SpecPath(stateDir, task))
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	return spec, err
}
