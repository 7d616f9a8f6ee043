package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/multimodule/multimodule/statestore"
	"golang.org/x/sys/unix"
)

// ErrQueueServed says that another daemon serves the control queue.
var ErrQueueServed = errors.New("is served by another daemon")

// QueueLock is a daemon's claim on its control queue. Two daemons with
// different state dirs but one transit dir would otherwise both read the
// same control queue, each taking the other's requests.
//
// The claim is a lock on a directory of its own (HoldDir), besides the
// lock file: a lock on a file guards nothing once the file is deleted (a
// /tmp cleaner, a careless rm), since the next daemon creates a new file
// and locks that. The lock file stays, locked too, for the holder's pid
// in a second daemon's message and to keep out daemons of older versions,
// which lock only the file.
type QueueLock struct{ l *statestore.DirLock }

// HoldDir is the directory whose lock is the claim on the control queue.
func HoldDir(transitDir, queue string) string {
	return filepath.Join(transitDir, ".control", queue+".d")
}

// LockPath is the lock file of the control queue in transitDir.
func LockPath(transitDir, queue string) string {
	return filepath.Join(transitDir, ".control", queue+".lock")
}

// LockQueue takes the control queue's lock without waiting, and writes
// this process's pid and stateDir into it for the message a second
// daemon prints. The kernel drops the lock with the process, so a daemon
// killed with SIGKILL leaves nothing to clean up.
func LockQueue(transitDir, queue, stateDir string) (*QueueLock, error) {
	if strings.ContainsAny(queue, "/\x00") || queue == "" || queue[0] == '.' {
		return nil, fmt.Errorf("control queue %q: not a queue name", queue)
	}
	dir := filepath.Dir(LockPath(transitDir, queue))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control queue lock: %w", err)
	}
	// The lock dir must be ours alone: whoever can write to it can hold
	// our control queue hostage.
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return nil, fmt.Errorf("control queue lock: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		return nil, fmt.Errorf("control queue lock: %s is not a 0700 directory owned by uid %d (mode %o, owner %d)",
			dir, os.Geteuid(), st.Mode&0o7777, st.Uid)
	}
	path := LockPath(transitDir, queue)
	hold := HoldDir(transitDir, queue)
	if err := os.Mkdir(hold, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("control queue lock: %w", err)
	}
	if abs, err := filepath.Abs(stateDir); err == nil {
		stateDir = abs
	}
	l, err := statestore.Hold(hold, path, fmt.Appendf(nil, "%d\n%s\n", os.Getpid(), stateDir))
	if errors.Is(err, statestore.ErrHeld) {
		where := transitDir
		if abs, err := filepath.Abs(transitDir); err == nil {
			where = abs
		}
		return nil, fmt.Errorf("control queue %s in %s %w: %s", queue, where, ErrQueueServed, holder(path))
	}
	if err != nil {
		return nil, fmt.Errorf("control queue lock: %w", err)
	}
	return &QueueLock{l}, nil
}

// holder describes the daemon holding the lock at path, as its file says.
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "pid unknown"
	}
	pid, stateDir, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if _, err := strconv.Atoi(pid); err != nil {
		return "pid unknown" // it is writing the file this very moment
	}
	if stateDir == "" {
		return "pid " + pid
	}
	return fmt.Sprintf("pid %s, state dir %s", pid, stateDir)
}

// Unlock releases the control queue. A nil lock is released already.
func (l *QueueLock) Unlock() error {
	if l == nil {
		return nil
	}
	return l.l.Unlock()
}
