package statestore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrDirLocked means another daemon holds the state directory.
var ErrDirLocked = errors.New("state directory is in use by another daemon")

// LockFile is the lock's name inside a state directory.
const LockFile = "multimodule.lock"

// DirLock is an exclusive hold on a state directory: one daemon per
// directory. The kernel drops it when the process dies, so a crash never
// leaves a stale lock behind.
type DirLock struct {
	f *os.File
}

// LockDir creates dir (0700) if needed and takes its lock without waiting.
// The holder's pid is written into the lock file for the error message a
// second daemon prints.
func LockDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("statestore: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("statestore: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			b, _ := os.ReadFile(path)
			holder := strings.TrimSpace(string(b))
			if _, perr := strconv.Atoi(holder); perr != nil {
				holder = "unknown"
			}
			return nil, fmt.Errorf("%w: %s (held by pid %s)", ErrDirLocked, dir, holder)
		}
		return nil, fmt.Errorf("statestore: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DirLock{f: f}, nil
}

// Unlock releases the directory.
func (l *DirLock) Unlock() error { return l.f.Close() }
