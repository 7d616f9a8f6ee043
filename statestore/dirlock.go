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
	l, err := Hold(dir, path, []byte(strconv.Itoa(os.Getpid())+"\n"))
	if errors.Is(err, ErrHeld) {
		b, _ := os.ReadFile(path)
		holder := strings.TrimSpace(string(b))
		if _, perr := strconv.Atoi(holder); perr != nil {
			holder = "unknown"
		}
		return nil, fmt.Errorf("%w: %s (held by pid %s)", ErrDirLocked, dir, holder)
	}
	if err != nil {
		return nil, fmt.Errorf("statestore: %w", err)
	}
	return l, nil
}

// ErrHeld means another process holds the lock Hold asked for.
var ErrHeld = errors.New("held by another process")

// Hold takes, without waiting, the locks of the directory dir and of the
// file path (created 0600; a link there is refused), and writes note into
// the file for whoever finds them held. It fails with ErrHeld when
// another process holds either. The directory's lock is the one that
// counts (see DirLock); the file's keeps out older versions.
func Hold(dir, path string, note []byte) (*DirLock, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	d := os.NewFile(uintptr(fd), dir)
	if err := flock(d); err != nil {
		d.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrHeld)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := flock(f); err != nil {
		f.Close()
		d.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrHeld)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Only for the message: a lock without it still locks.
	if err := f.Truncate(0); err == nil {
		f.WriteAt(note, 0)
	}
	return &DirLock{dir: d, f: f}, nil
}

// flock takes f's exclusive lock without waiting.
func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// Unlock releases the directory. A nil lock is released already.
func (l *DirLock) Unlock() error {
	if l == nil {
		return nil
	}
	return errors.Join(l.f.Close(), l.dir.Close())
}
