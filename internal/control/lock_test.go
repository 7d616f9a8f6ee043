package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLockQueue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "transit")
	first, err := LockQueue(dir, "Q", "/var/lib/mm")
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockQueue(dir, "Q", "/elsewhere")
	want := fmt.Sprintf("control queue Q in %s is served by another daemon: pid %d, state dir /var/lib/mm", dir, os.Getpid())
	if !errors.Is(err, ErrQueueServed) || err.Error() != want {
		t.Fatalf("second lock: %v, want %q", err, want)
	}
	other, err := LockQueue(dir, "Other", "/elsewhere") // another queue is another daemon's
	if err != nil {
		t.Fatal(err)
	}
	other.Unlock()
	fi, err := os.Stat(LockPath(dir, "Q"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file %v, %v: want mode 0600", fi, err)
	}
	first.Unlock()
	again, err := LockQueue(dir, "Q", "/elsewhere")
	if err != nil {
		t.Fatalf("after Unlock: %v", err)
	}
	again.Unlock()
	for _, q := range []string{"", "../x", ".hidden", "a/b"} {
		if _, err := LockQueue(dir, q, "s"); err == nil || !strings.Contains(err.Error(), "not a queue name") {
			t.Errorf("queue %q: %v", q, err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, ".control"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := LockQueue(dir, "Q", "s"); err == nil || !strings.Contains(err.Error(), "0700") {
		t.Errorf("a lock dir others can write to: %v", err)
	}
}

// Deleting the lock file does not let a second daemon serve the queue.
func TestLockQueueSurvivesDeletingTheLockFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "transit")
	first, err := LockQueue(dir, "Q", "/var/lib/mm")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(LockPath(dir, "Q")); err != nil {
		t.Fatal(err)
	}
	if _, err := LockQueue(dir, "Q", "/elsewhere"); !errors.Is(err, ErrQueueServed) {
		t.Fatalf("second lock after the file was deleted: %v, want ErrQueueServed", err)
	}
	first.Unlock()
	again, err := LockQueue(dir, "Q", "/elsewhere")
	if err != nil {
		t.Fatalf("after Unlock: %v", err)
	}
	again.Unlock()
}
