// Package testenv holds what the project's tests share: polling for a
// condition under a deadline (never sleep and hope), a concurrency-safe
// output buffer, and per-test config directories.
package testenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/transit"
)

// WaitFor polls cond every few milliseconds until it holds, and fails the
// test naming what it waited for if total passes first.
func WaitFor(t testing.TB, total time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(total)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", total, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Buffer is a bytes.Buffer that a daemon's loggers and a test may use at
// the same time.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WriteFiles writes name -> content into a new directory under the test's
// TempDir and returns it.
func WriteFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Object parses a JSON object, so that test tables can write messages
// as users send them.
func Object(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad test JSON %s: %v", s, err)
	}
	return m
}

// TransitDir is a private transit dir for one test; every System V queue
// created in it is removed when the test ends.
func TransitDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "transit")
	t.Cleanup(func() {
		tr, err := transit.Open(transit.Options{Dir: dir})
		if err == nil {
			err = tr.RemoveAll()
		}
		if err != nil {
			t.Errorf("removing the test's queues: %v", err)
		}
	})
	return dir
}

// FillQueue fills tr's queue name to the brim, as an outside sender
// would: large messages first, then small ones, so that no message of a
// few hundred bytes fits.
func FillQueue(t testing.TB, tr *transit.Transit, name string) *transit.Queue {
	t.Helper()
	q, err := tr.Queue(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, pad := range []string{strings.Repeat("x", 200), ""} {
		for i := 0; ; i++ {
			err := q.SendWithin(map[string]any{"f": float64(i), "p": pad}, 0)
			if errors.Is(err, transit.ErrQueueFull) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return q
}

// SpillFiles lists the spill files left in a transit dir.
func SpillFiles(t testing.TB, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, ".spill", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}
