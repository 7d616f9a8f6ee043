package external

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/transit"
)

// PidPath is the file that records task's running process (a Process as
// JSON: pid, start, hash, kind). Both the daemon and the process itself
// write it: a daemon that died between starting a process and recording
// it must still find and adopt it.
func PidPath(stateDir, task string) string {
	return filepath.Join(Dir(stateDir), task+".pid")
}

// LogPath is where the output of task's process is appended.
func LogPath(stateDir, task string) string {
	return filepath.Join(Dir(stateDir), task+".log")
}

// Hash identifies a bundle: the task, every stateless task and the report
// interval, so that a change to any of them reaches the process.
func (s Spec) Hash() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%g\x00", s.Task.Hash, s.ReportEvery)
	if s.MaxQueues != 0 && s.MaxQueues != transit.DefaultMaxQueues {
		// Only when set otherwise, so that the hashes of bundles from
		// before the setting existed (adopted processes) stay the same.
		fmt.Fprintf(h, "q%d\x00", s.MaxQueues)
	}
	for _, t := range s.Stateless {
		h.Write([]byte(t.Name + "\x00" + t.Hash))
	}
	return "x" + hex.EncodeToString(h.Sum(nil)[:8])
}

// WriteSpec hands task spec.Task.Name's process its spec, atomically,
// keeping the token of the spec it already has (a running process checks
// config messages against it), else with a new random one. It returns
// the spec as written.
func WriteSpec(stateDir string, spec Spec) (Spec, error) {
	name := spec.Task.Name
	if old, err := ReadSpec(stateDir, name); err == nil && old.Token != "" {
		spec.Token = old.Token
	} else {
		var r [16]byte
		if _, err := rand.Read(r[:]); err != nil {
			return spec, fmt.Errorf("a token for %s: %w", name, err)
		}
		spec.Token = hex.EncodeToString(r[:])
	}
	if err := os.MkdirAll(Dir(stateDir), 0o700); err != nil {
		return spec, fmt.Errorf("handing %s its spec: %w", name, err)
	}
	if err := writeJSONFile(SpecPath(stateDir, name), spec); err != nil {
		return spec, fmt.Errorf("handing %s its spec: %w", name, err)
	}
	return spec, nil
}

// writeJSONFile writes v to path atomically, private. Each write has a
// temporary file of its own: the daemon and a process it starts both
// write the process's pid file (PidPath), at the same moment when the
// process starts fast. Under one shared temporary name the later rename
// failed ("recording an external process": no such file or directory),
// and one writer's truncation of the file the other had just renamed
// into place left it empty or torn until its write ended.
func writeJSONFile(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp") // 0600
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// readProcess reads a pid file.
func readProcess(path string) (Process, error) {
	var p Process
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &p)
	}
	return p, err
}

// configKey marks a control message carrying a new Spec.
const configKey = "config"

// ConfigMessage is the message that hands a running process a new spec on
// its task's queue, in order with the task's messages. The process
// applies it only if it carries the process's token.
func ConfigMessage(spec Spec) (runtime.Message, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	m, err := transit.DecodeJSON(b)
	if err != nil {
		return nil, err
	}
	return runtime.Message{runtime.ControlKey: map[string]any{configKey: m}}, nil
}

// configOf is the spec a config message (isConfig) carries.
func configOf(m runtime.Message) (spec Spec, err error) {
	b, err := json.Marshal(m[runtime.ControlKey].(map[string]any)[configKey])
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	return spec, err
}

// isConfig reports whether m is a config message from the daemon.
func isConfig(m runtime.Message) bool {
	ctl, ok := m[runtime.ControlKey].(map[string]any)
	if !ok {
		return false
	}
	_, ok = ctl[configKey]
	return ok
}
