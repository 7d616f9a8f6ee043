package reconcile

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Why a task is held, as its Stalled condition says.
const (
	// HoldRetries: its changes failed restart.hold_after times in a row
	// (a crash loop included).
	HoldRetries = "RetriesExhausted"
	// HoldFailsafe: it went past a failsafe limit and was stopped.
	HoldFailsafe = "Failsafe"
)

// Hold keeps a task from being started until `mmctl clear` or a change of
// its config. A hold applies only to the spec it was taken under: a task
// whose config changed while the daemon was down is released.
type Hold struct {
	Why      string    `json:"why"`
	Message  string    `json:"reason"`
	SpecHash string    `json:"spec_hash"`
	Since    time.Time `json:"since"`
}

// Label is how a plan shows the hold: `! held NAME (LABEL)`.
func (h Hold) Label() string {
	prefix := "retries exhausted"
	switch h.Why {
	case HoldFailsafe:
		prefix = "failsafe"
	case HoldStopped:
		return "stopped by mmctl stop"
	}
	// A failsafe's message says so itself.
	message := strings.TrimPrefix(h.Message, prefix+": ")
	if message == "" {
		return prefix
	}
	return prefix + ": " + message
}

// HoldStore keeps the holds across restarts of the daemon, so that a task
// a failsafe stopped stays down.
type HoldStore interface {
	Load() (map[string]Hold, error)
	Save(map[string]Hold) error
}

// HoldFile keeps the holds in one JSON file (STATE/held.json), replaced
// atomically on every change.
type HoldFile string

// Load reads the file; a missing file holds nothing.
func (f HoldFile) Load() (map[string]Hold, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var held map[string]Hold
	if err == nil {
		err = json.Unmarshal(b, &held)
	}
	if err != nil {
		return nil, fmt.Errorf("held tasks %s: %w", string(f), err)
	}
	return held, nil
}

// Save replaces the file, private to the daemon's user.
func (f HoldFile) Save(held map[string]Hold) error {
	b, err := json.Marshal(held)
	if err != nil {
		return err
	}
	tmp := string(f) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, string(f))
}

// holdTask holds a task and records why.
func (c *Controller) holdTask(name string, st *taskState, why, message string) {
	st.hold = &Hold{Why: why, Message: message, SpecHash: st.specHash, Since: c.clock.Now()}
	msg := "task held: it failed too often; fix the config or mmctl clear it"
	switch why {
	case HoldFailsafe:
		msg = "task failsafed and held until mmctl clear or a change of its config"
	case HoldStopped: // an operator's own doing: no alert
		c.logs.Log.Info("task stopped until mmctl start, mmctl clear or a change of its config", "task", name)
		c.saveHolds()
		return
	}
	c.logs.Alert.Error(msg, "task", name, "reason", message, "held", why)
	c.saveHolds()
}

func (c *Controller) saveHolds() {
	held := map[string]Hold{}
	for name, st := range c.tasks {
		if st.hold != nil {
			held[name] = *st.hold
		}
	}
	if err := c.holds.Save(held); err != nil {
		c.logs.Error.Error("recording the held tasks: a restart of the daemon would release them", "error", err)
	}
}

// restoreHolds holds again what was held when the daemon last ran, unless
// the task's config changed since.
func (c *Controller) restoreHolds() {
	held, err := c.holds.Load()
	if err != nil {
		c.logs.Error.Error("held tasks unreadable: none held", "error", err)
		return
	}
	for name, h := range held {
		st := c.tasks[name]
		if st == nil || st.specHash != h.SpecHash {
			c.logs.Log.Info("a held task's config changed while the daemon was down: released", "task", name)
			continue
		}
		hc := h
		st.hold = &hc
		c.logs.Log.Info("task still held", "task", name, "reason", h.Message, "since", h.Since)
	}
	c.saveHolds()
}
