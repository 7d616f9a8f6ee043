package statestore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Deleting the lock file (a careless rm, a cleaner) must not let a second
// daemon in: the directory itself is locked.
func TestLockDirSurvivesDeletingTheLockFile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	l, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, LockFile)); err != nil {
		t.Fatal(err)
	}
	_, err = LockDir(dir)
	if !errors.Is(err, ErrDirLocked) || !strings.Contains(err.Error(), "in use by another daemon: "+dir+" (held by pid") {
		t.Fatalf("second lock after the file was deleted: %v, want ErrDirLocked", err)
	}
	// The file the refused attempt may have left does not stand in the
	// way once the holder is gone.
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := LockDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, LockFile))
	if strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Fatalf("lock file holds %q, want our pid", b)
	}
	l2.Unlock()
}
