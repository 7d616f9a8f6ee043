package daemon

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"
)

// A held task is not started until `mmctl clear` or a change of its
// config. Holds are kept in STATE/held.json, so that a task a failsafe
// stopped stays down across a restart of the daemon.

// Why a task is held, as its Stalled condition says.
const (
	holdRetries  = "RetriesExhausted"
	holdFailsafe = "Failsafe"
)

// heldEntry is one hold on disk. A hold applies only to the spec it was
// taken under: a task whose config changed while the daemon was down is
// released.
type heldEntry struct {
	Why      string    `json:"why"`
	Reason   string    `json:"reason"`
	SpecHash string    `json:"spec_hash"`
	Since    time.Time `json:"since"`
}

func (d *daemon) heldPath() string { return filepath.Join(d.o.stateDir, "held.json") }

// hold holds a task and records why.
func (d *daemon) hold(name string, st *taskState, why, reason string) {
	st.held, st.holdWhy, st.lastErr, st.heldSince = true, why, reason, time.Now()
	msg := "task held: it failed too often; fix the config or mmctl clear it"
	if why == holdFailsafe {
		msg = "task failsafed and held until mmctl clear or a change of its config"
	}
	d.ch.Alert.Error(msg, "task", name, "reason", reason, "held", why)
	d.saveHeld()
}

// saveHeld writes every hold to disk.
func (d *daemon) saveHeld() {
	held := map[string]heldEntry{}
	for name, st := range d.tasks {
		if st.held {
			held[name] = heldEntry{Why: st.holdWhy, Reason: st.lastErr, SpecHash: st.specHash, Since: st.heldSince}
		}
	}
	if err := writeJSONFile(d.heldPath(), held); err != nil {
		d.ch.Error.Error("recording the held tasks: a restart of the daemon would release them", "error", err)
	}
}

// loadHeld holds again what was held when the daemon last ran, unless
// the task's config changed since.
func (d *daemon) loadHeld() {
	b, err := os.ReadFile(d.heldPath())
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var held map[string]heldEntry
	if err == nil {
		err = json.Unmarshal(b, &held)
	}
	if err != nil {
		d.ch.Error.Error("held tasks unreadable: none held", "file", d.heldPath(), "error", err)
		return
	}
	for name, h := range held {
		st := d.tasks[name]
		if st == nil || st.specHash != h.SpecHash {
			d.ch.Log.Info("a held task's config changed while the daemon was down: released", "task", name)
			continue
		}
		st.held, st.holdWhy, st.lastErr, st.heldSince = true, h.Why, h.Reason, h.Since
		d.ch.Log.Info("task still held", "task", name, "reason", h.Reason, "since", h.Since)
		// The last daemon stopped before the failsafe had ended it.
		if p := d.externals[name]; p != nil && h.Why == holdFailsafe && !p.failsafed {
			p.failsafed = true
			go terminate(p, d.failsafeGrace())
		}
	}
	d.saveHeld()
}
