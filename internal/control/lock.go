package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrQueueServed says that another daemon serves the control queue.
var ErrQueueServed = errors.New("is served by another daemon")

// QueueLock is a daemon's claim on its control queue. Two daemons with
// different state dirs but one transit dir would otherwise both read the
// same control queue, each taking the other's requests.
type QueueLock struct{ f *os.File }

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
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("control queue lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			where := transitDir
			if abs, err := filepath.Abs(transitDir); err == nil {
				where = abs
			}
			return nil, fmt.Errorf("control queue %s in %s %w: %s", queue, where, ErrQueueServed, holder(path))
		}
		return nil, fmt.Errorf("control queue lock %s: %w", path, err)
	}
	if abs, err := filepath.Abs(stateDir); err == nil {
		stateDir = abs
	}
	// Only for the message: a lock without it still locks.
	if err := f.Truncate(0); err == nil {
		f.WriteAt(fmt.Appendf(nil, "%d\n%s\n", os.Getpid(), stateDir), 0)
	}
	return &QueueLock{f: f}, nil
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
	return l.f.Close()
}
