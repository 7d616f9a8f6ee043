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
//
// The lock is on the directory itself, not on a file in it: a lock on a
// file that someone deletes guards nothing, since the next daemon creates
// a new file and locks that. The directory cannot go while it holds the
// state. The lock file is still written (the holder's pid, for a second
// daemon's message) and locked too, so that a daemon of an older version,
// which locks only the file, is kept out as well.
type DirLock struct {
	dir, f *os.File
}

// LockDir creates dir (0700) if needed and takes its lock without waiting.
// The holder's pid is written into the lock file for the error message a
// second daemon prints.
func LockDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("statestore: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	locked := func() error {
		b, _ := os.ReadFile(path)
		holder := strings.TrimSpace(string(b))
		if _, perr := strconv.Atoi(holder); perr != nil {
			holder = "unknown"
		}
		return fmt.Errorf("%w: %s (held by pid %s)", ErrDirLocked, dir, holder)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("statestore: %s: %w", dir, err)
	}
	d := os.NewFile(uintptr(fd), dir)
	if err := flock(d); err != nil {
		d.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, locked()
		}
		return nil, fmt.Errorf("statestore: lock %s: %w", dir, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("statestore: %w", err)
	}
	if err := flock(f); err != nil {
		f.Close()
		d.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, locked()
		}
		return nil, fmt.Errorf("statestore: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DirLock{dir: d, f: f}, nil
}

// flock takes f's exclusive lock without waiting.
func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

// Unlock releases the directory.
func (l *DirLock) Unlock() error { return errors.Join(l.f.Close(), l.dir.Close()) }
